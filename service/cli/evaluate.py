"""`ladder eval`: every rung over a task's held-out examples, with cost, forgetting and advice."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from evaluation.backends import HttpBackend
    from evaluation.tasks import Task
    from service.routing.configs import Configuration
    from service.settings import Settings


def in_process(
    settings: Settings,
    extra: Mapping[str, Configuration] | None,
    serve_only: Collection[str],
) -> HttpBackend:
    """The service's own app, lifespan and all, without a socket, serving `serve_only`."""
    from fastapi.testclient import TestClient

    from evaluation.backends import HttpBackend
    from service.api.app import create_app

    client = TestClient(
        create_app(settings, extra_configurations=extra, serve_only=serve_only),
        raise_server_exceptions=True,
    )
    client.__enter__()
    return HttpBackend(client)


def _general_task(tasks_dir: Path, chosen: Sequence[str]) -> Task | None:
    """The general task for the forgetting check. Only adapter rungs need it: without it, a run
    of no adapter rung goes on unchecked, and one with an adapter rung is a TaskError."""
    from adapters.registry import AdapterRegistry
    from evaluation.runner import GENERAL_TASK
    from evaluation.tasks import TaskError, TaskNotFound, load_task
    from service.cli.common import settings
    from service.errors import LadderError
    from service.routing.configs import load_configurations

    try:
        return load_task(tasks_dir, GENERAL_TASK)
    except TaskNotFound as missing:
        current = settings()
        adapters = AdapterRegistry(current.adapters_root).names()
        try:
            loaded = load_configurations(current.config, adapters, None, only=chosen)
        except LadderError:
            return None  # the run reports a bad configurations file itself
        with_adapter = [name for name in chosen if getattr(loaded.get(name), "adapter", None)]
        if with_adapter:
            raise TaskError(
                f"{missing}; the forgetting check of adapter rungs ({', '.join(with_adapter)})"
                " needs it"
            ) from None
        return None


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
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="LADDER_EVAL_API_KEY",
            show_default=False,
            help="The --url server's API key (sent as a bearer token).",
        ),
    ] = None,
    tasks_dir: Annotated[Path, typer.Option()] = Path("corpus/tasks"),
    seed: Annotated[int, typer.Option()] = 0,
    record: Annotated[bool, typer.Option(help="Write results into adapter manifests.")] = True,
    concurrency: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="Examples asked at once (LADDER_ENGINE=vllm or --url; the local engine"
            " answers one at a time, so it gets 1).",
        ),
    ] = 1,
) -> None:
    """Runs the ladder evaluation and names the cheapest configuration that meets the target."""
    from evaluation.backends import BackendError
    from evaluation.report import Target
    from evaluation.runner import EvalRun
    from evaluation.tasks import TaskError, load_task
    from service.cli.common import fail, settings

    chosen = [name.strip() for name in configs.split(",") if name.strip()]
    try:
        loaded = load_task(tasks_dir, task)
        general = _general_task(tasks_dir, chosen) if url is None else None
        goal = Target.parse(target or f"{loaded.primary_metric}>=0.9")
    except (TaskError, ValueError) as error:
        raise fail(str(error)) from None
    current = settings()
    if url is None and current.engine == "local":
        concurrency = 1  # one worker thread: more in flight only queues (and may time out)
    run = EvalRun(current, loaded, chosen, goal, seed, limit, concurrency=concurrency)
    try:
        if url is not None:
            run.connect(url, api_key)
        else:
            run.start(in_process, general, general_limit)
        outcome = run.execute()
    except TaskError as error:
        raise fail(str(error)) from None
    except BackendError as error:
        raise fail(f"{error}; the answers so far are journaled: run again to resume", 1) from None
    finally:
        run.close()
    folder = out_dir or run.settings.data_dir / "eval" / task
    outcome.write(folder, as_json)
    typer.echo(outcome.text())
    typer.echo(f"\ntable and chart: {folder}")
    if record:
        outcome.record(run.registry)


def eval_report_command(
    results: Annotated[
        list[Path],
        typer.Argument(
            help="Files written by `ladder eval --json`; several runs of one task are merged"
            " (a configuration in a later file replaces the same one in an earlier file)."
        ),
    ],
    out_dir: Annotated[Path, typer.Option(help="Where report.md and chart.png go.")],
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the (merged) results here.")
    ] = None,
) -> None:
    """Re-renders saved evaluations' table, chart and recommendation without re-running them."""
    import json

    from evaluation.runner import EvaluationOutcome
    from service.cli.common import fail

    outcomes = []
    for path in results:
        try:
            outcomes.append(
                EvaluationOutcome.from_dict(json.loads(path.read_text(encoding="utf-8")))
            )
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise fail(f"{path} holds no ladder evaluation results: {error}") from None
    try:
        outcome = EvaluationOutcome.merged(outcomes)
    except ValueError as error:
        raise fail(str(error)) from None
    outcome.write(out_dir, json_out)
    typer.echo(outcome.text())
    typer.echo(f"\ntable and chart: {out_dir}")
