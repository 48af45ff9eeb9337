"""`ladder climb`: the ladder walked for the user, training only when the rungs below fail."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from adapters.replay import ReplayLoss

if TYPE_CHECKING:
    from evaluation.climb import Climb
    from evaluation.climb_report import ClimbOutcome
    from service.settings import Settings


class ProgressDisplay:
    """Rung, step and ETA: rich bars on a terminal, a line every 10 answers or steps in logs."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.live = self.console.is_terminal
        self.progress: Any = None
        self.task_id: Any = None
        self.count = 0
        self.total = 0
        self.label = ""
        self.since = time.monotonic()
        self.first = 0

    def _bar(self, description: str, total: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.close()
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self.progress.start()
        self.task_id = self.progress.add_task(description, total=total)

    def rung(self, index: int, total: int, name: str, examples: int, eta_s: float) -> None:
        """A rung starts: `rung 2/6 support-triage~prompt`."""
        self.label, self.count, self.total = f"rung {index}/{total} {name}", 0, examples
        self.since = time.monotonic()
        if self.live:
            self._bar(self.label, examples)
        else:
            print(f"{self.label}: {examples} examples", file=sys.stderr, flush=True)

    def answered(self) -> None:
        """One example answered (or found in the journal)."""
        self.count += 1
        if self.live and self.progress is not None:
            self.progress.update(self.task_id, advance=1)
        elif self.count % 10 == 0 or self.count == self.total:
            eta = self._eta(self.count, self.total)
            print(f"{self.label}: {self.count}/{self.total}{eta}", file=sys.stderr, flush=True)

    def _eta(self, done: int, total: int) -> str:
        """`, ETA 3.2 min` from the pace so far (journaled answers count as instant)."""
        left = total - done
        if left <= 0 or done <= 0:
            return ""
        return f", ETA {(time.monotonic() - self.since) / done * left / 60:.1f} min"

    def step(self, step: int, total: int, loss: float) -> None:
        """One training step."""
        if self.live:
            if self.progress is None or self.total != -total:
                self._bar("training", total)
                self.total = -total
            self.progress.update(
                self.task_id, completed=step, description=f"training, loss {loss:.3f}"
            )
        elif self.total != -total or step % 10 == 0 or step == total:
            if self.total != -total:
                self.total, self.since, self.first = -total, time.monotonic(), step
            eta = self._eta(step - self.first, total - self.first)
            print(f"training step {step}/{total} loss {loss:.4f}{eta}", file=sys.stderr, flush=True)

    def say(self, line: str) -> None:
        """A finished rung's result or a note."""
        self.close()
        typer.echo(line, err=True)

    def close(self) -> None:
        """Stops the current bar."""
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _target_modules(config: Settings, requested: str | None) -> tuple[str, ...]:
    """The LoRA's target modules as asked, checked against the base model before anything runs
    (an hour's climb must not fail at its training step); none asked: every linear layer."""
    from service.cli.train import _base_and_targets

    if not (requested or "").strip(" ,"):
        return ()
    return _base_and_targets(config, requested, gate_only=False)[1]


def _ship(
    climb: Climb,
    outcome: ClimbOutcome,
    write_config: Path | None,
    config_name: str | None,
    experiment: str | None,
    against: str | None,
    config: Settings,
) -> None:
    """Writes the winner to a configurations file and creates the draft experiment."""
    from evaluation.climb_plan import raw_definition
    from evaluation.climb_report import write_configuration
    from service.cli.common import fail

    if write_config is None and experiment is None:
        return
    if outcome.winner is None:
        typer.echo("no configuration written and no experiment created: no rung won", err=True)
        return
    name = config_name or f"{climb.task.name}-climbed"
    target = write_config or config.config
    raw = raw_definition(outcome.winner.rung, config.config)
    description = f"ladder climb: {outcome.winner.rung.id} meets {outcome.target}"
    try:
        write_configuration(target, name, raw, description)
    except (OSError, ValueError) as error:
        raise fail(f"--write-config: {error}") from None
    typer.echo(f"wrote configuration {name!r} to {target}")
    if experiment is None:
        return
    from service.cli.climb_ship import create_experiment

    try:
        created = create_experiment(config, target, experiment, against or "", name)
    except ValueError as error:
        raise fail(f"--experiment: {error}") from None
    typer.echo(created)


def climb_command(
    task: Annotated[str, typer.Option(help="A task under --tasks-dir.")],
    target: Annotated[str, typer.Option(help='The goal, such as "field_accuracy>=0.8".')],
    tasks_dir: Annotated[Path, typer.Option()] = Path("corpus/tasks"),
    budget_minutes: Annotated[
        float | None, typer.Option(min=0.1, help="Stop (resumably) after this long.")
    ] = None,
    max_cost_per_1k: Annotated[
        float | None,
        typer.Option(min=0.0, help="Leave out rungs dearer than this, USD per 1,000 calls."),
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Held-out examples (seeded).")] = None,
    general_limit: Annotated[
        int | None,
        typer.Option(min=1, help="General questions for the forgetting check (default: all)."),
    ] = None,
    seed: Annotated[int, typer.Option()] = 0,
    replay_fraction: Annotated[
        float, typer.Option(min=0.0, max=0.9, help="Share of the training mix that is replay.")
    ] = 0.2,
    compare_replay: Annotated[
        bool, typer.Option(help="Also train without replay, to show what replay changes.")
    ] = True,
    replay_prompts: Annotated[
        Path | None,
        typer.Option(help="General prompts (default: the general task's replay.jsonl)."),
    ] = None,
    replay_loss: Annotated[
        ReplayLoss,
        typer.Option(
            help="answers: learn the base's replay answers; distill: its whole distribution."
        ),
    ] = ReplayLoss.distill,
    min_general_kept: Annotated[
        float,
        typer.Option(
            min=0.0, max=1.0, help="Share of the base's general score an adapter must keep."
        ),
    ] = 0.8,
    rank: Annotated[int, typer.Option(min=1, max=256)] = 16,
    target_modules: Annotated[
        str | None,
        typer.Option(help="Layers the LoRA adapts, e.g. q_proj,v_proj; default: every linear one."),
    ] = None,
    epochs: Annotated[int, typer.Option(min=1, max=50)] = 2,
    max_steps: Annotated[int | None, typer.Option(min=1)] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=256)] = 8,
    learning_rate: Annotated[float, typer.Option(min=1e-6, max=1.0)] = 1e-3,
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Examples in flight.")] = 1,
    rungs: Annotated[
        str | None,
        typer.Option(help="Only these lower rungs, e.g. base,prompt,constrained (default: all)."),
    ] = None,
    write_config: Annotated[
        Path | None, typer.Option(help="Add the winning configuration to this file.")
    ] = None,
    config_name: Annotated[
        str | None, typer.Option(help="The winner's name there (default: TASK-climbed).")
    ] = None,
    experiment: Annotated[
        str | None, typer.Option(help="Create (not start) an A/B experiment of this name.")
    ] = None,
    against: Annotated[
        str | None, typer.Option(help="The experiment's control: the production configuration.")
    ] = None,
    out_dir: Annotated[Path | None, typer.Option(help="Report and chart folder.")] = None,
    dry_run: Annotated[
        bool, typer.Option(help="Print the plan, time and cost; run nothing.")
    ] = False,
) -> None:
    """Walks the ladder: baseline, then the cheapest rungs first, training only when they fail.

    Exit 0 when a rung meets the target, 1 when none does (or the budget ran out), 2 on an error.
    """
    from adapters.train import TrainingOptions
    from evaluation.backends import BackendError
    from evaluation.climb import Climb, ClimbOptions
    from evaluation.climb_plan import LOWER_RUNGS
    from evaluation.report import Target
    from evaluation.tasks import TaskError, load_task
    from service.cli.common import fail, settings
    from service.cli.evaluate import in_process

    unknown = sorted({r.strip() for r in (rungs or "").split(",") if r.strip()} - set(LOWER_RUNGS))
    if unknown:
        raise fail(f"--rungs takes {', '.join(LOWER_RUNGS)}; not {', '.join(unknown)}")
    if experiment is not None and not against:
        raise fail("--experiment needs --against CONFIG, the production configuration")
    config = settings()
    if config.engine == "local":
        concurrency = 1  # one worker thread: more in flight only queues (and may time out)
    try:
        loaded = load_task(tasks_dir, task)
        goal = Target.parse(target)
    except (TaskError, ValueError) as error:
        raise fail(str(error)) from None
    training = TrainingOptions(
        rank=rank,
        target_modules=_target_modules(config, target_modules),
        epochs=epochs,
        max_steps=max_steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        threads=max(1, config.torch_threads),
        replay_loss=replay_loss.value,
    )
    options = ClimbOptions(
        target=goal,
        seed=seed,
        limit=limit,
        general_limit=general_limit,
        budget_minutes=budget_minutes,
        max_cost_per_1k=max_cost_per_1k,
        replay_fraction=replay_fraction,
        compare_replay=compare_replay,
        replay_prompts=replay_prompts,
        min_general_kept=min_general_kept,
        training=training,
        concurrency=concurrency,
        rungs=tuple(r.strip() for r in (rungs or "").split(",") if r.strip()),
    )
    display = ProgressDisplay()
    try:
        climb = Climb(config, loaded, tasks_dir, options, display)
        if dry_run:
            typer.echo(climb.dry_run())
            return
        outcome = climb.run(in_process)
    except TaskError as error:
        display.close()
        raise fail(str(error)) from None
    except BackendError as error:
        display.close()
        raise fail(f"{error}; what is done is kept: run again to resume", 1) from None
    display.close()
    folder = out_dir or config.data_dir / "climb" / task
    outcome.write(folder)
    typer.echo(outcome.text())
    typer.echo(f"\nreport and chart: {folder}")
    _ship(climb, outcome, write_config, config_name, experiment, against, config)
    if outcome.winner is None:
        raise typer.Exit(1)
