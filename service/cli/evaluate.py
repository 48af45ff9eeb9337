"""`ladder eval`: every rung over a task's held-out examples, with cost, forgetting and advice."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

GENERAL_TASK = "general"
PROBE_BASE = "base~general"


def _check_leakage(task: Any, adapters: dict[str, str | None], registry: Any) -> None:
    """Refuses an evaluation whose held-out examples an adapter was trained on."""
    from adapters.registry import RegistryError
    from evaluation.tasks import training_prompts
    from service.cli.common import fail

    held = {example.prompt_key for example in task.examples}
    for configuration, ref in adapters.items():
        if not ref:
            continue
        try:
            source = registry.resolve(ref).manifest().get("training_data", {}).get("path")
        except RegistryError:
            continue
        if source and Path(source).is_file():
            leaked = held & training_prompts(Path(source))
            if leaked:
                raise fail(
                    f"{len(leaked)} held-out examples of {task.name!r} are in the training data of"
                    f" {ref} (configuration {configuration!r}): refusing to evaluate"
                )


def _probes(configs: Any, chosen: list[str], general: Any) -> dict[str, Any]:
    """Derived rungs for the forgetting check: the general prompt with and without each adapter."""
    from service.routing.configs import Configuration, Generation

    generation = Generation(max_tokens=general.max_tokens or 32)
    probes = {
        PROBE_BASE: Configuration(
            name=PROBE_BASE, system_prompt=general.system_prompt, generation=generation
        )
    }
    for name in chosen:
        adapter = configs[name].adapter if name in configs else None
        if adapter:
            probe = f"{name}~general"
            probes[probe] = Configuration(
                name=probe,
                system_prompt=general.system_prompt,
                adapter=adapter,
                generation=generation,
            )
    return probes


def eval_command(
    task: Annotated[str, typer.Option(help="A task under --tasks-dir.")],
    configs: Annotated[str, typer.Option(help="Configurations, cheapest rung first: a,b,c.")],
    target: Annotated[str | None, typer.Option(help='Goal such as "format_validity>=0.9".')] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Held-out examples (seeded sample).")
    ] = None,
    general_limit: Annotated[int | None, typer.Option(min=1)] = None,
    as_json: Annotated[
        Path | None, typer.Option("--json", help="Write the full results here.")
    ] = None,
    out_dir: Annotated[Path | None, typer.Option(help="Markdown table and chart folder.")] = None,
    url: Annotated[str | None, typer.Option(help="Evaluate a running server instead.")] = None,
    tasks_dir: Annotated[Path, typer.Option()] = Path("corpus/tasks"),
    seed: Annotated[int, typer.Option()] = 0,
    record: Annotated[bool, typer.Option(help="Write results into adapter manifests.")] = True,
) -> None:
    """Runs the ladder evaluation and names the cheapest configuration that meets the target."""
    from evaluation.report import Target
    from evaluation.runner import EvalRun
    from evaluation.tasks import TaskError, load_task
    from service.cli.common import fail, settings

    chosen = [name.strip() for name in configs.split(",") if name.strip()]
    try:
        loaded = load_task(tasks_dir, task)
        general = load_task(tasks_dir, GENERAL_TASK) if url is None else None
        goal = Target.parse(target or f"{loaded.primary_metric}>=0.9")
    except (TaskError, ValueError) as error:
        raise fail(str(error)) from None
    run = EvalRun(settings(), loaded, chosen, goal, seed, limit, url)
    try:
        run.prepare(general, general_limit, _probes, _check_leakage)
        outcome = run.execute()
    finally:
        run.close()
    folder = out_dir or run.settings.data_dir / "eval" / task
    outcome.write(folder, as_json)
    typer.echo(outcome.text())
    typer.echo(f"\ntable and chart: {folder}")
    if record:
        outcome.record(run.registry)


def eval_report_command(
    results: Annotated[Path, typer.Argument(help="A file written by `ladder eval --json`.")],
    out_dir: Annotated[Path, typer.Option(help="Where report.md and chart.png go.")],
) -> None:
    """Re-renders a saved evaluation's table, chart and recommendation without re-running it."""
    import json

    from evaluation.runner import Outcome
    from service.cli.common import fail

    try:
        outcome = Outcome.from_dict(json.loads(results.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise fail(f"{results} holds no ladder evaluation results: {error}") from None
    outcome.write(out_dir, None)
    typer.echo(outcome.text())
    typer.echo(f"\ntable and chart: {out_dir}")
