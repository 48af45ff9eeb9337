"""The dashboard page: server-rendered HTML with inline SVG charts, nothing fetched from outside."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

MISSING = "&ndash;"
COLOURS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2")
STYLE = """
body{font:14px system-ui,sans-serif;margin:24px;color:#111}
table{border-collapse:collapse;margin:8px 0 16px}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}
.status{padding:2px 8px;border-radius:8px;background:#eee}
.warn{color:#b91c1c;font-weight:600} .charts{display:flex;gap:24px;flex-wrap:wrap}
section{border-top:2px solid #ddd;padding-top:8px;margin-top:16px}
"""


def _number(value: Any, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return MISSING
    return f"{value:,.{digits}f}{suffix}"


def _percent(value: Any) -> str:
    return MISSING if value is None else f"{100 * value:.1f} %"


def _arms_table(found: Mapping[str, Any]) -> str:
    total = sum(arm["weight"] for arm in found["arms"]) or 1
    head = (
        "<tr><th>arm</th><th>configuration</th><th>weight</th><th>requests</th><th>errors</th>"
        "<th>p50 ms</th><th>p95 ms</th><th>TTFT p50 ms</th><th>tokens in/out</th>"
        "<th>cost $</th><th>feedback</th><th>positive</th></tr>"
    )
    rows = []
    for arm in found["arms"]:
        control = " (control)" if arm["arm"] == found["control"] else ""
        rows.append(
            f'<tr class="arm" data-arm="{escape(arm["arm"])}">'
            f"<td>{escape(arm['arm'])}{control}</td><td>{escape(arm['configuration'])}</td>"
            f"<td>{_percent(arm['weight'] / total)}</td><td>{arm['requests']}</td>"
            f"<td>{arm['errors']}</td><td>{_number(arm['latency_ms_p50'])}</td>"
            f"<td>{_number(arm['latency_ms_p95'])}</td><td>{_number(arm['ttft_ms_p50'])}</td>"
            f"<td>{arm['prompt_tokens']}/{arm['completion_tokens']}</td>"
            f"<td>{_number(arm['cost_usd'], 6)}</td><td>{arm['feedback']}</td>"
            f"<td>{_percent(arm['feedback_rate'])}</td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def _difference(found: Mapping[str, Any] | None, scale: float, unit: str) -> str:
    if found is None:
        return MISSING
    low, high = found["low"] * scale, found["high"] * scale
    return (
        f"{found['difference'] * scale:+.2f}{unit} [{low:+.2f}, {high:+.2f}]"
        f" p={found['p_value']:.3g}"
    )


def _comparison_table(found: Mapping[str, Any]) -> str:
    head = (
        "<tr><th>arm vs control</th><th>Δ positive feedback (95 % CI)</th>"
        "<th>Δ latency (95 % CI)</th><th>verdict</th></tr>"
    )
    rows = [
        f'<tr class="comparison" data-arm="{escape(arm)}"><td>{escape(arm)}</td>'
        f"<td>{_difference(c['feedback_rate'], 100, ' pt')}</td>"
        f"<td>{_difference(c['latency_ms'], 1, ' ms')}</td><td>{escape(c['verdict'])}</td></tr>"
        for arm, c in found["comparisons"].items()
    ]
    return f"<table>{head}{''.join(rows)}</table>"


def line_chart(title: str, series: Mapping[str, Sequence[float | None]], top: float | None) -> str:
    """An inline SVG line chart, one polyline per arm, gaps where a value is missing."""
    width, height, pad = 360, 160, 28
    values = [v for points in series.values() for v in points if v is not None]
    ceiling = top if top is not None else max(values, default=1) or 1
    parts = [
        f'<svg class="chart" role="img" aria-label="{escape(title)}" width="{width}" '
        f'height="{height + 40}" viewBox="0 0 {width} {height + 40}">',
        f'<text x="{pad}" y="14" font-size="12">{escape(title)}</text>',
        f'<line x1="{pad}" y1="{height}" x2="{width - 4}" y2="{height}" stroke="#999"/>',
        f'<text x="2" y="{pad}" font-size="10">{ceiling:g}</text>',
    ]
    for number, (arm, points) in enumerate(sorted(series.items())):
        colour = COLOURS[number % len(COLOURS)]
        step = (width - pad - 8) / max(len(points) - 1, 1)
        coords = [
            f"{pad + i * step:.1f},{height - (v / ceiling) * (height - pad):.1f}"
            for i, v in enumerate(points)
            if v is not None
        ]
        parts.append(
            f'<polyline data-arm="{escape(arm)}" fill="none" stroke="{colour}" '
            f'stroke-width="2" points="{" ".join(coords)}"/>'
        )
        parts.append(
            f'<text x="{pad + 90 * number}" y="{height + 30}" fill="{colour}" '
            f'font-size="12">{escape(arm)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _experiment_section(found: Mapping[str, Any]) -> str:
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
        else f"<p>No winner yet (at least {found['min_samples']} feedback per arm, p &lt; 0.05,"
        " no sample-ratio mismatch).</p>"
    )
    timeline = found["timeline"]
    charts = line_chart("requests over time", timeline["requests"], None) + line_chart(
        "positive feedback share over time", timeline["feedback_rate"], 1.0
    )
    return (
        f'<section class="experiment" data-experiment="{escape(found["experiment"])}">'
        f"<h2>{escape(found['experiment'])} <small>captures model "
        f"<code>{escape(found['model'])}</code></small> "
        f'<span class="status">{escape(found["status"])}</span> v{found["version"]}</h2>'
        f"{_arms_table(found)}{_comparison_table(found)}{srm_line}{verdict}"
        f'<div class="charts">{charts}</div></section>'
    )


def render(experiments: Sequence[Mapping[str, Any]]) -> str:
    """The whole page for the experiments' results."""
    sections = "".join(_experiment_section(found) for found in experiments)
    body = sections or "<p>No experiments yet. Create one with the admin API or `ladder ab`.</p>"
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="refresh" content="30"><title>ladder experiments</title>'
        f"<style>{STYLE}</style></head><body><h1>ladder experiments</h1>{body}</body></html>"
    )
