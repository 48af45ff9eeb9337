"""The dashboard page: server-rendered HTML with inline SVG charts, nothing fetched from outside."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any, Protocol

from service.experiments import dashboard_sections as sections
from service.experiments.dashboard_charts import Stroke, Timeline, arm_strokes, line_chart
from service.experiments.repository import StoredExperiment

STYLE = """
body{font:14px system-ui,sans-serif;margin:24px;color:#111}
table{border-collapse:collapse;margin:8px 0 16px}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th:first-child,td:first-child{text-align:left} th,td:first-child{white-space:nowrap}
td.diff{text-align:left;font-size:12px;max-width:640px}
.status{padding:2px 8px;border-radius:8px;background:#eee;font-size:14px}
.status-running{background:#dcfce7} .status-paused{background:#fef3c7}
.paused{padding:0 6px;border-radius:6px;background:#fef3c7;font-size:12px}
.warn{color:#b91c1c;font-weight:600} .charts{display:flex;gap:24px;flex-wrap:wrap}
.state-ok{color:#15803d} .state-breached{color:#b91c1c;font-weight:600}
.state-not-enough-data{color:#6b7280}
.split-note,.anonymous,.timing{color:#374151}
.plan .bar{width:320px;height:10px;background:#e5e7eb;border-radius:5px;margin:4px 0;
display:inline-block;vertical-align:middle}
.plan .fill{display:block;height:10px;background:#4e79a7;border-radius:5px}
section{border-top:2px solid #ddd;padding-top:8px;margin-top:16px}
"""
# Status, weight and arm pause changes are drawn on the charts: they explain a change of split.
MARKED_CHANGES = (
    "create",
    "weights",
    "running",
    "paused",
    "pause",
    "resume",
    "promote",
    "rollback",
)


class ExperimentSource(Protocol):
    """What the dashboard reads from the experiment service."""

    def experiments(self) -> list[StoredExperiment]: ...

    def results(self, name: str) -> dict[str, Any]: ...

    def audit(
        self, experiment: str | None = None, actor: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class Panel:
    """One experiment's results and its latest audit entries, newest first."""

    results: Mapping[str, Any]
    audit: Sequence[Mapping[str, Any]]


def collect(source: ExperimentSource, audit_entries: int) -> list[Panel]:
    """Every experiment's panel data, freshly read."""
    names = [stored.spec.name for stored in source.experiments()]
    return [Panel(source.results(name), source.audit(name, None, audit_entries)) for name in names]


def strokes_of(found: Mapping[str, Any]) -> dict[str, Stroke]:
    """Each arm's stroke, arms in the experiment's order (then any only the timeline knows)."""
    names = [arm["arm"] for arm in found["arms"]]
    for series in found["timeline"]["requests"], found["timeline"]["feedback_rate"]:
        names += [name for name in sorted(series) if name not in names]
    return arm_strokes(names, found["control"])


def _markers(entries: Sequence[Mapping[str, Any]]) -> list[tuple[float, str]]:
    return [
        (float(entry["at"]), f"v{entry['version']} {entry['action']}")
        for entry in entries
        if str(entry["action"]).split(" ")[0] in MARKED_CHANGES
    ]


def charts(found: Mapping[str, Any], strokes: Mapping[str, Stroke], audit: Sequence[Any]) -> str:
    """Requests and positive-feedback share over time, or a line saying there is no traffic."""
    timeline = found["timeline"]
    if timeline["start"] is None:
        return '<p class="no-traffic">No traffic yet.</p>'
    marks = _markers(audit)
    width = timeline["width_s"]
    interval = sections.duration(width) if width >= 1 else f"{width:.2g} s"
    control = found["control"]
    requests = Timeline(timeline["start"], timeline["width_s"], timeline["requests"])
    rates = Timeline(timeline["start"], timeline["width_s"], timeline["feedback_rate"])
    return (
        '<div class="charts">'
        + line_chart(f"requests per {interval}", requests, strokes, control=control, markers=marks)
        + line_chart(
            "positive feedback share",
            rates,
            strokes,
            control=control,
            percent=True,
            markers=marks,
        )
        + "</div>"
    )


def experiment_section(panel: Panel) -> str:
    """One experiment: header, split, plan, guardrails, comparisons, charts, audit trail."""
    found = panel.results
    strokes = strokes_of(found)
    name = escape(found["experiment"])
    return (
        f'<section class="experiment" data-experiment="{name}">'
        + sections.header(found)
        + sections.arms_table(found, strokes)
        + sections.split_note(found)
        + sections.anonymous(found)
        + sections.plan_progress(found)
        + sections.guardrails(found)
        + sections.comparison_table(found, strokes)
        + sections.verdicts(found)
        + charts(found, strokes, panel.audit)
        + sections.audit_table(panel.audit)
        + "</section>"
    )


def render(panels: Sequence[Panel]) -> str:
    """The whole page for the experiments' results."""
    body = "".join(experiment_section(panel) for panel in panels) or (
        "<p>No experiments yet. Create one with the admin API or `ladder ab`.</p>"
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="refresh" content="30"><title>ladder experiments</title>'
        f"<style>{STYLE}</style></head><body><h1>ladder experiments</h1>"
        '<p class="legend-note">Times are UTC. An arm has one colour on every experiment, picked'
        " from its name; the control is always grey.</p>"
        f"{body}</body></html>"
    )
