"""The ladder evaluation: every configuration over a task's held-out examples, resumably.

Each answered example is appended to a journal keyed by the run (task, configurations and their
definitions, seed, limit); a killed run reads the journal back and continues where it stopped.
"""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from adapters.base_model import BaseModelUnavailable, resolve_base_model
from adapters.registry import AdapterRegistry, RegistryError
from evaluation import metrics
from evaluation.backends import Backend, Reply, chat_concurrently, over_http
from evaluation.journal import ExampleResult, Journal, run_key
from evaluation.leakage import check_leakage
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
from evaluation.tasks import EvalExample, Task, TaskError
from service.routing import plan as router_plan
from service.routing.configs import Configuration, Generation, load_configurations
from service.settings import Settings

GENERAL_TASK = "general"
PROBE_BASE = "base~general"

StartApp = Callable[[Settings, Mapping[str, Configuration] | None, Collection[str]], Backend]
"""Starts the service's app in process, with extra configurations, serving only the named ones."""


def score(task: Task, example: EvalExample, reply: Reply) -> dict[str, float]:
    """The task's metrics for one answer, each 0/1 or a score in [0, 1]."""
    if task.kind == "behaviour":
        fields = metrics.field_accuracy(reply.text, example.gold)
        scores = {f"field_{name}": float(right) for name, right in fields.items()}
        scores["format_validity"] = float(metrics.format_valid(reply.text, task.schema))
        scores["field_accuracy"] = sum(fields.values()) / max(1, len(fields))
        return scores
    scores = {"contains_answer": float(metrics.contains_answer(reply.text, example.gold))}
    if task.kind == "knowledge":
        scores.update(_knowledge_scores(task, example, reply))
    return scores


def _knowledge_scores(task: Task, example: EvalExample, reply: Reply) -> dict[str, float]:
    """Retrieval, recitation of the router's instructions, and (when asked for) citations."""
    scores = {
        "recites_instruction": float(
            metrics.recites_instruction(reply.text, router_plan.INSTRUCTIONS)
        )
    }
    if reply.sources and example.source:
        scores[f"hit_at_{task.k}"] = float(metrics.hit_at_k(reply.sources, example.source, task.k))
        scores["mrr"] = metrics.reciprocal_rank(reply.sources, example.source)
    if reply.cited is not None:
        cited_sources = [reply.sources[n - 1] for n in reply.cited if 0 < n <= len(reply.sources)]
        scores["cites_a_source"] = float(bool(cited_sources))
        scores["cites_gold_source"] = float(example.source in cited_sources)
    return scores


def select_examples(task: Task, limit: int | None, seed: int) -> list[EvalExample]:
    """A seeded sample of the held-out examples (all of them without a limit)."""
    chosen = list(task.examples)
    if limit is not None and limit < len(chosen):
        chosen = sorted(random.Random(seed).sample(chosen, limit), key=lambda e: e.id)
    return chosen


def evaluate(
    task: Task,
    configurations: Sequence[str],
    backend: Backend,
    journal: Journal,
    examples: Sequence[EvalExample],
    seed: int,
    on_result: Callable[[ExampleResult, bool], None] | None = None,
    concurrency: int = 1,
) -> dict[str, list[ExampleResult]]:
    """Answers every example under each configuration in turn, up to `concurrency` at once;
    journaled ones are not asked again. Each answer is journaled and reported (`on_result`) in
    the caller's thread as it arrives; the results keep the examples' order."""
    report = on_result or (lambda result, fresh: None)
    results: dict[str, list[ExampleResult]] = {}
    for name in configurations:
        done = {e.id: journal.done[(name, e.id)] for e in examples if (name, e.id) in journal.done}
        for result in done.values():
            report(result, False)
        asking = [e for e in examples if e.id not in done]
        conversations = [e.messages for e in asking]
        for index, reply in chat_concurrently(backend, name, conversations, seed, concurrency):
            example = asking[index]
            result = ExampleResult(name, example.id, asdict(reply), score(task, example, reply))
            journal.add(result)
            report(done.setdefault(example.id, result), True)
        results[name] = [done[e.id] for e in examples]
    return results


