"""The pieces of one experiment's panel: header, arms, split, plan, guardrails, comparisons, audit.

Each piece renders from the results JSON and renders nothing (or a dash) when its key is absent,
so the page works with results from before a key was added."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from service.experiments.dashboard_charts import Stroke

MISSING = "&ndash;"
SPLIT_NOTE = (
    "Why the split differs from the weights: the served split counts the users assigned since"
    " the weights last changed and varies by chance (the sample-ratio check below tests it); the"
    " share of all users also counts users assigned before a change, who keep the arm they were"
    " first given (unless re-bucketed)."
)


def number(value: Any, digits: int = 1, suffix: str = "") -> str:
    """A number with thousands separators, or a dash."""
    if value is None:
        return MISSING
    return f"{value:,.{digits}f}{suffix}"


def percent(value: Any) -> str:
    """A 0..1 share as a percentage, or a dash."""
    return MISSING if value is None else f"{100 * value:.1f} %"


def utc(at: float | None, seconds: bool = True) -> str:
    """An epoch time as a UTC date and time."""
    if at is None:
        return MISSING
    return time.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M", time.gmtime(at))


def duration(seconds: float | None) -> str:
    """A duration in the two largest units that matter."""
    if seconds is None:
        return MISSING
    whole = int(seconds)
    days, hours, minutes = whole // 86_400, whole % 86_400 // 3600, whole % 3600 // 60
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {whole % 60} s" if minutes else f"{whole} s"


def swatch(stroke: Stroke) -> str:
    """A short line drawn like the arm's chart line."""
    return (
        '<svg class="swatch" width="20" height="8" viewBox="0 0 20 8">'
        f'<line x1="0" y1="4" x2="20" y2="4" stroke-width="3" {stroke.svg()}/></svg>'
    )


def header(found: Mapping[str, Any]) -> str:
    """Name, model, status, version, start time and duration."""
    started = found.get("started_at")
    timing = (
        f"started {utc(started)} UTC, running {duration(found.get('duration_s'))}"
        if started is not None
        else "not started"
    )
    return (
        f"<h2>{escape(found['experiment'])} <small>captures model "
        f"<code>{escape(found['model'])}</code></small> "
        f'<span class="status status-{escape(found["status"])}">{escape(found["status"])}</span>'
        f" v{found['version']}</h2>"
        f'<p class="timing" data-started="{started if started is not None else ""}">{timing}</p>'
    )


def _weight_share(found: Mapping[str, Any], arm: Mapping[str, Any]) -> float:
    if "weight_share" in arm:
        return float(arm["weight_share"])
    total = sum(a["weight"] for a in found["arms"]) or 1
    return float(arm["weight"]) / total


def arms_table(found: Mapping[str, Any], strokes: Mapping[str, Stroke]) -> str:
    """One row per arm: weights beside the served split, users, and what the arm measured."""
    head = (
        "<tr><th>arm</th><th>configuration</th><th>weight</th><th>served split</th>"
        "<th>users</th><th>share of users</th><th>requests</th><th>errors</th><th>p50 ms</th>"
        "<th>p95 ms</th>"
        "<th>TTFT p50 ms</th><th>tokens in/out</th><th>cost $</th><th>feedback</th>"
        "<th>positive</th></tr>"
    )
    rows, shares = [], _user_shares(found)
    for arm in found["arms"]:
        name = arm["arm"]
        marks = " (control)" if name == found["control"] else ""
        if arm.get("paused"):
            marks += ' <span class="paused">paused</span>'
        users = arm.get("users")
        rows.append(
            f'<tr class="arm" data-arm="{escape(name)}">'
            f"<td>{swatch(strokes[name])} {escape(name)}{marks}</td>"
            f"<td>{escape(arm['configuration'])}</td>"
            f'<td class="weight">{percent(_weight_share(found, arm))}</td>'
            f'<td class="served">{percent(arm.get("served_share"))}</td>'
            f'<td class="users">{MISSING if users is None else f"{users:,}"}</td>'
            f'<td class="users-share">{percent(shares[name])}</td>'
            f"<td>{arm['requests']:,}</td><td>{arm['errors']:,}</td>"
            f"<td>{number(arm['latency_ms_p50'])}</td><td>{number(arm['latency_ms_p95'])}</td>"
            f"<td>{number(arm['ttft_ms_p50'])}</td>"
            f"<td>{arm['prompt_tokens']:,}/{arm['completion_tokens']:,}</td>"
            f"<td>{number(arm['cost_usd'], 6)}</td><td>{arm['feedback']:,}</td>"
            f"<td>{percent(arm['feedback_rate'])}</td></tr>"
        )
    return f'<table class="arms">{head}{"".join(rows)}</table>'


