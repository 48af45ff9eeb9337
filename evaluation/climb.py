"""`ladder climb`: the ladder walked for the user, cheapest rung first.

Baseline, then each rung the task's pieces allow, stopping at the first whose 95 % interval meets
the target; a LoRA is trained only when none does, on a behaviour task with a training split (a
knowledge gap is never trained for), with a replay mix of the base model's own answers to general
prompts so the adapter keeps general ability, and measured for forgetting with and without it.
Every answer is journaled and training checkpointed, so a killed climb resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from adapters.base_model import BaseModel, BaseModelUnavailable, resolve_base_model
from adapters.registry import AdapterRegistry
from adapters.train import TrainingOptions
from evaluation.backends import Backend
from evaluation.climb_plan import (
    Plan,
    Rung,
    adapter_rung,
    estimate,
    lower_rungs,
    order_by_cost,
    raw_definition,
)
from evaluation.climb_report import (
    ClimbOutcome,
    RungResult,
    adapter_choice,
    best_lower,
    verdict,
)
from evaluation.journal import Journal
from evaluation.pricing import PriceTable
from evaluation.report import ConfigurationSummary, Target, diagnose, forgetting_delta, summarise
from evaluation.runner import PROBE_BASE, evaluate, forgetting_probes, select_examples
from evaluation.tasks import EvalExample, Task, TaskError, load_task
from service.routing.configs import Configuration, ConfigurationError, load_configurations
from service.settings import Settings

GENERAL_TASK = "general"
REPLAY_LOSS_WORDS = {
    "answers": "the base's answers learned token by token",
    "distill": "the base's next-token distributions learned by distillation",
}
StartApp = Callable[[Settings, Mapping[str, Configuration] | None, Collection[str]], Backend]
# Rough speeds of the bundled model on the local engine, 2 CPU cores (README), for --dry-run.
LOCAL_SPEED = (150.0, 12.0)  # prefill, decode tokens per second


class Display(Protocol):
    """Where the climb shows its progress."""

    def rung(self, index: int, total: int, name: str, examples: int, eta_s: float) -> None: ...
    def answered(self) -> None: ...
    def step(self, step: int, total: int, loss: float) -> None: ...
    def say(self, line: str) -> None: ...


@dataclass(frozen=True)
class ClimbOptions:
    """How to climb: the target and what the climb may spend."""

    target: Target
    seed: int = 0
    limit: int | None = None
    general_limit: int | None = None  # the whole general set
    budget_minutes: float | None = None
    max_cost_per_1k: float | None = None
    replay_fraction: float = 0.2
    compare_replay: bool = True
    replay_prompts: Path | None = None
    # An adapter keeping less of the base's general score than this is never the winner.
    min_general_kept: float = 0.8
    training: TrainingOptions = field(default_factory=TrainingOptions)
    concurrency: int = 1
    speed: tuple[float, float] = LOCAL_SPEED
    rungs: tuple[str, ...] = ()  # the lower rungs to try; empty: every one the task allows


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Climb:
    """One climb of one task; `plan` says what it would do, `run` does it."""

    def __init__(
        self,
        settings: Settings,
        task: Task,
        tasks_dir: Path,
        options: ClimbOptions,
        display: Display,
    ) -> None:
        self.settings, self.task, self.tasks_dir = settings, task, tasks_dir
        self.options, self.display = options, display
        self.registry = AdapterRegistry(settings.adapters_root)
        try:
            self.base: BaseModel = resolve_base_model(settings.base_model, settings.cache_dir)
        except BaseModelUnavailable as error:
            raise TaskError(str(error)) from error
        # Answers of another engine or base model are another climb's.
        self.key = _digest(
            task.name,
            options.seed,
            options.limit,
            self.base.fingerprint.files_sha256,
            settings.engine,
        )
        self.folder = settings.data_dir / "climb" / f"{task.name}-{self.key}"
        self.prices = PriceTable.load()
        self.examples = select_examples(task, options.limit, options.seed)
        self.started = time.monotonic()
        self._before: float | None = None  # seconds of earlier runs of this climb
        self._start_app: StartApp | None = None
        try:
            self.user = load_configurations(settings.config, self.registry.names(), None)
        except ConfigurationError as error:
            raise TaskError(str(error)) from error

    # -- planning -------------------------------------------------------------------------

    def plan(self) -> Plan:
        """The lower rungs in cost order, with estimates; rungs over the cost ceiling left out."""
        rungs, left_out = lower_rungs(self.task, self.user.configurations)
        if self.options.rungs:
            for rung in rungs:
                if rung.id not in self.options.rungs:
                    left_out[rung.id] = "not among --rungs"
            rungs = [r for r in rungs if r.id in self.options.rungs]
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(self.base.folder))

        def count(text: str) -> int:
            return len(tokenizer.encode(text, add_special_tokens=False))

        estimates = {
            r.name: estimate(
                r, self.task, count, self.prices, len(self.examples), self.options.speed
            )
            for r in rungs
        }
        ceiling = self.options.max_cost_per_1k
        kept = []
        for rung in rungs:
            cost = estimates[rung.name].cost_per_1k
            if ceiling is not None and cost > ceiling:
                left_out[rung.id] = f"estimated ${cost:.4f} per 1k calls, over --max-cost-per-1k"
            else:
                kept.append(rung)
        return Plan(order_by_cost(kept, estimates), left_out, estimates)

    def trains(self) -> str | None:
        """Why the climb could not train an adapter here, or None when it could."""
        if self.task.kind == "knowledge":
            return (
                "training is not proposed for a knowledge gap: retrieval closes it, an adapter"
                " does not"
            )
        if self.task.train is None:
            return "the task declares no training split (`train:`)"
        return None

    def dry_run(self) -> str:
        """The plan, its estimated time and cost, without answering or training anything."""
        from evaluation.climb_dry_run import describe

        return describe(self)

    # -- the climb ------------------------------------------------------------------------

    def _spent(self) -> float:
        """Seconds spent on this climb by every run of it, this one included (kept on disk at
        each rung's end, so a resumed climb reports the whole climb's time)."""
        path = self.folder / "elapsed.json"
        if self._before is None:
            self._before = json.loads(path.read_text())["seconds"] if path.is_file() else 0.0
        spent = self._before + time.monotonic() - self.started
        self.folder.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"seconds": round(spent, 1)}), encoding="utf-8")
        return spent

    def _over_budget(self) -> bool:
        budget = self.options.budget_minutes
        return budget is not None and time.monotonic() - self.started > budget * 60

    def _measure(
        self,
        backend: Backend,
        rung: Rung,
        index: int,
        total: int,
        task: Task | None = None,
        examples: Sequence[EvalExample] | None = None,
    ) -> ConfigurationSummary:
        task = task or self.task
        chosen = list(examples if examples is not None else self.examples)
        journal = Journal.open(
            self.folder / f"journal-{task.name}-{_digest(rung.definition())}.jsonl"
        )
        self.display.rung(index, total, rung.name, len(chosen), 0.0)
        results = evaluate(
            task,
            [rung.name],
            backend,
            journal,
            chosen,
            self.options.seed,
            lambda _result, _fresh: self.display.answered(),
            concurrency=self.options.concurrency,
        )
        self._spent()
        adapter = rung.configuration.adapter
        return summarise(rung.name, results[rung.name], self.prices, adapter)

    def run(self, start_app: StartApp) -> ClimbOutcome:
        """Walks the rungs; trains and measures the adapter only when no lower rung meets."""
        target = self.options.target
        outcome = ClimbOutcome(self.task.name, self.task.kind, target)
        self._start_app = start_app
        plan = self.plan()
        for rung_id, reason in plan.left_out.items():
            outcome.notes.append(f"left out: {rung_id} ({reason})")
        extra = {r.name: r.configuration for r in plan.rungs if r.raw is not None}
        served = [r.name for r in plan.rungs if r.raw is None]
        backend = self._open(extra, served)
        try:
            for i, rung in enumerate(plan.rungs, 1):
                if self._over_budget():
                    return self._stopped(outcome, f"the budget ran out before {rung.id}")
                summary = self._measure(backend, rung, i, len(plan.rungs))
                result = RungResult(rung, summary, verdict(summary, target))
                outcome.results.append(result)
                self.display.say(result.line(target))
                if result.verdict == "meets":
                    return self._finish(outcome, result)
                if result.verdict == "point estimate only":
                    outcome.notes.append(
                        f"{rung.id} meets {target} on its point estimate only; its interval's"
                        " bound does not, so the climb goes on"
                    )
        finally:
            backend.close()
        refusal = self.trains()
        summaries = [r.summary for r in outcome.results]
        gap = diagnose(summaries, target, self.task.kind)
        if refusal is not None:
            if self.task.kind == "knowledge" and "knowledge failure" not in gap:
                refusal = (
                    "the climb does not train on a knowledge task; to teach the model to use the"
                    " passages, give it a behaviour task whose training split pairs questions and"
                    " passages with answers"
                )
            outcome.conclusion = f"no rung meets {target}: {gap}; {refusal}"
            return self._finish(outcome, None)
        if self._over_budget():
            return self._stopped(outcome, "the budget ran out before training")
        return self._adapter_rungs(outcome, plan)

    def _stopped(self, outcome: ClimbOutcome, why: str) -> ClimbOutcome:
        self._define(outcome)
        outcome.stopped = why
        outcome.conclusion = f"stopped: {why}; run the same command again to resume"
        outcome.seconds = self._spent()
        return outcome

    def _define(self, outcome: ClimbOutcome) -> None:
        for result in outcome.results:
            outcome.definitions[result.rung.name] = self._raw(result.rung)

    def _finish(self, outcome: ClimbOutcome, winner: RungResult | None) -> ClimbOutcome:
        self._define(outcome)
        outcome.winner = winner
        if winner is not None:
            outcome.conclusion = (
                f"{winner.rung.name} ({winner.rung.id}) is the cheapest rung that meets"
                f" {self.options.target}"
                + (": no adapter was trained" if not winner.rung.is_adapter else "")
            )
        outcome.seconds = self._spent()
        return outcome

    # -- the adapter rung -----------------------------------------------------------------

    def _variants(self) -> list[tuple[str, float]]:
        fraction = self.options.replay_fraction
        if fraction <= 0:
            return [("no-replay", 0.0)]
        return [("replay", fraction)] + (
            [("no-replay", 0.0)] if self.options.compare_replay else []
        )

    def _adapter_rungs(self, outcome: ClimbOutcome, plan: Plan) -> ClimbOutcome:
        from evaluation.climb_training import train_variant

        general = self._general()
        for variant, fraction in self._variants():
            outcome.trained[variant] = train_variant(self, variant, fraction, general)
        if self.options.replay_fraction > 0:
            how = REPLAY_LOSS_WORDS[self.options.training.replay_loss]
            outcome.notes.append(
                f"replay: {self.options.replay_fraction:g} of the training mix, {how}"
            )
        best = best_lower(outcome.results, self.options.target)
        primary = self._variants()[0][0]
        rungs = []
        for variant, ref in outcome.trained.items():
            rungs.append(adapter_rung(self.task, ref, variant, None, self._raw))
            if best is not None and variant == primary:
                rungs.append(adapter_rung(self.task, ref, variant, best.rung, self._raw))
        configs = {r.name: r.configuration for r in rungs}
        probes = forgetting_probes(configs, list(configs), general)
        general_examples = select_examples(general, self.options.general_limit, self.options.seed)
        backend = self._open({**configs, **probes}, [])
        try:
            for i, rung in enumerate(rungs, 1):
                summary = self._measure(backend, rung, i, len(rungs))
                outcome.results.append(
                    RungResult(rung, summary, verdict(summary, self.options.target))
                )
                self.display.say(outcome.results[-1].line(self.options.target))
            self._forgetting(backend, outcome, probes, general, general_examples)
        finally:
            backend.close()
        least = self.options.min_general_kept
        winner, considered, forgets = adapter_choice(outcome.results, primary, least)
        if winner is not None:
            return self._finish(outcome, winner)
        target = self.options.target
        gap = diagnose([r.summary for r in considered], target, self.task.kind)
        outcome.conclusion = f"no rung meets {target}, the adapter included: {gap}" + "".join(
            f"; {r.rung.name} meets it but keeps {r.general_kept:.0%} of the base's general"
            f" score, under the {least:.0%} required"
            for r in forgets
        )
        return self._finish(outcome, None)

    def _open(self, extra: Mapping[str, Configuration], served: Collection[str]) -> Backend:
        """The service's app serving these rungs; a one-line TaskError when it cannot start."""
        assert self._start_app is not None
        try:
            return self._start_app(self.settings, dict(extra) or None, served)
        except ConfigurationError as error:
            hint = (
                f" (build the index first: ladder ingest DOCS --collection {self.task.collection})"
                if self.task.collection and "collection" in str(error)
                else ""
            )
            raise TaskError(f"{error}{hint}") from None

    def _raw(self, rung: Rung) -> dict[str, Any]:
        return raw_definition(rung, self.settings.config)

    def _general(self) -> Task:
        try:
            return load_task(self.tasks_dir, GENERAL_TASK)
        except TaskError as error:
            raise TaskError(
                f"the adapter rung's forgetting check needs the general task: {error}"
            ) from None

    def _forgetting(
        self,
        backend: Backend,
        outcome: ClimbOutcome,
        probes: Mapping[str, Configuration],
        general: Task,
        examples: Sequence[EvalExample],
    ) -> None:
        """The general set without an adapter and with each adapter rung's adapter: once per
        adapter (rungs sharing one, `adapter` and `adapter+X`, share its probe)."""
        by_adapter: dict[str | None, float] = {}
        scores: dict[str, float] = {}
        for i, (name, config) in enumerate(probes.items(), 1):
            if config.adapter not in by_adapter:
                probe = Rung("general", config)
                summary = self._measure(backend, probe, i, len(probes), general, examples)
                by_adapter[config.adapter] = summary.value("contains_answer")
            scores[name] = by_adapter[config.adapter]
        before = scores[PROBE_BASE]
        for result in outcome.results:
            after = scores.get(f"{result.rung.name}~general")
            if after is not None:
                result.summary.forgetting = dict(forgetting_delta(after, before))


def options_digest(options: TrainingOptions, **more: Any) -> str:
    """Identifies a training run: its options and what it trains on."""
    return _digest(asdict(options), more)
