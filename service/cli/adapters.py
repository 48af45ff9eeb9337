"""`ladder adapters ...`: the LoRA registry from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="The LoRA adapter registry.", no_args_is_help=True)


def _registry():  # type: ignore[no-untyped-def]
    from adapters.registry import AdapterRegistry
    from service.cli.common import settings

    return AdapterRegistry(settings().adapters_root)


@app.command("list")
def list_adapters() -> None:
    """Lists every adapter, its versions and its newest version's rank and results."""
    from rich.console import Console
    from rich.table import Table

    registry = _registry()
    table = Table("name", "versions", "newest", "rank", "created", "evaluations")
    for name in registry.names():
        newest = registry.resolve(name)
        manifest = newest.manifest()
        table.add_row(
            name,
            ", ".join(str(v) for v in registry.versions(name)),
            newest.ref,
            str(manifest.get("rank", "?")),
            str(manifest.get("created_at", ""))[:19],
            ", ".join(sorted(manifest.get("evaluations", {}))) or "-",
        )
    Console().print(table)


@app.command()
def show(ref: Annotated[str, typer.Argument(help="name or name@version")]) -> None:
    """Prints a version's manifest."""
    from adapters.registry import RegistryError
    from service.cli.common import fail

    try:
        typer.echo(json.dumps(_registry().resolve(ref).manifest(), indent=2))
    except RegistryError as error:
        raise fail(str(error)) from None


@app.command()
def register(
    name: Annotated[str, typer.Argument(help="Adapter name ([a-z0-9._-]).")],
    path: Annotated[Path, typer.Argument(help="A PEFT LoRA folder made elsewhere.")],
) -> None:
    """Validates a foreign PEFT adapter against the configured base model and registers it."""
    from adapters.base_model import BaseModelUnavailable, linear_modules, resolve_base_model
    from adapters.registry import RegistryError, parse_ref, read_adapter_config, validate_foreign
    from service.cli.common import fail, settings

    config = settings()
    try:
        parse_ref(name)  # the name and the folder first: they are refused without the model
        read_adapter_config(path)
        base = resolve_base_model(config.base_model, config.cache_dir)
        validate_foreign(path, base, config.max_lora_rank, linear_modules(base.folder))
        origin = {"source": "registered", "origin": str(path)}
        adapter = _registry().register(name, path, origin, base=base)
    except (BaseModelUnavailable, RegistryError) as error:
        raise fail(str(error)) from None
    typer.echo(f"registered {adapter.ref} for {base.source}")


@app.command()
def remove(
    ref: Annotated[str, typer.Argument(help="name (every version) or name@version")],
) -> None:
    """Removes an adapter version, or every version of a name."""
    from adapters.registry import RegistryError
    from service.cli.common import fail

    try:
        removed = _registry().remove(ref)
    except RegistryError as error:
        raise fail(str(error)) from None
    typer.echo("removed " + ", ".join(adapter.ref for adapter in removed))
