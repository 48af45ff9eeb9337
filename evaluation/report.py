"""Summaries of an evaluation: per-configuration figures, the recommendation, table and chart."""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evaluation import metrics
from evaluation.journal import ExampleResult
from evaluation.pricing import PriceTable

_TARGET = re.compile(r"^\s*([a-z_0-9]+)\s*(>=|<=|>|<)\s*([0-9.]+)\s*$")
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}


@dataclass(frozen=True)
class Target:
    """A goal such as `format_validity>=0.9`."""

    metric: str
    op: str
    value: float

    @classmethod
    def parse(cls, text: str) -> Target:
        """Parses `metric>=x` (also <=, >, <); raises ValueError otherwise."""
        match = _TARGET.match(text)
        if match is None:
            raise ValueError(f"a target looks like metric>=0.9, not {text!r}")
        return cls(match.group(1), match.group(2), float(match.group(3)))

    def met_by(self, value: float) -> bool:
        """Whether a measured value meets the target (never for a missing value)."""
        return not math.isnan(value) and _COMPARE[self.op](value, self.value)

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"


@dataclass
class ConfigurationSummary:
    """What one configuration achieved and cost."""

    name: str
    n: int
    metrics: dict[str, metrics.Interval]
    prompt_tokens: float
    completion_tokens: float
    few_shot_tokens: float
    context_tokens: float
    p50_latency_s: float
    cost_per_1k: float
    self_hosted_per_1k: float
    adapter: str | None = None
    forgetting: dict[str, float] = field(default_factory=dict)
    # Decoding speed with prefill included, so a constrained rung sits beside its unconstrained
    # one; NaN in results saved before it was measured.
    completion_tokens_per_s: float = math.nan

    def value(self, metric: str) -> float:
        """A metric's point estimate, NaN when not measured."""
        found = self.metrics.get(metric)
        return found.value if found is not None else math.nan

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        data = asdict(self)
        data["metrics"] = {name: asdict(interval) for name, interval in self.metrics.items()}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConfigurationSummary:
        """The inverse of as_dict."""
        intervals = {name: metrics.Interval(**i) for name, i in data["metrics"].items()}
        return cls(**{**data, "metrics": intervals})

    def forgetting_text(self) -> str:
        """`general 1.00 -> 0.40 (-0.60)`, or `-` when not measured."""
        if not self.forgetting:
            return "-"
        f = self.forgetting
        return f"general {f['general_before']:.2f} → {f['general_after']:.2f} ({f['delta']:+.2f})"


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def summarise(
    name: str, results: Sequence[ExampleResult], prices: PriceTable, adapter: str | None
) -> ConfigurationSummary:
    """Aggregates one configuration's results: metrics with 95 % CIs, tokens, cost, latency."""
    names = sorted({metric for result in results for metric in result.scores})
    intervals = {}
    for metric in names:
        values = [r.scores[metric] for r in results if metric in r.scores]
        binary = all(v in (0.0, 1.0) for v in values)
        intervals[metric] = (
            metrics.wilson_interval(int(sum(values)), len(values))
            if binary
            else metrics.mean_interval(values)
        )
    replies = [r.reply for r in results]
    prompt = _mean([float(r["prompt_tokens"]) for r in replies])
    completion = _mean([float(r["completion_tokens"]) for r in replies])
    latency = metrics.median([float(r["latency_s"]) for r in replies])
    return ConfigurationSummary(
        name=name,
        n=len(results),
        metrics=intervals,
        prompt_tokens=prompt,
        completion_tokens=completion,
        few_shot_tokens=_mean([float(r["few_shot_tokens"]) for r in replies]),
        context_tokens=_mean([float(r["context_tokens"]) for r in replies]),
        p50_latency_s=latency,
        cost_per_1k=prices.hosted_per_1k(prompt, completion, fine_tuned=adapter is not None),
        self_hosted_per_1k=prices.self_hosted_per_1k(latency),
        adapter=adapter,
        completion_tokens_per_s=metrics.median(
            [float(r["completion_tokens"]) / r["latency_s"] for r in replies if r["latency_s"] > 0]
        ),
    )


@dataclass(frozen=True)
class Recommendation:
    """The ladder's answer: the cheapest configuration that meets the target, or why none does."""

    chosen: str | None
    reason: str


def recommend(
    summaries: Sequence[ConfigurationSummary], target: Target, kind: str
) -> Recommendation:
    """Stops at the cheapest rung that meets the target; ties go to the earlier rung given."""
    passing = [(i, s) for i, s in enumerate(summaries) if target.met_by(s.value(target.metric))]
    if passing:

        def cost(item: tuple[int, ConfigurationSummary]) -> tuple[bool, float, int]:
            index, summary = item
            missing = math.isnan(summary.cost_per_1k)
            return missing, 0.0 if missing else summary.cost_per_1k, index

        _, best = min(passing, key=cost)
        others = [s.name for _, s in passing if s is not best]
        note = (
            " (its cost is unknown)"
            if math.isnan(best.cost_per_1k)
            else (f" at ${best.cost_per_1k:.4f} per 1,000 calls")
        )
        also = f"; also meeting it, at higher cost: {', '.join(others)}" if others else ""
        return Recommendation(best.name, f"{best.name} meets {target}{note}{also}")
    return Recommendation(
        None, f"no configuration meets {target}: {diagnose(summaries, target, kind)}"
    )


