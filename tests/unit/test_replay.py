"""The replay mix: its proportion, its seeding, cycling through too few replay examples; the
prompts file's errors; and the shipped general prompts, disjoint from the forgetting check."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

from adapters.data import Example
from adapters.replay import ReplayPromptsError, load_replay_prompts, mix, whole_sentences
from tests.support.paths import REPO

GENERAL = REPO / "corpus" / "tasks" / "general"


def examples(kind: str, count: int) -> list[Example]:
    return [
        Example(
            ({"role": "user", "content": f"{kind} {n}"}, {"role": "assistant", "content": kind}),
            n,
        )
        for n in range(1, count + 1)
    ]


def verify_general() -> ModuleType:
    """The forgetting check's own script, for its normalisation of questions."""
    spec = importlib.util.spec_from_file_location("verify_general", GENERAL / "verify_general.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("fraction", "train", "replayed"), [(0.2, 80, 20), (0.5, 30, 30), (0.4, 10, 7), (0.1, 10, 1)]
)
def test_the_mix_holds_the_asked_share_of_replay(
    fraction: float, train: int, replayed: int
) -> None:
    mixed = mix(examples("task", train), examples("replay", 100), fraction, seed=0)
    kinds = Counter(example.answer for example in mixed)
    assert kinds == {"task": train, "replay": replayed}
    # The nearest whole number of replay examples: within half an example of the share.
    assert abs(kinds["replay"] / len(mixed) - fraction) <= 0.5 / len(mixed)


def test_the_mix_keeps_every_training_example_once() -> None:
    train = examples("task", 40)
    mixed = mix(train, examples("replay", 100), 0.25, seed=3)
    assert sorted(e.line for e in mixed if e.answer == "task") == [e.line for e in train]


def test_too_few_replay_examples_are_cycled_evenly() -> None:
    replay = examples("replay", 4)
    mixed = mix(examples("task", 50), replay, 0.5, seed=1)
    counts = Counter(e.line for e in mixed if e.answer == "replay")
    # 50 drawn from 4: every one 12 or 13 times, none left out or drawn far more often.
    assert sum(counts.values()) == 50 and set(counts.values()) <= {12, 13}


def test_the_mix_is_shuffled_and_seeded() -> None:
    train, replay = examples("task", 60), examples("replay", 60)
    first, again, other = (mix(train, replay, 0.3, seed=s) for s in (7, 7, 8))
    assert first == again and first != other
    answers = [e.answer for e in first]
    assert answers != sorted(answers, reverse=True) and answers != sorted(answers)


def test_fraction_zero_returns_the_training_examples_unchanged() -> None:
    train = examples("task", 10)
    assert mix(train, examples("replay", 10), 0.0, seed=0) == train
    assert mix(train, (), 0.0, seed=0) == train


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_a_fraction_outside_zero_to_one_is_refused(fraction: float) -> None:
    with pytest.raises(ValueError, match="replay fraction"):
        mix(examples("task", 10), examples("replay", 10), fraction, seed=0)


def test_a_fraction_without_replay_examples_is_refused() -> None:
    with pytest.raises(ValueError, match="needs replay examples"):
        mix(examples("task", 10), (), 0.2, seed=0)


@pytest.mark.parametrize(
    ("cut_off", "kept"),
    [
        ("Bees make honey. They also make wax for", "Bees make honey."),
        ('He said "yes." Then he', 'He said "yes."'),
        ("1. Flour.\n2. Sugar.\n3. Eg", "1. Flour.\n2. Sugar."),
        ("It costs 3.5 dollars and", ""),
    ],
)
def test_an_answer_cut_off_by_the_token_limit_keeps_its_whole_sentences(
    cut_off: str, kept: str
) -> None:
    assert whole_sentences(cut_off) == kept


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('{"id": "a", "prompt": "Hi"}\nnot json\n', ":2: not JSON"),
        ('{"id": "a", "prompt": "Hi"}\n\n{"id": "b"}\n', ':3: needs a non-empty "prompt"'),
        ('{"id": "a", "prompt": "  "}\n', ':1: needs a non-empty "prompt"'),
        ('["Hi"]\n', ':1: needs a non-empty "prompt"'),
        ("\n", ": no prompts"),
    ],
)
def test_a_bad_prompts_file_is_refused_with_its_file_and_line(
    tmp_path: Path, text: str, where: str
) -> None:
    path = tmp_path / "prompts.jsonl"
    path.write_text(text)
    with pytest.raises(ReplayPromptsError) as refused:
        load_replay_prompts(path)
    assert str(refused.value).startswith(f"{path}{where}"), str(refused.value)


def test_a_missing_prompts_file_is_a_replay_prompts_error(tmp_path: Path) -> None:
    with pytest.raises(ReplayPromptsError, match=r"missing\.jsonl"):
        load_replay_prompts(tmp_path / "missing.jsonl")


def test_the_shipped_replay_prompts_are_many_unique_and_apart_from_the_forgetting_check() -> None:
    normalise = verify_general().normalise
    prompts = load_replay_prompts(GENERAL / "replay.jsonl")
    rows = [json.loads(line) for line in (GENERAL / "replay.jsonl").read_text().splitlines()]
    assert len(prompts) >= 150 and len({row["id"] for row in rows}) == len(rows)
    replayed = {normalise(prompt) for prompt in prompts}
    assert len(replayed) == len(prompts)
    for checked in ("general.jsonl", "candidates.jsonl"):
        lines = (GENERAL / checked).read_text().splitlines()
        questions = {normalise(json.loads(line)["question"]) for line in lines}
        assert len(questions) >= 89
        shared = sorted(replayed & questions)
        assert not shared, f"replay prompts also in {checked}: {shared}"
