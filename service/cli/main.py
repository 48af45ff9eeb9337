"""The `ladder` command line."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from service.cli import ab as ab_commands
from service.cli import adapters as adapters_commands
from service.cli import evaluate as evaluate_command
from service.cli import models as models_commands
from service.cli import train as train_command
from service.cli import vllm as vllm_commands
from service.cli.common import fail as _fail
from service.cli.common import settings as _settings
from service.settings import Settings

app = typer.Typer(help="ladder: a chat service built as a ladder of layers.", no_args_is_help=True)


def _quiet_environment() -> None:
    """Offline and polite defaults, set before torch or a tokenizer is imported."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")


@app.command()
def ingest(
    path: Annotated[Path, typer.Argument(help="Folder of .md, .txt, .html and .pdf documents.")],
    collection: Annotated[str, typer.Option(help="Chroma collection to write.")] = "docs",
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Ingests a folder into a collection: only new and changed documents are embedded."""
    from ingest.index import IndexUnavailable, InvalidCollectionName, validate_collection_name
    from service.cli.ingest import run_ingest

    try:
        validate_collection_name(collection)
    except InvalidCollectionName as error:
        raise _fail(str(error)) from None
    if not path.is_dir():
        raise _fail(f"no such folder: {path}")
    settings = _settings()
    try:
        summary = run_ingest(settings, path, collection, show_progress=not as_json)
    except IndexUnavailable as error:
        raise _fail(str(error), code=1) from None
    if as_json:
        typer.echo(json.dumps(summary.as_dict(), indent=2))
    if summary.failed:
        raise typer.Exit(1)


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="The question to search for.")],
    collection: Annotated[str, typer.Option(help="Chroma collection to search.")] = "docs",
    k: Annotated[int, typer.Option(min=1, max=100, help="How many passages.")] = 5,
    mode: Annotated[str, typer.Option(help="vector or hybrid.")] = "vector",
    source: Annotated[str | None, typer.Option(help="Only passages of this source.")] = None,
) -> None:
    """Prints the passages closest to a question, with their scores."""
    from ingest.index import CollectionNotFound, IndexUnavailable, InvalidCollectionName
    from service.cli.ingest import print_passages
    from service.knowledge import open_index

    if mode not in ("vector", "hybrid"):
        raise _fail("--mode must be vector or hybrid")
    settings = _settings()
    filters = {"source": source} if source else None
    try:
        passages = open_index(settings).search(query, collection, k, filters, mode)  # type: ignore[arg-type]
    except (CollectionNotFound, InvalidCollectionName) as error:
        raise _fail(str(error)) from None
    except IndexUnavailable as error:
        raise _fail(str(error), code=1) from None
    print_passages(passages)


app.add_typer(models_commands.app, name="models")
app.add_typer(adapters_commands.app, name="adapters")
app.add_typer(vllm_commands.app, name="vllm")
app.add_typer(ab_commands.app, name="ab")
app.command("train")(train_command.train)
app.command("eval")(evaluate_command.eval_command)
app.command("eval-report")(evaluate_command.eval_report_command)


def _ready_banner(host: str, port: int) -> str:
    base = f"http://{host}:{port}"
    body = '{"model": "rag", "messages": [{"role": "user", "content": "What does the K3 cost?"}]}'
    return "\n".join(
        [
            f"ladder is starting on {base}; once it logs 'Application startup complete', try:",
            f"  curl -s {base}/v1/chat/completions -H 'content-type: application/json' \\",
            f"    -d '{body}'",
            "  .venv/bin/python - <<'PY'",
            "from openai import OpenAI",
            f"client = OpenAI(base_url='{base}/v1', api_key='unused')",
            "question = [{'role': 'user', 'content': 'What does the K3 cost?'}]",
            "answer = client.chat.completions.create(model='rag', messages=question)",
            "print(answer.choices[0].message.content)",
            "PY",
        ]
    )


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (LADDER_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (LADDER_PORT).")] = None,
) -> None:
    """Serves the OpenAI-compatible API."""
    import logging

    import uvicorn

    settings = _settings()
    if host is not None:
        os.environ["LADDER_HOST"] = settings.host = host
    if port is not None:
        settings.port = port
        os.environ["LADDER_PORT"] = str(port)
    if settings.engine == "local" and settings.workers > 1:
        raise _fail("the local engine runs in one process: LADDER_WORKERS must be 1")
    _check_base_model(settings)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    typer.echo(_ready_banner(settings.host, settings.port))
    uvicorn.run(
        "service.api.app:app_from_environment",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level="info",
        access_log=settings.access_log,
        timeout_graceful_shutdown=10,
    )


def _check_base_model(settings: Settings) -> None:
    """Prepares the base model before the server starts (a GGUF converts here, with progress),
    so a bad LADDER_BASE_MODEL or LADDER_CONTEXT_WINDOW is a one-line error, not a traceback."""
    from service.engines.factory import load_base_model, model_window
    from service.errors import ConfigurationError

    try:
        base = load_base_model(settings, progress=typer.echo)
        model_window(settings, base)
    except ConfigurationError as error:
        raise _fail(str(error)) from None
    typer.echo(f"base model: {base.describe()}")


def main() -> None:
    """The console script."""
    _quiet_environment()
    app(prog_name="ladder")


if __name__ == "__main__":
    main()
