"""The dashboard's charts: one colour per arm name everywhere, and a readable UTC time axis."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from itertools import pairwise

import pytest

from service.experiments.dashboard_charts import (
    CONTROL_COLOUR,
    MAX_TICKS,
    PALETTE,
    Timeline,
    arm_colour,
    arm_strokes,
    line_chart,
    time_ticks,
)

NAMES = ["treatment", "friendly", "terse", "concise", "rag-v2", "adapter@3", "bigger-model"]
# 2026-12-07 10:41:03.3 UTC: not on any round second, minute or hour.
START = 1_796_640_063.3


def _colours_in_fresh_process(seed: str) -> list[str]:
    code = (
        "from service.experiments.dashboard_charts import arm_colour;"
        f"print(' '.join(arm_colour(n) for n in {NAMES!r}))"
    )
    environment = {**os.environ, "PYTHONHASHSEED": seed}
    done = subprocess.run(
        [sys.executable, "-c", code], env=environment, capture_output=True, text=True, check=True
    )
    return done.stdout.split()


def test_an_arm_name_has_one_colour_in_every_process() -> None:
    here = [arm_colour(name) for name in NAMES]
    assert _colours_in_fresh_process("1") == here
    assert _colours_in_fresh_process("2") == here


def test_the_control_is_grey_and_no_other_arm_is() -> None:
    assert arm_colour("treatment", control="treatment") == CONTROL_COLOUR
    others = {arm_colour(f"arm-{number}") for number in range(300)}
    assert others == set(PALETTE), "names spread over the whole palette"
    assert CONTROL_COLOUR not in others


def test_arms_sharing_a_colour_keep_it_and_differ_by_dash() -> None:
    by_colour: dict[str, list[str]] = {}
    for number in range(100):
        by_colour.setdefault(arm_colour(f"arm-{number}"), []).append(f"arm-{number}")
    first, second = next(names for names in by_colour.values() if len(names) >= 2)[:2]
    strokes = arm_strokes(["control", first, second], control="control")
    assert strokes[first].colour == strokes[second].colour == arm_colour(first)
    assert strokes[first].dash != strokes[second].dash
    assert strokes["control"].colour == CONTROL_COLOUR


LABEL_FORMATS = {"%H:%M:%S.%f": r"\d\d:\d\d:\d\d\.\d+", "%H:%M:%S": r"\d\d:\d\d:\d\d"}


@pytest.mark.parametrize("span", [0.05, 2.0, 45.0, 600.0, 3 * 3600.0, 2 * 86_400.0, 30 * 86_400.0])
def test_time_ticks_are_round_utc_instants_inside_the_span(span: float) -> None:
    ticks = time_ticks(START, START + span)
    assert 2 <= len(ticks) <= MAX_TICKS
    instants = [at for at, _ in ticks]
    assert all(START - 1e-6 <= at <= START + span + 1e-6 for at in instants)
    steps = {round(b - a, 6) for a, b in pairwise(instants)}
    assert len(steps) == 1, "evenly spaced"
    labels = [label for _, label in ticks]
    assert len(set(labels)) == len(labels)
    for at, label in ticks:
        moment = datetime.fromtimestamp(at, UTC)
        if span >= 86_400:
            assert label.startswith(moment.strftime("%b %d")), (label, moment)
        else:
            assert moment.strftime("%H:%M:%S.%f").startswith(label), (label, moment)


def test_ticks_fall_on_round_seconds_minutes_and_hours() -> None:
    assert [label for _, label in time_ticks(START, START + 45)] == [
        "10:41:10",
        "10:41:20",
        "10:41:30",
        "10:41:40",
    ]
    assert [label for _, label in time_ticks(START, START + 3 * 3600)] == [
        "11:00",
        "11:30",
        "12:00",
        "12:30",
        "13:00",
        "13:30",
    ]


def test_a_chart_has_a_labelled_time_axis_a_legend_and_breaks_at_missing_values() -> None:
    timeline = Timeline(START, 10.0, {"control": [1.0, None, 0.5, 0.25], "terse": [0.0] * 4})
    strokes = arm_strokes(["control", "terse"], control="control")
    svg = line_chart("share", timeline, strokes, control="control", percent=True)
    ticks = re.findall(r'class="x-tick"[^>]*>([^<]+)<', svg)
    assert ticks == ["10:41:10", "10:41:20", "10:41:30", "10:41:40"], "4 buckets of 10 s"
    assert "time (UTC)" in svg
    control = re.search(r'class="series" data-arm="control"><path [^>]*d="([^"]+)"', svg)
    assert control is not None and control.group(1).count("M") == 2, "a gap breaks the line"
    assert re.findall(r'class="legend" data-arm="(\w+)"', svg) == ["control", "terse"]
    assert f'stroke="{arm_colour("terse")}"' in svg
