"""Inline citations: [n] markers in an answer mark the numbered passages they name, no others."""

from __future__ import annotations

import pytest

from service.chat.citations import markers, with_cited
from service.chat.protocol import Citation, LadderInfo


def info(passages: int) -> LadderInfo:
    citations = [
        Citation(number=n, source=f"doc{n}.md", chunk_id=f"doc{n}.md#0", score=0.5)
        for n in range(1, passages + 1)
    ]
    return LadderInfo(configuration="c", layers=["rag"], adapter=None, citations=citations)


@pytest.mark.parametrize(
    ("answer", "numbers"),
    [
        ("The fee is $19 [2].", [2]),
        ("Nine levels [1][3], and a bagel mode [1].", [1, 3]),
        ("See [3, 1] and [ 2 ].", [3, 1, 2]),
        ("No marker at all.", []),
        # Not markers: words, ranges, decimals or empty brackets between the brackets.
        ("a list [a] [1-2] [1.5] [] (1) 1.", []),
    ],
)
def test_markers_are_whole_numbers_in_brackets_each_once(answer: str, numbers: list[int]) -> None:
    assert markers(answer) == numbers


def test_markers_mark_the_citations_they_name() -> None:
    marked = with_cited(info(3), "It has 9 levels [3] and a bagel mode [1].")
    assert [(c.number, c.cited) for c in marked.citations] == [(1, True), (2, False), (3, True)]
    assert marked.unmatched_markers == []


def test_a_marker_naming_no_passage_maps_to_nothing_and_is_reported() -> None:
    marked = with_cited(info(2), "It is 9 [7], or [0], says [2].")
    assert [c.cited for c in marked.citations] == [False, True]
    assert marked.unmatched_markers == [7, 0]


def test_an_answer_without_markers_cites_nothing() -> None:
    marked = with_cited(info(2), "It is 9.")
    assert [c.cited for c in marked.citations] == [False, False]
    assert marked.unmatched_markers == []


def test_the_info_without_inline_citations_says_nothing_of_them() -> None:
    plain = info(2).model_dump(exclude_none=True)
    assert "unmatched_markers" not in plain
    assert all("cited" not in citation for citation in plain["citations"])
