"""The dashboard's charts: inline SVG over a UTC time axis, one stable colour per arm name."""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape

# Tableau 10 without its grey: the grey is the control's, so the baseline reads as neutral.
PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
)
CONTROL_COLOUR = "#79706e"
DASHES = ("", "6 3", "2 3", "8 3 2 3")
# Tick steps, seconds: 1-2-5 below a minute, then clock-friendly ones; days beyond.
CLOCK_STEPS = (10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200)
DAY = 86_400
MAX_TICKS = 6
WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 540, 220, 44, 12, 22, 52


@dataclass(frozen=True)
class Stroke:
    """How one arm is drawn: its colour, and a dash pattern when it shares the colour."""

    colour: str
    dash: str = ""

    def svg(self) -> str:
        """The SVG stroke attributes."""
        dash = f' stroke-dasharray="{self.dash}"' if self.dash else ""
        return f'stroke="{self.colour}"{dash}'


def arm_colour(arm: str, control: str | None = None) -> str:
    """The arm's colour: grey for the control, else picked by a hash of its name, so one name
    has one colour in every experiment and every process (Python's hash() is salted)."""
    if arm == control:
        return CONTROL_COLOUR
    digest = hashlib.sha256(arm.encode("utf-8")).digest()
    return PALETTE[int.from_bytes(digest[:8], "big") % len(PALETTE)]


def arm_strokes(arms: Sequence[str], control: str | None) -> dict[str, Stroke]:
    """Each arm's stroke; arms whose names hash to one colour keep it and differ by dash."""
    strokes: dict[str, Stroke] = {}
    taken: dict[str, int] = {}
    for arm in arms:
        colour = arm_colour(arm, control)
        strokes[arm] = Stroke(colour, DASHES[taken.get(colour, 0) % len(DASHES)])
        taken[colour] = taken.get(colour, 0) + 1
    return strokes


def tick_step(span_s: float, max_ticks: int = MAX_TICKS) -> float:
    """The smallest round step giving at most max_ticks ticks over span_s seconds."""
    wanted = max(span_s, 1e-6) / max_ticks
    if wanted < CLOCK_STEPS[0]:
        exponent = math.floor(math.log10(wanted))
        for mantissa in (1, 2, 5, 10):
            if mantissa * 10.0**exponent >= wanted:
                return float(mantissa * 10.0**exponent)
    for step in CLOCK_STEPS:
        if step >= wanted:
            return float(step)
    days = 1
    while days * DAY < wanted:
        days = {1: 2, 2: 3, 3: 7}.get(days, days * 2)
    return float(days * DAY)


def tick_label(at: float, step: float, span_s: float) -> str:
    """A UTC clock label as precise as the step needs; dated when the span crosses days."""
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    scaled = round(at * 10**decimals)
    moment = time.gmtime(scaled // 10**decimals)
    if step >= DAY:
        return time.strftime("%b %d", moment)
    clock = time.strftime("%H:%M" if step >= 60 else "%H:%M:%S", moment)
    if decimals:
        clock += f".{scaled % 10**decimals:0{decimals}d}"
    return f"{time.strftime('%b %d', moment)} {clock}" if span_s >= DAY else clock


def time_ticks(start: float, end: float, max_ticks: int = MAX_TICKS) -> list[tuple[float, str]]:
    """Round UTC instants between start and end, with their labels."""
    span = max(end - start, 1e-3)
    step = tick_step(span, max_ticks)
    first = math.ceil(start / step - 1e-9) * step
    count = int((end - first) / step + 1e-9) + 1
    return [(first + i * step, tick_label(first + i * step, step, span)) for i in range(count)]


@dataclass(frozen=True)
class Timeline:
    """Bucketed values per arm: bucket i covers [start + i*width_s, start + (i+1)*width_s)."""

    start: float
    width_s: float
    series: Mapping[str, Sequence[float | None]]


def _x(at: float, start: float, span: float) -> float:
    return LEFT + (at - start) / span * (WIDTH - LEFT - RIGHT)


def _y(value: float, ceiling: float) -> float:
    return HEIGHT - value / ceiling * (HEIGHT - TOP)


def _axes(start: float, span: float, ceiling: float, percent: bool) -> list[str]:
    parts = [
        f'<line x1="{LEFT}" y1="{HEIGHT}" x2="{WIDTH - RIGHT}" y2="{HEIGHT}" stroke="#999"/>',
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{HEIGHT}" stroke="#999"/>',
    ]
    for share in (0.0, 0.5, 1.0):
        y, value = _y(share * ceiling, ceiling), share * ceiling
        label = f"{100 * value:.0f} %" if percent else f"{value:g}"
        parts.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" stroke="#eee"/>'
            f'<text class="y-tick" x="{LEFT - 4}" y="{y + 4:.1f}" font-size="10" '
            f'text-anchor="end">{label}</text>'
        )
    for at, label in time_ticks(start, start + span):
        x = _x(at, start, span)
        parts.append(
            f'<line x1="{x:.1f}" y1="{HEIGHT}" x2="{x:.1f}" y2="{HEIGHT + 4}" stroke="#999"/>'
            f'<text class="x-tick" data-at="{at:.3f}" x="{x:.1f}" y="{HEIGHT + 15}" '
            f'font-size="10" text-anchor="middle">{label}</text>'
        )
    parts.append(
        f'<text x="{WIDTH - RIGHT}" y="{HEIGHT + 28}" font-size="10" text-anchor="end">'
        "time (UTC)</text>"
    )
    return parts