def forgetting_probes(
    configs: Mapping[str, Configuration], chosen: Sequence[str], general: Task
) -> dict[str, Configuration]:
    """Derived rungs for the forgetting check: the general prompt with and without each adapter."""
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


@dataclass
class EvaluationOutcome:
    """An evaluation's results, ready to print, write and record."""

    task_name: str
    kind: str
    target: Target
    summaries: list[ConfigurationSummary]
    recommendation: Recommendation
    metric_names: list[str]
    key: str
    base_model: dict[str, Any] | None = None  # source and fingerprint; None: a remote server's

    @classmethod
    def build(
        cls,
        task_name: str,
        kind: str,
        target: Target,
        summaries: list[ConfigurationSummary],
        key: str,
        base_model: dict[str, Any] | None = None,
    ) -> EvaluationOutcome:
        """Orders the metrics (the target's first) and applies the ladder's rule."""
        names = sorted({m for s in summaries for m in s.metrics})
        primary = [target.metric] if target.metric in names else []
        ordered = primary + [m for m in names if m not in primary]
        recommendation = recommend(summaries, target, kind)
        return cls(task_name, kind, target, summaries, recommendation, ordered, key, base_model)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvaluationOutcome:
        """Saved --json results, the rule applied anew (to re-render a report)."""
        summaries = [ConfigurationSummary.from_dict(row) for row in data["configurations"]]
        target = Target.parse(data["target"])
        return cls.build(
            data["task"], data["kind"], target, summaries, data["run"], data.get("base_model")
        )

    @classmethod
    def merged(cls, outcomes: Sequence[EvaluationOutcome]) -> EvaluationOutcome:
        """Several saved runs of one task, target and base model as one report, the rule applied
        anew; a configuration in a later run replaces the same one in an earlier run."""
        first = outcomes[0]
        for other in outcomes[1:]:
            if (other.task_name, str(other.target)) != (first.task_name, str(first.target)):
                raise ValueError(
                    f"runs of {first.task_name} ({first.target}) and {other.task_name}"
                    f" ({other.target}) cannot share a report"
                )
            if other.base_model and first.base_model and other.base_model != first.base_model:
                raise ValueError("the runs used different base models")
        by_name = {s.name: s for outcome in outcomes for s in outcome.summaries}
        key = "+".join(outcome.key for outcome in outcomes)
        base_model = next((o.base_model for o in outcomes if o.base_model), None)
        return cls.build(
            first.task_name, first.kind, first.target, list(by_name.values()), key, base_model
        )

    def text(self) -> str:
        """The Markdown table and the recommendation (and the base model, when known)."""
        table = markdown_table(self.summaries, self.metric_names)
        text = f"{table}\n\nrecommendation: {self.recommendation.reason}"
        if self.base_model:
            fingerprint = self.base_model["fingerprint"]
            text += (
                f"\n\nbase model: {self.base_model['source']} ({fingerprint['architecture']},"
                f" {fingerprint['files_sha256'][:12]})"
            )
        return text

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
            "base_model": self.base_model,
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
    """One evaluation: `connect` to a server or `start` the app in process, then `execute`."""

    journal: Journal
    key: str

    def __init__(
        self,
        settings: Settings,
        task: Task,
        chosen: list[str],
        target: Target,
        seed: int,
        limit: int | None,
        concurrency: int = 1,
    ) -> None:
        self.settings, self.task, self.chosen, self.target = settings, task, chosen, target
        self.seed, self.limit, self.concurrency = seed, limit, concurrency  # examples in flight
        self.registry = AdapterRegistry(settings.adapters_root)
        self.backend: Backend | None = None
        self.adapters: dict[str, str | None] = {}
        self.examples: list[EvalExample] = []
        self.probes: list[str] = []
        self.general: Task | None = None
        self.general_examples: list[EvalExample] = []
        self.base_model: dict[str, Any] | None = None

    def connect(self, url: str, api_key: str | None = None) -> None:
        """Evaluates a running server's rungs (no forgetting check); TaskError if refused."""
        server = over_http(url, api_key)
        self.backend = server
        self._admit(server.adapters(), {name: url for name in self.chosen})

    def start(self, start_app: StartApp, general: Task | None, general_limit: int | None) -> None:
        """Evaluates this machine's rungs in the service's own app; TaskError if refused."""
        loaded = load_configurations(self.settings.config, self.registry.names(), None)
        configs = loaded.configurations
        known = {name: config.adapter for name, config in configs.items()}
        try:
            base = resolve_base_model(self.settings.base_model, self.settings.cache_dir)
        except BaseModelUnavailable as error:
            raise TaskError(str(error)) from error
        self.base_model = {"source": base.source, "fingerprint": base.fingerprint.as_dict()}
        # Results on another base model are another run: its fingerprint joins the run's key.
        definitions = {
            n: configs[n].model_dump_json() + base.fingerprint.files_sha256
            for n in self.chosen
            if n in known
        }
        probes: dict[str, Configuration] = {}
        if general is not None:
            probes = forgetting_probes(configs, self.chosen, general)
            self.probes, self.general = list(probes), general
            self.general_examples = select_examples(general, general_limit, self.seed)
        self._admit(known, definitions)
        self.backend = start_app(self.settings, probes or None, self.chosen)

    def _admit(self, known: Mapping[str, str | None], definitions: dict[str, str]) -> None:
        """Refuses unknown configurations and leaked held-out data; keys the run and its journal."""
        missing = [name for name in self.chosen if name not in known]
        if missing:
            raise TaskError(
                f"unknown configurations: {', '.join(missing)} (known: {', '.join(sorted(known))})"
            )
        self.adapters = {name: known[name] for name in self.chosen}
        check_leakage(self.task, self.adapters, self.registry)
        for name, ref in self.adapters.items():
            if ref:
                with contextlib.suppress(RegistryError):
                    definitions[name] += self.registry.resolve(ref).ref
        self.examples = select_examples(self.task, self.limit, self.seed)
        self.key = run_key(self.task, definitions, self.seed, self.limit)
        self.journal = Journal.open(
            self.settings.data_dir / "eval" / f"journal-{self.task.name}-{self.key}.jsonl"
        )

    def _answer(
        self, task: Task, names: list[str], examples: list[EvalExample], journal: Journal
    ) -> dict[str, list[ExampleResult]]:
        """`evaluate` under a progress bar."""
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        assert self.backend is not None, "connect or start the run first"
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

            return evaluate(
                task, names, self.backend, journal, examples, self.seed, advance, self.concurrency
            )

    def execute(self) -> EvaluationOutcome:
        """Answers every example (journaled ones are skipped) and summarises."""
        prices = PriceTable.load()
        results = self._answer(self.task, self.chosen, self.examples, self.journal)
        summaries = [summarise(n, results[n], prices, self.adapters[n]) for n in self.chosen]
        if self.general is not None and len(self.probes) > 1:
            self._measure_forgetting(summaries, prices)
        return EvaluationOutcome.build(
            self.task.name, self.task.kind, self.target, summaries, self.key, self.base_model
        )

    def _measure_forgetting(
        self, summaries: list[ConfigurationSummary], prices: PriceTable
    ) -> None:
        """The general task with and without each adapter: the change goes into its summary."""
        assert self.general is not None
        general_key = f"{self.key}-general"
        journal = Journal.open(self.journal.path.with_name(f"journal-general-{general_key}.jsonl"))
        probe_results = self._answer(self.general, self.probes, self.general_examples, journal)
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

    def close(self) -> None:
        """Stops the in-process app or closes the HTTP pool."""
        if self.backend is not None:
            self.backend.close()
