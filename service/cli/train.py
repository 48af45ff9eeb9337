"""`ladder train`: the data-quality gate, then PEFT LoRA training into the registry."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated

import typer

from adapters.data import FINDING_KINDS


def _read_prompt(value: str | None) -> str | None:
    if value and value.startswith("@"):
        return Path(value[1:]).read_text(encoding="utf-8").strip()
    return value


def train(
    data: Annotated[
        Path, typer.Argument(help="Chat-format JSONL: one {'messages': [...]} a line.")
    ],
    name: Annotated[str, typer.Option(help="Adapter name in the registry.")],
    heldout: Annotated[
        Path | None, typer.Option(help="Held-out JSONL (never trained on); else a split of DATA.")
    ] = None,
    heldout_fraction: Annotated[float, typer.Option(min=0.0, max=0.5)] = 0.1,
    system_prompt: Annotated[
        str | None, typer.Option(help="System message added to every example (@FILE reads a file).")
    ] = None,
    allow: Annotated[
        list[str] | None, typer.Option(help=f"Accept a gate finding: {', '.join(FINDING_KINDS)}.")
    ] = None,
    max_tokens: Annotated[int, typer.Option(help="Longest example, in tokens.")] = 512,
    rank: Annotated[int, typer.Option(min=1, max=256)] = 16,
    epochs: Annotated[int, typer.Option(min=1, max=50)] = 2,
    max_steps: Annotated[int | None, typer.Option(min=1)] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=256)] = 8,
    learning_rate: Annotated[float, typer.Option(min=1e-6, max=1.0)] = 1e-3,
    seed: Annotated[int, typer.Option()] = 0,
    check_only: Annotated[bool, typer.Option(help="Run the gate and stop.")] = False,
) -> None:
    """Trains a LoRA adapter on DATA after the data-quality gate accepts it (exit 2 if not)."""
    from service.cli.common import fail, settings
    from service.cli.training import gate_data, run_training

    unknown = sorted(set(allow or []) - set(FINDING_KINDS))
    if unknown:
        raise fail(f"--allow takes {', '.join(FINDING_KINDS)}; not {', '.join(unknown)}")
    if not data.is_file():
        raise fail(f"no such file: {data}")
    config = settings()
    report = gate_data(
        config, data, heldout, heldout_fraction, _read_prompt(system_prompt), max_tokens, seed
    )
    typer.echo(report.render(), err=True)
    blocking = report.blocking(allow or [])
    if blocking:
        kinds = ", ".join(sorted({f.kind for f in blocking}))
        raise fail(f"the data-quality gate refused the data ({kinds}); fix it or --allow KIND")
    if check_only:
        typer.echo("the data-quality gate accepts the data")
        return
    data_hash = hashlib.sha256(data.read_bytes()).hexdigest()
    adapter = run_training(
        config,
        name,
        report,
        data,
        data_hash,
        rank=rank,
        epochs=epochs,
        max_steps=max_steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
    )
    typer.echo(f"trained {adapter.ref} -> {adapter.path}")