def _user_shares(found: Mapping[str, Any]) -> dict[str, float | None]:
    """Each arm's share of all identified users (every weights version)."""
    counts = {arm["arm"]: arm.get("users") for arm in found["arms"]}
    total = sum(count or 0 for count in counts.values())
    return {
        arm: None if count is None or not total else count / total for arm, count in counts.items()
    }


def split_note(found: Mapping[str, Any]) -> str:
    """Why the served split or the users' shares and the weights differ, when they visibly do."""
    users = _user_shares(found)
    shown = [
        (percent(_weight_share(found, arm)), percent(share))
        for arm in found["arms"]
        for share in (arm.get("served_share"), users[arm["arm"]])
        if share is not None
    ]
    if not any(weight != share for weight, share in shown):
        return ""
    return f'<p class="split-note">{SPLIT_NOTE}</p>'


def anonymous(found: Mapping[str, Any]) -> str:
    """Requests without a user, apart from the users' split."""
    traffic = found.get("anonymous")
    if not traffic:
        return ""
    by_arm = ", ".join(
        f"{escape(arm)} {count:,}" for arm, count in (traffic.get("by_arm") or {}).items()
    )
    return (
        f'<p class="anonymous">Anonymous requests (no user; each bucketed on its own, not in'
        f" the users' split): <b>{traffic['requests']:,}</b>{f' ({by_arm})' if by_arm else ''}</p>"
    )


def plan_progress(found: Mapping[str, Any]) -> str:
    """Progress towards the planned sample: a bar and what the plan was."""
    plan = found.get("plan")
    if not plan:
        return ""
    progress = float(plan.get("progress") or 0.0)
    width = min(max(progress, 0.0), 1.0)
    return (
        f'<div class="plan" data-progress="{progress:.4f}">Planned: '
        f"{number(plan.get('users_per_arm'), 0)} scored users per arm to detect "
        f"{number(100 * plan['mde'], 1, ' pt')} on a baseline of {percent(plan['baseline'])}"
        f" (about {number(plan.get('days'), 1)} days at {number(plan.get('traffic_per_day'), 0)}"
        f' users a day)<br><span class="bar"><span class="fill" style="width:{100 * width:.1f}%">'
        f"</span></span> <b>{100 * progress:.0f} %</b> of the planned sample</div>"
    )


def _evidence(evidence: Mapping[str, Any] | None) -> str:
    if not evidence:
        return MISSING
    shown = (
        f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
        for key, value in evidence.items()
        if value is not None
    )
    return escape(", ".join(shown))


def guardrails(found: Mapping[str, Any]) -> str:
    """Each guardrail's state; a breach with its evidence and when it paused the arm."""
    rails = found.get("guardrails")
    if not rails:
        return ""
    rows = []
    for rail in rails:
        state = str(rail.get("state", ""))
        paused = rail.get("paused_at")
        rows.append(
            f'<tr class="guardrail" data-arm="{escape(str(rail.get("arm")))}" '
            f'data-state="{escape(state)}"><td>{escape(str(rail.get("arm")))}</td>'
            f"<td>{escape(str(rail.get('metric')))}</td><td>{escape(str(rail.get('limit')))}</td>"
            f'<td class="state-{escape(state.replace(" ", "-"))}">{escape(state)}</td>'
            f"<td>{_evidence(rail.get('evidence'))}</td>"
            f"<td>{f'paused {utc(paused)} UTC' if paused is not None else MISSING}</td></tr>"
        )
    head = (
        "<tr><th>guardrail arm</th><th>metric</th><th>limit</th><th>state</th><th>evidence</th>"
        "<th>paused</th></tr>"
    )
    return f'<table class="guardrails">{head}{"".join(rows)}</table>'


def _difference(found: Mapping[str, Any] | None, metric: str) -> str:
    if found is None:
        return MISSING
    scale, unit, digits = METRIC_FORMATS.get(metric, (1.0, "", 3))
    low, high, difference = (found[key] * scale for key in ("low", "high", "difference"))
    adjusted = found.get("p_adjusted")
    return (
        f"{difference:+.{digits}f}{unit} [{low:+.{digits}f}, {high:+.{digits}f}]"
        f" p={found['p_value']:.3g}" + (f" (adj. {adjusted:.3g})" if adjusted is not None else "")
    )


def _metrics(comparison: Mapping[str, Any]) -> dict[str, Mapping[str, Any] | None]:
    """The compared metrics, under "metrics" or as the comparison's own keys; a known metric
    without a value yet (too little data) stays, shown as a dash."""
    nested = comparison.get("metrics")
    source = nested if isinstance(nested, Mapping) else comparison
    return {
        name: value
        for name, value in source.items()
        if (isinstance(value, Mapping) and "difference" in value)
        or (value is None and name in KNOWN_METRICS)
    }