def diagnose(summaries: Sequence[ConfigurationSummary], target: Target, kind: str) -> str:
    """Says whether the gap is behaviour (format, use of context) or knowledge (retrieval)."""
    if not summaries:
        return "nothing was measured"
    scored = [s for s in summaries if not math.isnan(s.value(target.metric))]
    best = max(scored, key=lambda s: s.value(target.metric)) if scored else summaries[0]
    closest = (
        f"the closest is {best.name} at {best.value(target.metric):.2f}"
        if scored
        else f"no configuration measured {target.metric}"
    )
    adapter_tried = any(s.adapter for s in summaries)
    if kind == "knowledge":
        hits = [s.value(m) for s in summaries for m in s.metrics if m.startswith("hit_at_")]
        if not hits:
            return f"{closest}; a knowledge failure: no configuration retrieves; add the RAG rung"
        if max(hits) >= 0.8:
            return (
                f"{closest}; a behaviour failure: retrieval finds the right passage but the"
                " answers do not use it; try a stronger prompt, a larger model, or an adapter"
                " trained to answer from context"
            )
        return (
            f"{closest}; a knowledge failure: retrieval misses the gold passage;"
            " fix the index or retrieval"
        )
    if kind == "behaviour" and best.value("format_validity") < 0.9:
        climb = (
            "the adapter rung was tried: train on more or cleaner data, or a larger rank or model"
            if adapter_tried
            else "climb to the adapter rung"
        )
        return f"{closest}; a behaviour failure: the output format does not hold; {climb}"
    return (
        f"{closest}: the format holds but the content is wrong; more or cleaner training data,"
        " or knowledge the model lacks"
    )


def markdown_table(summaries: Sequence[ConfigurationSummary], metric_names: Sequence[str]) -> str:
    """The evaluation table in Markdown."""
    head = [
        "configuration",
        *metric_names,
        "prompt tok",
        "few-shot tok",
        "context tok",
        "completion tok",
        "completion tok/s",
        "$/1k calls (hosted)",
        "$/1k (self-hosted)",
        "p50 latency",
        "forgetting",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summaries:
        cells = [s.name]
        for metric in metric_names:
            found = s.metrics.get(metric)
            cells.append(
                "n/a" if found is None else f"{found.value:.2f} [{found.low:.2f}, {found.high:.2f}]"
            )
        cells += [
            f"{s.prompt_tokens:.0f}",
            f"{s.few_shot_tokens:.0f}",
            f"{s.context_tokens:.0f}",
            f"{s.completion_tokens:.0f}",
            "-" if math.isnan(s.completion_tokens_per_s) else f"{s.completion_tokens_per_s:.1f}",
            f"{s.cost_per_1k:.4f}",
            f"{s.self_hosted_per_1k:.3f}",
            f"{s.p50_latency_s:.2f} s",
            s.forgetting_text(),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def chart(
    summaries: Sequence[ConfigurationSummary], target: Target, title: str, path: Path
) -> Path:
    """Metric vs cost per 1,000 calls, one point per configuration, the target as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=120)
    labelled: list[tuple[float, float]] = []
    widest = max((s.cost_per_1k for s in summaries if not math.isnan(s.cost_per_1k)), default=1.0)
    for s in summaries:
        interval = s.metrics.get(target.metric)
        if interval is None or math.isnan(s.cost_per_1k):
            continue
        error = [[interval.value - interval.low], [interval.high - interval.value]]
        axes.errorbar(s.cost_per_1k, interval.value, yerr=error, fmt="o", capsize=4)
        # A point close to one already labelled gets its label below, so labels never overlap.
        near = sum(
            abs(cost - s.cost_per_1k) < 0.05 * widest and abs(value - interval.value) < 0.05
            for cost, value in labelled
        )
        labelled.append((s.cost_per_1k, interval.value))
        axes.annotate(
            s.name,
            (s.cost_per_1k, interval.value),
            textcoords="offset points",
            xytext=(6, 6 - 12 * near),
            fontsize=9,
        )
    axes.axhline(target.value, linestyle="--", color="grey")
    # The target is labelled on its line, not in a legend that could hide a point.
    axes.annotate(
        f"target {target}",
        (1.0, target.value),
        xycoords=("axes fraction", "data"),
        textcoords="offset points",
        xytext=(-4, 4),
        ha="right",
        fontsize=9,
        color="grey",
    )
    axes.margins(x=0.2)
    axes.set_xlabel("hosted cost per 1,000 calls (USD)")
    axes.set_ylabel(target.metric)
    axes.set_ylim(-0.05, 1.05)
    axes.set_title(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def forgetting_delta(with_adapter: float, without: float) -> Mapping[str, float]:
    """General-ability score with and without the adapter, and the change."""
    return {
        "general_before": without,
        "general_after": with_adapter,
        "delta": with_adapter - without,
    }
