"""Every reader handles a pathological line in linear time: no pattern backtracks on it."""

from __future__ import annotations

import random
import re
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import pytest

from ingest.readers import read_document

# 100 KB lines that make a backtracking heading pattern (`(.+?)\s*#*\s*$`) take cubic time.
PATHOLOGICAL_LINES = {
    "spaces": "# a" + " " * 100_000 + "b",
    "spaces then hashes": "# a" + " " * 50_000 + "#" * 50_000 + "b",
}
SECOND = 1.0  # the finding's bound; a linear reader takes milliseconds


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Fails the test when the block runs past seconds (SIGALRM reaches into a regex match)."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"still reading after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("suffix", [".md", ".txt", ".html"])
@pytest.mark.parametrize("line", PATHOLOGICAL_LINES.values(), ids=PATHOLOGICAL_LINES.keys())
def test_a_100_kb_pathological_line_is_read_in_under_a_second(suffix: str, line: str) -> None:
    with deadline(SECOND):
        document = read_document(Path(f"line{suffix}"), f"intro\n{line}\nbody\n".encode())
    assert "body" in document.sections[-1].text


def test_the_long_heading_keeps_its_name() -> None:
    with deadline(SECOND):
        document = read_document(Path("a.md"), ("# a" + " " * 100_000 + "b ##\n\ntext").encode())
    assert document.title == "a" + " " * 100_000 + "b"


def test_headings_are_parsed_as_the_former_pattern_parsed_them() -> None:
    from ingest.readers import markdown_heading

    former = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
    pieces = ["#", "#", " ", "  ", "\t", "a", "b c", "\u00a0", "\r", "x#", "##"]
    rng = random.Random(12)
    for _ in range(20_000):
        line = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 10)))
        match = former.match(line)
        expected = None if match is None else (len(match.group(1)), match.group(2).strip())
        assert markdown_heading(line) == expected, repr(line)
