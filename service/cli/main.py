"""The `ladder` command line."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from service.cli import ab as ab_commands
from service.cli import adapters as adapters_commands
from service.cli import climb as climb_command
from service.cli import evaluate as evaluate_command
from service.cli import models as models_commands
from service.cli import serve as serve_command
from service.cli import train as train_command
from service.cli import vllm as vllm_commands
from service.cli.common import fail as _fail
from service.cli.common import settings as _settings

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
app.command("serve")(serve_command.serve)
app.command("train")(train_command.train)
app.command("eval")(evaluate_command.eval_command)
app.command("eval-report")(evaluate_command.eval_report_command)
app.command("climb")(climb_command.climb_command)


def main() -> None:
    """The console script."""
    _quiet_environment()
    app(prog_name="ladder")


if __name__ == "__main__":
    main()
