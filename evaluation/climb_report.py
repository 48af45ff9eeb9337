"""What a climb found: each rung's verdict, the winner, forgetting with and without replay, and
the files it writes (report, chart, the winning configuration, a draft experiment)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from evaluation.climb_plan import Rung
from evaluation.report import ConfigurationSummary, Target, chart, markdown_table

Verdict = Literal["meets", "point estimate only", "misses", "not measured"]


def verdict(summary: ConfigurationSummary, target: Target) -> Verdict:
    """`meets` when the whole 95 % interval's near end meets the target (its lower bound for
    `>=`, its upper for `<=`); `point estimate only` when only the measured value does."""
    found = summary.metrics.get(target.metric)
    if found is None or math.isnan(found.value):
        return "not measured"
    bound = found.low if target.op in (">=", ">") else found.high
    if target.met_by(bound):
        return "meets"
    return "point estimate only" if target.met_by(found.value) else "misses"


@dataclass
class RungResult:
    """One measured rung."""

    rung: Rung
    summary: ConfigurationSummary
    verdict: Verdict

    @property
    def general_kept(self) -> float:
        """The share of the base's general score an adapter rung keeps (1 when unmeasured)."""
        f = self.summary.forgetting
        return f["general_after"] / f["general_before"] if f and f["general_before"] > 0 else 1.0

    def line(self, target: Target) -> str:
        """`prompt (triage-prompt): field_accuracy 0.20 [0.14, 0.27]: misses`"""
        found = self.summary.metrics.get(target.metric)
        measured = (
            "n/a" if found is None else f"{found.value:.2f} [{found.low:.2f}, {found.high:.2f}]"
        )
        cost = self.summary.cost_per_1k
        return (
            f"{self.rung.id} ({self.rung.name}): {target.metric} {measured}, ${cost:.4f} per 1k"
            f" calls: {self.verdict}"
        )


@dataclass
class ClimbOutcome:
    """A finished (or stopped) climb."""

    task: str
    kind: str
    target: Target
    results: list[RungResult] = field(default_factory=list)
    winner: RungResult | None = None
    conclusion: str = ""
    notes: list[str] = field(default_factory=list)
    trained: dict[str, str] = field(default_factory=dict)  # variant -> adapter ref
    seconds: float = 0.0
    stopped: str | None = None  # why the climb stopped before its end (budget)
    # Each measured rung as a configurations file would hold it, to re-run with `ladder eval`.
    definitions: dict[str, dict[str, Any]] = field(default_factory=dict)

    def forgetting_lines(self) -> list[str]:
        """The general set before and after each adapter rung, replay and no replay side by side."""
        lines = []
        for result in self.results:
            f = result.summary.forgetting
            if f:
                lines.append(
                    f"{result.rung.name} ({result.rung.variant or 'no adapter'}): general"
                    f" {f['general_before']:.2f} → {f['general_after']:.2f}"
                    f" ({f['general_after'] / f['general_before']:.0%} of the base's)"
                    if f["general_before"] > 0
                    else f"{result.rung.name}: general {f['general_after']:.2f}"
                )
        return lines

    def text(self) -> str:
        """The walk, the table, forgetting and the conclusion, as Markdown."""
        summaries = [r.summary for r in self.results]
        names = sorted({m for s in summaries for m in s.metrics})
        ordered = [self.target.metric] + [m for m in names if m != self.target.metric]
        walk = "\n".join(f"{i}. {r.line(self.target)}" for i, r in enumerate(self.results, 1))
        parts = [f"target: {self.target} (a rung meets it when its 95 % interval's bound does)"]
        parts.append(walk or "(no rung measured)")
        if summaries:
            parts.append(markdown_table(summaries, ordered))
        forgetting = self.forgetting_lines()
        if forgetting:
            parts.append("forgetting (general set):\n" + "\n".join(f"- {f}" for f in forgetting))
        parts.extend(self.notes)
        parts.append(f"conclusion: {self.conclusion}")
        minutes = self.seconds / 60
        parts.append(f"climb time on this machine: {minutes:.1f} min (resumed runs included)")
        return "\n\n".join(parts)

    def write(self, folder: Path) -> None:
        """report.md, chart.png and climb.json in `folder`."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "report.md").write_text(
            f"# ladder climb: {self.task}\n\n{self.text()}\n", encoding="utf-8"
        )
        # Points labelled by walk order and rung, short enough not to run into each other.
        labelled = [
            replace(
                r.summary,
                name=f"{i}. {r.rung.id}"
                + (" (no replay)" if r.rung.variant == "no-replay" else ""),
            )
            for i, r in enumerate(self.results, 1)
        ]
        if labelled:
            chart(labelled, self.target, f"{self.task}: the climb", folder / "chart.png")
        (folder / "climb.json").write_text(
            json.dumps(self.as_dict(), indent=2) + "\n", encoding="utf-8"
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain data for climb.json."""
        return {
            "task": self.task,
            "kind": self.kind,
            "target": str(self.target),
            "rungs": [
                {
                    "rung": r.rung.id,
                    "configuration": r.rung.name,
                    "variant": r.rung.variant,
                    "verdict": r.verdict,
                    "definition": self.definitions.get(r.rung.name),
                    **r.summary.as_dict(),
                }
                for r in self.results
            ],
            "winner": self.winner.rung.name if self.winner else None,
            "conclusion": self.conclusion,
            "trained": self.trained,
            "seconds": round(self.seconds, 1),
            "stopped": self.stopped,
        }


