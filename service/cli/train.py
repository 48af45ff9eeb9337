"""`ladder train`: the data-quality gate, then PEFT LoRA training into the registry."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from adapters.data import FINDING_KINDS, GateReport
from adapters.replay import ReplayLoss

if TYPE_CHECKING:
    from adapters.base_model import BaseModel
    from adapters.data import Example
    from service.settings import Settings

GENERAL_SYSTEM_PROMPT = "You are a helpful assistant. Answer briefly."


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


def _replay(
    config: Settings, base: BaseModel, prompts: Path | None, fraction: float, system: str | None
) -> list[Example]:
    """The base model's own answers to the replay prompts (cached), or a one-line exit 2."""
    from adapters.replay import ReplayPromptsError, load_replay_prompts, replay_examples
    from service.cli.common import fail

    if prompts is None:
        return []
    try:
        questions = load_replay_prompts(prompts)
    except ReplayPromptsError as error:
        raise fail(f"--replay-prompts: {error}") from None

    def progress(done: int, total: int) -> None:
        typer.echo(f"replay: the base model answered {done}/{total} prompts", err=True)

    replay = replay_examples(
        base,
        questions,
        system or None,
        cache_dir=config.cache_dir / "replay",
        threads=max(1, config.torch_threads),
        on_progress=progress,
    )
    if not replay:
        raise fail(f"--replay-prompts: {base.source} answered none of the prompts in {prompts}")
    return replay


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
    replay_prompts: Annotated[
        Path | None,
        typer.Option(help="General prompts (JSONL of {'id', 'prompt'}) the base model answers."),
    ] = None,
    replay_fraction: Annotated[
        float, typer.Option(min=0.0, max=0.9, help="Share of the training mix that is replay.")
    ] = 0.0,
    replay_system_prompt: Annotated[
        str, typer.Option(help="System message of the replay prompts (@FILE reads a file).")
    ] = GENERAL_SYSTEM_PROMPT,
    replay_loss: Annotated[
        ReplayLoss,
        typer.Option(
            help="answers: learn the base's replay answers; distill: its whole distribution."
        ),
    ] = ReplayLoss.distill,
    checkpoint_dir: Annotated[
        Path | None,
        typer.Option(help="Checkpoint here, and resume from the checkpoint it holds."),
    ] = None,
    checkpoint_every: Annotated[int, typer.Option(min=1, help="Steps between checkpoints.")] = 10,
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
    if (replay_prompts is None) != (replay_fraction == 0):
        raise fail("--replay-prompts and a --replay-fraction above 0 go together")
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
    replay = _replay(
        config, base, replay_prompts, replay_fraction, _read_prompt(replay_system_prompt)
    )
    options = TrainingOptions(
        rank=rank,
        target_modules=targets,
        epochs=epochs,
        max_steps=max_steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        threads=max(1, config.torch_threads),
        replay_loss=replay_loss.value,
        checkpoint_every=checkpoint_every,
    )
    registry = AdapterRegistry(config.adapters_root)
    try:
        with _step_reporter() as on_step:
            adapter = train_and_register(
                registry,
                name,
                report,
                data,
                base=base,
                options=options,
                on_step=on_step,
                replay=replay,
                replay_fraction=replay_fraction,
                checkpoint_dir=checkpoint_dir,
                on_resume=_say_resuming,
            )
    except ChatTemplateError as error:
        raise fail(f"{base.source}: {error}") from None
    typer.echo(f"trained {adapter.ref} on {base.source} -> {adapter.path}")


def _say_resuming(step: int, total: int) -> None:
    typer.echo(f"resuming at step {step} of {total}", err=True)
