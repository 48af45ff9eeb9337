"""`ladder train`: the data-quality gate, then PEFT LoRA training into the registry."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from adapters.data import FINDING_KINDS, GateReport

if TYPE_CHECKING:
    from adapters.base_model import BaseModel
    from service.settings import Settings


def _read_prompt(value: str | None) -> str | None:
    if value and value.startswith("@"):
        return Path(value[1:]).read_text(encoding="utf-8").strip()
    return value


@contextmanager
def _step_reporter() -> Iterator[Callable[[int, int, float], None]]:
    """A progress bar on a terminal; a line every 10 steps otherwise (for logs and CI)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if not Console(stderr=True).is_terminal:

        def log(step: int, total: int, loss: float) -> None:
            if step == 1 or step % 10 == 0 or step == total:
                print(f"step {step}/{total} loss {loss:.4f}", file=sys.stderr, flush=True)

        yield log
        return
    columns = (
        TextColumn("training {task.fields[loss]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task("train", total=None, loss="")
        yield lambda step, total, loss: bar.update(
            task, completed=step, total=total, loss=f"loss {loss:.3f}"
        )


def _report_gate(report: GateReport, allow: list[str]) -> None:
    """Prints the gate's findings; exit 2 when one it was not allowed to pass is an error."""
    from service.cli.common import fail

    typer.echo(report.render(), err=True)
    blocking = report.blocking(allow)
    if blocking:
        kinds = ", ".join(sorted({f.kind for f in blocking}))
        raise fail(f"the data-quality gate refused the data ({kinds}); fix it or --allow KIND")


def _base_and_targets(
    config: Settings, requested: str | None, gate_only: bool
) -> tuple[BaseModel, tuple[str, ...]]:
    """The configured base model and the LoRA's target modules on it (none when only the gate
    runs: finding them builds the model's skeleton), or a one-line exit 2."""
    from adapters.base_model import BaseModelUnavailable, resolve_base_model
    from adapters.lora import UnknownTargetModules, choose_target_modules
    from service.cli.common import fail

    try:
        base = resolve_base_model(
            config.base_model, config.cache_dir, lambda line: typer.echo(line, err=True)
        )
    except BaseModelUnavailable as error:
        raise fail(str(error)) from None
    names = tuple(name.strip() for name in (requested or "").split(",") if name.strip())
    if gate_only:
        return base, names
    try:
        return base, choose_target_modules(base.folder, names)
    except UnknownTargetModules as error:
        raise fail(f"--target-modules: {base.source}: {error}") from None


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
    target_modules: Annotated[
        str | None,
        typer.Option(help="Layers the LoRA adapts, e.g. q_proj,v_proj; default: every linear one."),
    ] = None,
    epochs: Annotated[int, typer.Option(min=1, max=50)] = 2,
    max_steps: Annotated[int | None, typer.Option(min=1)] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=256)] = 8,
    learning_rate: Annotated[float, typer.Option(min=1e-6, max=1.0)] = 1e-3,
    seed: Annotated[int, typer.Option()] = 0,
    check_only: Annotated[bool, typer.Option(help="Run the gate and stop.")] = False,
) -> None:
    """Trains a LoRA adapter on DATA after the data-quality gate accepts it (exit 2 if not)."""
    from adapters.data import gate_data
    from adapters.registry import AdapterRegistry
    from adapters.train import ChatTemplateError, TrainingOptions, train_and_register
    from service.cli.common import fail, settings

    unknown = sorted(set(allow or []) - set(FINDING_KINDS))
    if unknown:
        raise fail(f"--allow takes {', '.join(FINDING_KINDS)}; not {', '.join(unknown)}")
    if not data.is_file():
        raise fail(f"no such file: {data}")
    config = settings()
    base, targets = _base_and_targets(config, target_modules, check_only)
    report = gate_data(
        data,
        heldout,
        model_dir=base.folder,
        heldout_fraction=heldout_fraction,
        system_prompt=_read_prompt(system_prompt),
        max_tokens=max_tokens,
        seed=seed,
    )
    _report_gate(report, allow or [])
    if check_only:
        typer.echo("the data-quality gate accepts the data")
        return
    options = TrainingOptions(
        rank=rank,
        target_modules=targets,
        epochs=epochs,
        max_steps=max_steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        threads=max(1, config.torch_threads),
    )
    registry = AdapterRegistry(config.adapters_root)
    try:
        with _step_reporter() as on_step:
            adapter = train_and_register(
                registry, name, report, data, base=base, options=options, on_step=on_step
            )
    except ChatTemplateError as error:
        raise fail(f"{base.source}: {error}") from None
    typer.echo(f"trained {adapter.ref} on {base.source} -> {adapter.path}")