def write_configuration(path: Path, name: str, raw: dict[str, Any], description: str) -> None:
    """Adds configuration `name` to the configurations file at `path` (created when missing).

    The definition is appended as text, so the file's comments, anchors and other
    configurations stay as they are; a name already there, or a file whose last top-level key is
    not `configurations`, is refused (ValueError) and the file left untouched."""
    entry = yaml.safe_dump({name: {"description": description, **raw}}, sort_keys=False)
    indented = "".join(f"  {line}\n" for line in entry.splitlines())
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"configurations:\n{indented}", encoding="utf-8")
        return
    text = path.read_text(encoding="utf-8")
    loaded = yaml.safe_load(text) or {}
    if not isinstance(loaded, dict) or not isinstance(loaded.get("configurations"), dict):
        raise ValueError(f"{path} is not a configurations file (no `configurations:` mapping)")
    if name in loaded["configurations"]:
        raise ValueError(f"{path} already has a configuration named {name!r}")
    if list(loaded)[-1] != "configurations":
        raise ValueError(f"{path}: `configurations:` must be its last top-level key to add to it")
    updated = text + ("" if text.endswith("\n") else "\n") + indented
    if yaml.safe_load(updated)["configurations"].get(name) != {"description": description, **raw}:
        raise ValueError(f"{path}: the configuration could not be added as text")
    staged = path.with_name(f".{path.name}.tmp")
    staged.write_text(updated, encoding="utf-8")
    staged.replace(path)


def best_lower(results: Sequence[RungResult], target: Target) -> RungResult | None:
    """The lower rung scoring best on the target's metric (the baseline excluded)."""
    scored = [
        r
        for r in results
        if not r.rung.is_adapter
        and r.rung.id != "base"
        and not math.isnan(r.summary.value(target.metric))
    ]
    if not scored:
        return None
    sign = 1 if target.op in (">=", ">") else -1
    return max(scored, key=lambda r: sign * r.summary.value(target.metric))


def adapter_choice(
    results: Sequence[RungResult], primary: str, min_general_kept: float
) -> tuple[RungResult | None, list[RungResult], list[RungResult]]:
    """The winner among the adapter rungs of the primary variant that meet the target and keep
    at least `min_general_kept` of the base's general score (the cheapest); the rungs a
    conclusion may name (every lower rung and the primary variant's: the other variant is there
    to compare forgetting); and those that meet the target but forget too much."""
    considered = [r for r in results if r.rung.variant in ("", primary)]
    meeting = [r for r in considered if r.rung.is_adapter and r.verdict == "meets"]
    passing = [r for r in meeting if r.general_kept >= min_general_kept]
    winner = min(passing, key=lambda r: r.summary.cost_per_1k) if passing else None
    return winner, considered, [r for r in meeting if r not in passing]
