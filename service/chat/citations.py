"""Inline citations: the [n] markers of an answer mapped to the passages the prompt numbered.

A marker is `[n]` or a list `[n, m]` of whole numbers; `[1][3]` is two markers. A number that
names no passage of the prompt (`[7]` with four passages, `[0]`) maps to nothing: it is reported
apart, as unmatched, and never marks a citation.
"""

from __future__ import annotations

import re

from service.chat.protocol import LadderInfo

_MARKER = re.compile(r"\[\s*(\d{1,4}(?:\s*,\s*\d{1,4})*)\s*\]")


def markers(answer: str) -> list[int]:
    """The numbers the answer's markers name, each once, in the order they first appear."""
    found: list[int] = []
    for match in _MARKER.finditer(answer):
        for number in (int(part) for part in match.group(1).split(",")):
            if number not in found:
                found.append(number)
    return found


def with_cited(info: LadderInfo, answer: str) -> LadderInfo:
    """The ladder info with each citation's `cited` set from the answer's markers, and the
    markers that name no citation listed as unmatched."""
    named = markers(answer)
    numbers = {citation.number for citation in info.citations}
    citations = [c.model_copy(update={"cited": c.number in named}) for c in info.citations]
    unmatched = [number for number in named if number not in numbers]
    return info.model_copy(update={"citations": citations, "unmatched_markers": unmatched})