# How each metric's difference reads: scale, unit, decimals.
METRIC_FORMATS = {
    "feedback_rate": (100.0, " pt", 2),
    "error_rate": (100.0, " pt", 2),
    "latency_ms": (1.0, " ms", 1),
    "tokens_per_request": (1.0, " tokens", 2),
    "cost_per_request_usd": (1e6, " µ$", 2),
}
KNOWN_METRICS = tuple(METRIC_FORMATS)


def comparison_table(found: Mapping[str, Any], strokes: Mapping[str, Stroke]) -> str:
    """Each arm against the control: every compared metric's difference, interval and p."""
    rows = []
    for arm, comparison in found["comparisons"].items():
        for metric, measured in _metrics(comparison).items():
            significant = " significant" if measured and measured.get("significant") else ""
            rows.append(
                f'<tr class="comparison{significant}" data-arm="{escape(arm)}" '
                f'data-metric="{escape(metric)}"><td>{swatch(strokes[arm])} {escape(arm)}</td>'
                f"<td>{escape(metric)}</td><td>{_difference(measured, metric)}</td>"
                f"<td>{'yes' if significant else 'no'}</td></tr>"
            )
        rows.append(
            f'<tr class="verdict" data-arm="{escape(arm)}"><td>{escape(arm)}</td>'
            f'<td colspan="3">verdict: <b>{escape(comparison["verdict"])}</b></td></tr>'
        )
    head = (
        "<tr><th>arm vs control</th><th>metric</th><th>difference [interval]</th>"
        "<th>significant</th></tr>"
    )
    return f'<table class="comparisons">{head}{"".join(rows)}</table>'


def verdicts(found: Mapping[str, Any]) -> str:
    """The sample-ratio check and the winner, or why there is none yet."""
    srm = found["sample_ratio"]
    srm_line = (
        f'<p class="warn">{escape(srm["warning"])} (p={srm["p_value"]:.2g})</p>'
        if srm["mismatch"]
        else f"<p>Sample ratio: χ²={srm['chi_square']:.2f}, p={srm['p_value']:.3g}"
        f" over {srm['units']} units{'' if srm['checked'] else ' (too few to check)'}</p>"
    )
    winner = found["winner"]
    verdict = (
        f"<p>Winner: <b>{escape(winner)}</b></p>"
        if winner
        else f"<p>No winner yet (at least {found['min_samples']} users with feedback per arm,"
        " always-valid p &lt; 0.05 after Holm, no guardrail (errors, latency) significantly"
        " worse, no sample-ratio mismatch).</p>"
    )
    method = found.get("method")
    tested = (
        f'<p class="method">Test: {escape(str(method.get("test")))}, alpha'
        f" {method.get('alpha')}, {escape(str(method.get('adjustment')))} adjustment across arms;"
        " the p-values and intervals may be read at any time.</p>"
        if method
        else ""
    )
    return tested + srm_line + verdict


def _value(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(", ", ": "))
    return str(value)


def _change(diff: Mapping[str, Any]) -> str:
    """A change as `field: before → after`; a field that was unset as `field = after`."""
    parts = []
    for key, change in diff.items():
        if not (isinstance(change, list) and len(change) == 2):
            parts.append(f"{key}: {_value(change)}")
        elif change[0] is None and change[1] not in (None, False, [], {}):
            parts.append(f"{key} = {_value(change[1])}")
        elif change[0] is not None:
            parts.append(f"{key}: {_value(change[0])} → {_value(change[1])}")
    return "; ".join(parts)


def audit_table(entries: Sequence[Mapping[str, Any]]) -> str:
    """The latest changes, newest first: when, who, what."""
    if not entries:
        return '<p class="audit">No changes recorded.</p>'
    rows = [
        f'<tr class="audit-entry" data-id="{entry["id"]}" data-action="{escape(entry["action"])}">'
        f"<td>{utc(entry['at'])}</td><td>{escape(entry['actor'])}</td>"
        f"<td>{escape(entry['action'])}</td><td>v{entry['version']}</td>"
        f'<td class="diff">{escape(_change(entry.get("diff") or {}))}</td></tr>'
        for entry in entries
    ]
    head = "<tr><th>when (UTC)</th><th>who</th><th>action</th><th>version</th><th>what</th></tr>"
    return (
        f'<details class="audit" open><summary>Latest {len(entries)} changes</summary>'
        f"<table>{head}{''.join(rows)}</table></details>"
    )
