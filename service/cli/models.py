"""`ladder models prepare|show`: the base model LADDER_BASE_MODEL names (the bundled one unset)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from service.cli.common import fail, settings

app = typer.Typer(help="The base model.", no_args_is_help=True)
TEMPLATE_LINES = 6


@app.command()
def prepare() -> None:
    """Prepares the configured base model once (a GGUF is converted into the cache)."""
    from adapters.base_model import BaseModelUnavailable, resolve_base_model

    chosen = settings()
    try:
        base = resolve_base_model(chosen.base_model, chosen.cache_dir, progress=typer.echo)
    except BaseModelUnavailable as error:
        raise fail(str(error)) from None
    typer.echo(f"base model ready: {base.folder}")


@app.command()
def show(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """The base model in use: source, architecture, size, window, template, LoRA-able modules and
    the registered adapters that fit it."""
    description = _describe()
    if as_json:
        typer.echo(json.dumps(description, indent=2))
        return
    fingerprint = description["fingerprint"]
    typer.echo(f"base model     {description['source']}")
    typer.echo(f"folder         {description['folder']}")
    typer.echo(
        f"architecture   {fingerprint['architecture']}, hidden {fingerprint['hidden_size']},"
        f" {fingerprint['layers']} layers, vocabulary {fingerprint['vocab_size']}"
    )
    typer.echo(f"parameters     {description['parameters']:,}")
    typer.echo(
        f"context window {description['context_window']} tokens"
        f" (the model's: {description['model_context_window']})"
    )
    typer.echo(f"fingerprint    {fingerprint['files_sha256']}")
    modules = ", ".join(f"{n} {i}->{o}" for n, (i, o) in description["lora_modules"].items())
    typer.echo(f"LoRA modules   {modules}")
    typer.echo("chat template  " + "\n               ".join(description["chat_template_head"]))
    fit, other = description["adapters"]["fit"], description["adapters"]["other_base"]
    typer.echo(f"adapters       {', '.join(fit) or 'none registered for this base'}")
    if other:
        typer.echo(f"other bases    {', '.join(other)} (not served on this base)")


def _describe() -> dict[str, Any]:
    from adapters.base_model import (
        BaseModelUnavailable,
        context_window,
        linear_modules,
        parameter_count,
        resolve_base_model,
    )
    from adapters.base_model import chat_template as read_template
    from adapters.registry import AdapterRegistry, fits

    chosen = settings()
    try:
        base = resolve_base_model(chosen.base_model, chosen.cache_dir, progress=_to_stderr)
        window = context_window(base, chosen.context_window)
    except BaseModelUnavailable as error:
        raise fail(str(error)) from None
    registry = AdapterRegistry(chosen.adapters_root)
    newest = [registry.resolve(name) for name in registry.names()]
    fitting = {version.ref: fits(version.manifest(), base) for version in newest}
    template = read_template(base.folder).strip().splitlines()
    head = template[:TEMPLATE_LINES] + (["..."] if len(template) > TEMPLATE_LINES else [])
    return {
        "source": base.source,
        "folder": str(base.folder),
        "fingerprint": base.fingerprint.as_dict(),
        "parameters": parameter_count(base.folder),
        "context_window": window,
        "model_context_window": base.context_window,
        "lora_modules": linear_modules(base.folder),
        "chat_template_head": head,
        "adapters": {
            "fit": [ref for ref, fit in fitting.items() if fit],
            "other_base": [ref for ref, fit in fitting.items() if not fit],
        },
    }


def _to_stderr(message: str) -> None:
    typer.echo(message, err=True)