def _markers(markers: Sequence[tuple[float, str]], start: float, span: float) -> list[str]:
    """Vertical lines at changes (a new weight split) that fall inside the chart."""
    parts = []
    shown = [(at, label) for at, label in sorted(markers) if start <= at <= start + span]
    for number, (at, label) in enumerate(shown):
        x, y = _x(at, start, span), TOP + 10 + 11 * (number % 4)  # staggered: close ones overlap
        parts.append(
            f'<g class="marker"><line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{HEIGHT}" '
            f'stroke="#555" stroke-dasharray="3 3"/><text x="{x + 3:.1f}" y="{y}" '
            f'font-size="9">{escape(label)}</text></g>'
        )
    return parts


def _series(
    arm: str, stroke: Stroke, points: Sequence[float | None], timeline: Timeline, top: float
) -> str:
    """A line through each bucket's middle, a dot on every value; a missing value breaks it."""
    commands, dots, pen_down = [], [], False
    span = timeline.width_s * len(points)
    for index, value in enumerate(points):
        if value is None:
            pen_down = False
            continue
        x = _x(timeline.start + (index + 0.5) * timeline.width_s, timeline.start, span)
        y = _y(value, top)
        commands.append(f"{'L' if pen_down else 'M'}{x:.1f},{y:.1f}")
        dots.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{stroke.colour}"/>')
        pen_down = True
    return (
        f'<g class="series" data-arm="{escape(arm)}"><path fill="none" stroke-width="2" '
        f'{stroke.svg()} d="{" ".join(commands)}"/>{"".join(dots)}</g>'
    )


def _legend(strokes: Mapping[str, Stroke], control: str | None) -> list[str]:
    parts, x = [], LEFT
    for arm, stroke in strokes.items():
        name = f"{arm} (control)" if arm == control else arm
        parts.append(
            f'<g class="legend" data-arm="{escape(arm)}"><line x1="{x}" y1="{HEIGHT + 42}" '
            f'x2="{x + 18}" y2="{HEIGHT + 42}" stroke-width="3" {stroke.svg()}/>'
            f'<text x="{x + 22}" y="{HEIGHT + 46}" font-size="11">{escape(name)}</text></g>'
        )
        x += 30 + 7 * len(name)
    return parts


def line_chart(
    title: str,
    timeline: Timeline,
    strokes: Mapping[str, Stroke],
    *,
    control: str | None = None,
    percent: bool = False,
    markers: Sequence[tuple[float, str]] = (),
) -> str:
    """An SVG line chart over UTC time, one line per arm, a legend, and change markers."""
    buckets = max((len(points) for points in timeline.series.values()), default=1)
    span = timeline.width_s * max(buckets, 1)
    values = [v for points in timeline.series.values() for v in points if v is not None]
    ceiling = 1.0 if percent else float(max(values, default=1) or 1)
    parts = [
        f'<svg class="chart" role="img" aria-label="{escape(title)}" width="{WIDTH}" '
        f'height="{HEIGHT + 56}" viewBox="0 0 {WIDTH} {HEIGHT + 56}">',
        f'<text x="{LEFT}" y="14" font-size="12" font-weight="600">{escape(title)}</text>',
        *_axes(timeline.start, span, ceiling, percent),
        *_markers(markers, timeline.start, span),
    ]
    for arm, stroke in strokes.items():
        points = timeline.series.get(arm)
        if points:
            parts.append(_series(arm, stroke, points, timeline, ceiling))
    parts.extend(_legend(strokes, control))
    parts.append("</svg>")
    return "".join(parts)
