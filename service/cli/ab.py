"""`ladder ab ...`: the admin API's experiment operations from the command line.

The commands talk to a running service (`--url`, LADDER_ADMIN_TOKEN), so a change is validated
against the configurations it serves, audited, and live on every replica like any other.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(help="A/B experiments on a running service.", no_args_is_help=True)
UrlOption = Annotated[
    str | None, typer.Option("--url", help="The service; default http://LADDER_HOST:LADDER_PORT.")
]
ActorOption = Annotated[str | None, typer.Option("--actor", help="Who makes the change.")]


def _call(method: str, path: str, url: str | None, actor: str | None, body: Any = None) -> Any:
    """One admin request; prints the error body and exits 1 when it is refused."""
    import httpx

    from service.cli.common import fail, settings

    config = settings()
    if not config.admin_token:
        raise fail("LADDER_ADMIN_TOKEN is not set")
    base = url or f"http://{config.host}:{config.port}"
    headers = {
        "authorization": f"Bearer {config.admin_token}",
        "x-ladder-actor": actor or f"cli:{os.environ.get('USER', 'unknown')}",
    }
    try:
        response = httpx.request(method, base + path, json=body, headers=headers, timeout=30)
    except httpx.HTTPError as error:
        raise fail(f"cannot reach {base}: {error}", code=1) from None
    if response.status_code >= 400:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text
        raise fail(f"{response.status_code}: {message}", code=1)
    return response.json()


def _show(found: Any) -> None:
    typer.echo(json.dumps(found, indent=2))


@app.command("list")
def list_experiments(url: UrlOption = None) -> None:
    """Lists every experiment."""
    _show(_call("GET", "/admin/experiments", url, None))


@app.command()
def show(name: str, url: UrlOption = None) -> None:
    """Shows one experiment."""
    _show(_call("GET", f"/admin/experiments/{name}", url, None))


@app.command()
def create(
    spec: Annotated[Path, typer.Argument(help="A JSON or YAML file with the experiment.")],
    url: UrlOption = None,
    actor: ActorOption = None,
) -> None:
    """Creates an experiment from a file (name, model, arms, control, stickiness, status)."""
    import yaml

    from service.cli.common import fail

    try:
        body = yaml.safe_load(spec.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise fail(f"cannot read {spec}: {error}") from None
    _show(_call("POST", "/admin/experiments", url, actor, body))


@app.command()
def weights(
    name: str,
    assignments: Annotated[list[str], typer.Argument(help="ARM=WEIGHT, one or more.")],
    url: UrlOption = None,
    actor: ActorOption = None,
) -> None:
    """Changes weights; users already assigned keep their arm."""
    from service.cli.common import fail

    parsed: dict[str, float] = {}
    for item in assignments:
        arm, _, value = item.partition("=")
        try:
            parsed[arm] = float(value)
        except ValueError:
            raise fail(f"expected ARM=WEIGHT, got {item!r}") from None
    _show(_call("POST", f"/admin/experiments/{name}/weights", url, actor, {"weights": parsed}))


@app.command()
def start(name: str, url: UrlOption = None, actor: ActorOption = None) -> None:
    """Starts or resumes an experiment."""
    _show(_call("POST", f"/admin/experiments/{name}/start", url, actor))


@app.command()
def pause(name: str, url: UrlOption = None, actor: ActorOption = None) -> None:
    """Pauses an experiment: everyone gets the control arm."""
    _show(_call("POST", f"/admin/experiments/{name}/pause", url, actor))


@app.command()
def promote(name: str, arm: str, url: UrlOption = None, actor: ActorOption = None) -> None:
    """Gives one arm 100 % of the traffic and concludes the experiment."""
    _show(_call("POST", f"/admin/experiments/{name}/promote", url, actor, {"arm": arm}))


@app.command()
def rollback(
    name: str,
    version: Annotated[
        int | None, typer.Option(help="Version to restore; default previous.")
    ] = None,
    url: UrlOption = None,
    actor: ActorOption = None,
) -> None:
    """Restores an earlier version of an experiment."""
    body = {"version": version}
    _show(_call("POST", f"/admin/experiments/{name}/rollback", url, actor, body))


@app.command()
def results(name: str, url: UrlOption = None) -> None:
    """Per-arm measurements and the comparison against the control."""
    _show(_call("GET", f"/admin/experiments/{name}/results", url, None))


@app.command()
def audit(
    experiment: Annotated[str | None, typer.Option(help="Only this experiment.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    url: UrlOption = None,
) -> None:
    """The change log, newest first."""
    query = f"?limit={limit}" + (f"&experiment={experiment}" if experiment else "")
    _show(_call("GET", f"/admin/audit{query}", url, None))


@app.command()
def reload(url: UrlOption = None, actor: ActorOption = None) -> None:
    """Reloads the configurations file on the service (refused, with its reason, if invalid)."""
    _show(_call("POST", "/admin/configurations/reload", url, actor))
