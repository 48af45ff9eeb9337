"""Evaluation speed: `ladder eval`'s path (the app in process) per engine and concurrency.

Run from the repository root, with `ladder vllm up` running for the vllm runs (LADDER_VLLM_URL
pointing at it): `python bench/eval_speed.py [--runs vllm:1,vllm:8,local:1] [--limit 16]
[--configs a,b,c] [--task support-triage]`. Each run starts the app once (like `ladder eval`),
empties its journal, then answers the held-out sample under each configuration in turn, timed.
Prints per configuration the wall time, p50 latency, the metrics, and how many answers differ
from the first run's on the same engine and from the first run's on another engine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from evaluation.journal import ExampleResult, Journal
from evaluation.report import Target
from evaluation.runner import EvalRun, evaluate
from evaluation.tasks import load_task
from service.cli.evaluate import in_process
from service.settings import Settings

CONFIGS = "triage-prompt,triage-few-shot-similar,triage-constrained"
METRICS = ("field_accuracy", "format_validity")


@dataclass
class Cell:
    """One configuration under one run."""

    run: str
    configuration: str
    wall_s: float
    results: list[ExampleResult]
    load: float = field(default_factory=lambda: os.getloadavg()[0])

    def mean(self, metric: str) -> float:
        """The metric's mean over the examples."""
        return statistics.fmean(r.scores.get(metric, 0.0) for r in self.results)

    def p50_latency(self) -> float:
        """The median of the per-request latencies."""
        return statistics.median(r.reply["latency_s"] for r in self.results)

    def texts(self) -> list[str]:
        """The answers, in the examples' order."""
        return [r.reply["text"] for r in self.results]


def run_once(spec: str, task_name: str, configs: list[str], limit: int) -> list[Cell]:
    """Starts the app on the spec's engine (`engine:concurrency`) and times each configuration."""
    engine, concurrency = spec.split(":")
    settings = Settings(engine=engine)
    task = load_task(Path("corpus/tasks"), task_name)
    run = EvalRun(settings, task, configs, Target.parse("field_accuracy>=0.9"), 0, limit)
    run.start(in_process, None, None)
    assert run.backend is not None
    try:
        run.journal.path.unlink(missing_ok=True)
        journal = Journal.open(run.journal.path)
        cells = []
        for name in configs:
            started = time.perf_counter()
            results = evaluate(
                task, [name], run.backend, journal, run.examples, 0, None, int(concurrency)
            )
            cells.append(Cell(spec, name, time.perf_counter() - started, results[name]))
            print(f"{spec} {name}: {cells[-1].wall_s:.1f} s", flush=True)
        return cells
    finally:
        run.close()


def differing(cell: Cell, reference: Cell | None) -> str:
    """How many answers differ from the reference cell's ('-' without one)."""
    if reference is None or reference is cell:
        return "-"
    return str(sum(a != b for a, b in zip(cell.texts(), reference.texts(), strict=True)))


def table(cells: list[Cell]) -> str:
    """The Markdown table: wall time, speed-up over the first run, metrics, differing answers."""
    first_run = cells[0].run
    head = (
        "| run | configuration | wall s | x vs first | p50 latency s | "
        + " | ".join(METRICS)
        + " | answers differing (same engine's first run / other engine) | load |"
    )
    rows = [head, "|" + "---|" * (len(METRICS) + 7)]
    for cell in cells:
        same = [c for c in cells if c.configuration == cell.configuration]
        engine = cell.run.split(":")[0]
        same_engine = next(c for c in same if c.run.split(":")[0] == engine)
        other = next((c for c in same if c.run.split(":")[0] != engine), None)
        base = next(c for c in same if c.run == first_run)
        metrics = " | ".join(f"{cell.mean(m):.3f}" for m in METRICS)
        rows.append(
            f"| {cell.run} | {cell.configuration} | {cell.wall_s:.1f} | "
            f"{base.wall_s / cell.wall_s:.2f} | {cell.p50_latency():.2f} | {metrics} | "
            f"{differing(cell, same_engine)} / {differing(cell, other)} | {cell.load:.1f} |"
        )
    return "\n".join(rows)


def main() -> None:
    """Runs each `engine:concurrency` in turn and prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="vllm:1,vllm:8,local:1")
    parser.add_argument("--task", default="support-triage")
    parser.add_argument("--configs", default=CONFIGS)
    parser.add_argument("--limit", type=int, default=16)
    args = parser.parse_args()
    configs = args.configs.split(",")
    cells: list[Cell] = []
    for spec in args.runs.split(","):
        cells.extend(run_once(spec, args.task, configs, args.limit))
    print(table(cells))


if __name__ == "__main__":
    main()
