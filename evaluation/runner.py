"""The work behind `ladder eval`: backends, journal, progress, summaries and outputs."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.registry import AdapterRegistry, RegistryError
from evaluation.evaluate import ExampleResult, Journal, evaluate, run_key, select_examples
from evaluation.pricing import PriceTable
from evaluation.report import (
    ConfigurationSummary,
    Recommendation,
    Target,
    chart,
    forgetting_delta,
    markdown_table,
    recommend,
    summarise,
)
from evaluation.tasks import EvalExample, Task
from service.settings import Settings

PROBE_BASE = "base~general"


@dataclass
class Outcome:
    """An evaluation's results, ready to print, write and record."""

    task_name: str
    kind: str
    target: Target
    summaries: list[ConfigurationSummary]
    recommendation: Recommendation
    metric_names: list[str]
    key: str

    @classmethod
    def build(
        cls,
        task_name: str,
        kind: str,
        target: Target,
        summaries: list[ConfigurationSummary],
        key: str,
    ) -> Outcome:
        """Orders the metrics (the target's first) and applies the ladder's rule."""
        names = sorted({m for s in summaries for m in s.metrics})
        primary = [target.metric] if target.metric in names else []
        ordered = primary + [m for m in names if m not in primary]
        recommendation = recommend(summaries, target, kind)
        return cls(task_name, kind, target, summaries, recommendation, ordered, key)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Outcome:
        """Saved --json results, the rule applied anew (to re-render a report)."""
        summaries = [ConfigurationSummary.from_dict(row) for row in data["configurations"]]
        target = Target.parse(data["target"])
        return cls.build(data["task"], data["kind"], target, summaries, data["run"])

    def text(self) -> str:
        """The Markdown table and the recommendation."""
        table = markdown_table(self.summaries, self.metric_names)
        return f"{table}\n\nrecommendation: {self.recommendation.reason}"

    def write(self, folder: Path, as_json: Path | None) -> None:
        """Writes report.md, chart.png and, when asked, the JSON results."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "report.md").write_text(
            f"# {self.task_name}\n\n{self.text()}\n", encoding="utf-8"
        )
        chart(
            self.summaries,
            self.target,
            f"{self.task_name}: {self.target.metric} vs cost",
            folder / "chart.png",
        )
        if as_json is not None:
            as_json.parent.mkdir(parents=True, exist_ok=True)
            as_json.write_text(json.dumps(self.as_dict(), indent=2) + "\n", encoding="utf-8")

    def as_dict(self) -> dict[str, Any]:
        """Plain data for --json."""
        return {
            "task": self.task_name,
            "kind": self.kind,
            "target": str(self.target),
            "run": self.key,
            "configurations": [s.as_dict() for s in self.summaries],
            "recommendation": {
                "chosen": self.recommendation.chosen,
                "reason": self.recommendation.reason,
            },
        }

    def record(self, registry: AdapterRegistry) -> None:
        """Stores each adapter configuration's results in its adapter's manifest."""
        for summary in self.summaries:
            if not summary.adapter:
                continue
            try:
                adapter = registry.resolve(summary.adapter)
            except RegistryError:
                continue
            evaluations = adapter.manifest().get("evaluations", {})
            evaluations[self.task_name] = {
                "configuration": summary.name,
                "run": self.key,
                **summary.as_dict(),
            }
            registry.record(adapter.ref, "evaluations", evaluations)


class EvalRun:
    """One evaluation: which service, which examples, which journal."""

    def __init__(
        self,
        settings: Settings,
        task: Task,
        chosen: list[str],
        target: Target,
        seed: int,
        limit: int | None,
        url: str | None,
    ) -> None:
        self.settings, self.task, self.chosen, self.target = settings, task, chosen, target
        self.seed, self.limit, self.url = seed, limit, url
        self.registry = AdapterRegistry(settings.adapters_root)
        self.backend: Any = None
        self.adapters: dict[str, str | None] = {}
        self.probes: list[str] = []
        self.general: Task | None = None
        self.general_examples: list[EvalExample] = []

    def prepare(
        self,
        general: Task | None,
        general_limit: int | None,
        probes_of: Callable[..., dict[str, Any]],
        check_leakage: Callable[..., None],
    ) -> None:
        """Builds the backend, checks the configurations exist and nothing leaked."""
        from service.cli.common import fail
        from service.cli.eval_backends import in_process, over_http
        from service.routing.configs import load_configurations

        probes: dict[str, Any] = {}
        if self.url is not None:
            self.backend = over_http(self.url)
            known = self.backend.adapters()
            definitions = {name: self.url for name in self.chosen}
        else:
            configs = load_configurations(self.settings.config, self.registry.names(), None)
            known = {n: c.adapter for n, c in configs.configurations.items()}
            definitions = {
                n: configs.configurations[n].model_dump_json() for n in self.chosen if n in known
            }
            if general is not None:
                probes = probes_of(configs.configurations, self.chosen, general)
                self.probes, self.general = list(probes), general
                self.general_examples = select_examples(general, general_limit, self.seed)
        missing = [name for name in self.chosen if name not in known]
        if missing:
            raise fail(
                f"unknown configurations: {', '.join(missing)} (known: {', '.join(sorted(known))})"
            )
        self.adapters = {name: known[name] for name in self.chosen}
        check_leakage(self.task, self.adapters, self.registry)
        if self.backend is None:
            self.backend = in_process(self.settings, probes or None, serve_only=self.chosen)
        for name, ref in self.adapters.items():
            if ref:
                with contextlib.suppress(RegistryError):
                    definitions[name] += self.registry.resolve(ref).ref
        self.examples = select_examples(self.task, self.limit, self.seed)
        self.key = run_key(self.task, definitions, self.seed, self.limit)
        self.journal = Journal.open(
            self.settings.data_dir / "eval" / f"journal-{self.task.name}-{self.key}.jsonl"
        )

    def _run(
        self, task: Task, names: list[str], examples: list[EvalExample], journal: Journal
    ) -> dict[str, list[ExampleResult]]:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns) as bar:
            progress = bar.add_task(f"{task.name}", total=len(names) * len(examples))

            def advance(result: ExampleResult, fresh: bool) -> None:
                bar.update(progress, advance=1, description=f"{task.name}: {result.configuration}")

            return evaluate(task, names, self.backend, journal, examples, self.seed, advance)

    def execute(self) -> Outcome:
        """Answers every example (journaled ones are skipped) and summarises."""
        prices = PriceTable.load()
        results = self._run(self.task, self.chosen, self.examples, self.journal)
        summaries = [summarise(n, results[n], prices, self.adapters[n]) for n in self.chosen]
        if self.general is not None and len(self.probes) > 1:
            general_key = f"{self.key}-general"
            journal = Journal.open(
                self.journal.path.with_name(f"journal-general-{general_key}.jsonl")
            )
            probe_results = self._run(self.general, self.probes, self.general_examples, journal)
            before = summarise(PROBE_BASE, probe_results[PROBE_BASE], prices, None)
            for summary in summaries:
                probe = f"{summary.name}~general"
                if probe in probe_results:
                    after = summarise(probe, probe_results[probe], prices, summary.adapter)
                    summary.forgetting = dict(
                        forgetting_delta(
                            after.value("contains_answer"), before.value("contains_answer")
                        )
                    )
        return Outcome.build(self.task.name, self.task.kind, self.target, summaries, self.key)

    def close(self) -> None:
        """Stops the in-process app or closes the HTTP pool."""
        if self.backend is not None:
            self.backend.close()
