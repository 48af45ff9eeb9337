"""`ladder vllm up|down|status`: a local vLLM server (CPU build) with the registry's adapters."""

from __future__ import annotations

import typer

from service.cli.common import fail
from service.cli.common import settings as _settings

app = typer.Typer(help="A local vLLM server with the registry's adapters.", no_args_is_help=True)


@app.command()
def up() -> None:
    """Serves LADDER_BASE_MODEL (its window as --max-model-len) with the adapters trained on it,
    installing vLLM into its own venv first if needed; waits until it is healthy. A bad model,
    window or adapter is a one-line error before anything is installed or started."""
    from adapters.base_model import BaseModelUnavailable
    from adapters.registry import RegistryError
    from service.engines.vllm_server import VllmRuntimeError, start

    try:
        server = start(_settings(), typer.echo)
    except (VllmRuntimeError, BaseModelUnavailable, RegistryError) as error:
        raise fail(str(error), code=1) from None
    typer.echo(f"vLLM running: PID {server.pid}, {server.url}")


@app.command()
def down() -> None:
    """Stops the vLLM server by its PID (SIGTERM, then SIGKILL after a bound)."""
    from service.engines.vllm_server import stop

    if not stop(_settings(), typer.echo):
        typer.echo("vLLM was not running")


@app.command()
def status() -> None:
    """Tells whether the vLLM server runs and answers /health (exit 1 when not healthy)."""
    from service.engines.vllm_server import status as server_status

    server = server_status(_settings())
    if not server.running:
        typer.echo("vLLM: not running")
        raise typer.Exit(1)
    state = "healthy" if server.healthy else "not healthy"
    typer.echo(f"vLLM: running (PID {server.pid}), {state}, {server.url}")
    if not server.healthy:
        raise typer.Exit(1)
