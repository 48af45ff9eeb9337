"""The evaluation's metrics, recommendation rule, leakage check, cost and resumption."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from adapters.data import load_examples
from evaluation import metrics
from evaluation.backends import Reply
from evaluation.journal import ExampleResult, Journal
from evaluation.leakage import training_prompts
from evaluation.metrics import Interval
from evaluation.pricing import call_cost
from evaluation.report import ConfigurationSummary, Target, recommend
from evaluation.runner import EvaluationOutcome, evaluate
from evaluation.tasks import EvalExample, Task

SCHEMA = {
    "category": ["billing", "safety"],
    "priority": ["low", "urgent"],
    "needs_human": [True, False],
}


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ('{"category": "billing", "priority": "low", "needs_human": false}', True),
        ('  {"category": "safety", "priority": "urgent", "needs_human": true}\n', True),
        ('{"priority": "low", "category": "billing", "needs_human": false}', False),
        ('{"category": "billing", "priority": "low"}', False),
        ('{"category": "billing", "priority": "low", "needs_human": false, "x": 1}', False),
        ('{"category": "food", "priority": "low", "needs_human": false}', False),
        ('{"category": "billing", "priority": "low", "needs_human": "false"}', False),
        ('{"category": "billing", "priority": "low", "needs_human": 0}', False),
        ('{"category": "billing",\n "priority": "low", "needs_human": false}', False),
        ("Category: billing, priority low.", False),
        ('```json\n{"category": "billing", "priority": "low", "needs_human": false}\n```', False),
    ],
)
def test_format_validity(text: str, valid: bool) -> None:
    assert metrics.format_valid(text, SCHEMA) is valid


def test_field_accuracy_counts_exact_values_only() -> None:
    gold = {"category": "billing", "priority": "low", "needs_human": False}
    answer = '{"category": "billing", "priority": "urgent", "needs_human": 0}'
    assert metrics.field_accuracy(answer, gold) == {
        "category": True,
        "priority": False,
        "needs_human": False,
    }
    assert not any(metrics.field_accuracy("not json", gold).values())


@pytest.mark.parametrize(
    ("prediction", "answer", "expected"),
    [
        ("The UK model draws 2200 watts.", "2,200 watts", True),
        ("It costs $149.", "$149", True),
        ("It costs $1490.", "$149", False),
        ("Call THE support line: ext. 4471!", "ext 4471", True),
        ("The warranty lasts 2 years", ["24 months", "2 years"], True),
        ("forty-five minutes", "45 minutes", False),
        ("anything", "", False),
    ],
)
def test_contains_answer_normalises(
    prediction: str, answer: str | list[str], expected: bool
) -> None:
    assert metrics.contains_answer(prediction, answer) is expected


def test_hit_at_k_and_reciprocal_rank() -> None:
    retrieved = ["a.md", "b.md", "gold.md", "gold.md"]
    assert metrics.hit_at_k(retrieved, "gold.md", 3) and not metrics.hit_at_k(
        retrieved, "gold.md", 2
    )
    assert metrics.reciprocal_rank(retrieved, "gold.md") == pytest.approx(1 / 3)
    assert metrics.reciprocal_rank(retrieved, "nowhere.md") == 0.0


def test_wilson_interval_matches_published_values() -> None:
    interval = metrics.wilson_interval(8, 10)
    assert (round(interval.low, 3), round(interval.high, 3)) == (0.490, 0.943)
    zero = metrics.wilson_interval(0, 20)
    assert zero.low == 0.0 and round(zero.high, 3) == 0.161
    assert math.isnan(metrics.wilson_interval(0, 0).value)


def test_mean_interval_uses_the_sample_standard_deviation() -> None:
    interval = metrics.mean_interval([0.0, 0.5, 1.0, 0.5])
    half = 1.959964 * math.sqrt((0.25 + 0 + 0.25 + 0) / 3 / 4)
    assert interval.value == 0.5 and interval.low == pytest.approx(0.5 - half)


def summary(
    name: str, value: float, cost: float, adapter: str | None = None
) -> ConfigurationSummary:
    return ConfigurationSummary(
        name=name,
        n=10,
        metrics={"format_validity": Interval(value, value, value, 10)},
        prompt_tokens=100,
        completion_tokens=10,
        few_shot_tokens=0,
        context_tokens=0,
        p50_latency_s=1.0,
        cost_per_1k=cost,
        self_hosted_per_1k=0.1,
        adapter=adapter,
    )


TARGET = Target.parse("format_validity>=0.9")


def test_the_cheapest_configuration_meeting_the_target_is_chosen() -> None:
    chosen = recommend(
        [
            summary("prompt", 0.1, 0.01),
            summary("few-shot", 0.95, 0.05),
            summary("lora", 1.0, 0.02, "a"),
        ],
        TARGET,
        "behaviour",
    )
    assert chosen.chosen == "lora" and "few-shot" in chosen.reason


def test_a_tie_in_cost_goes_to_the_earlier_rung() -> None:
    chosen = recommend([summary("a", 0.9, 0.02), summary("b", 0.99, 0.02)], TARGET, "behaviour")
    assert chosen.chosen == "a"


def test_missing_costs_rank_after_known_costs() -> None:
    chosen = recommend(
        [summary("unknown", 1.0, math.nan), summary("known", 0.9, 5.0)], TARGET, "behaviour"
    )
    assert chosen.chosen == "known"
    only = recommend([summary("unknown", 1.0, math.nan)], TARGET, "behaviour")
    assert only.chosen == "unknown" and "unknown" in only.reason


def test_when_none_meets_the_target_the_failure_is_named() -> None:
    behaviour = recommend([summary("prompt", 0.2, 0.01)], TARGET, "behaviour")
    assert behaviour.chosen is None and "behaviour failure" in behaviour.reason
    assert "closest is prompt at 0.20" in behaviour.reason
    assert "climb to the adapter" in behaviour.reason
    tried = recommend(
        [summary("prompt", 0.2, 0.01), summary("lora", 0.85, 0.02, "a")], TARGET, "behaviour"
    )
    assert "closest is lora at 0.85" in tried.reason and "adapter rung was tried" in tried.reason
    rag = summary("rag", 0.3, 0.02)
    rag.metrics["hit_at_5"] = Interval(0.95, 0.9, 1.0, 10)
    knowledge = recommend([rag], Target.parse("contains_answer>=0.8"), "knowledge")
    assert "behaviour failure" in knowledge.reason and "retrieval finds" in knowledge.reason
    bare = recommend(
        [summary("prompt", 0.3, 0.01)], Target.parse("contains_answer>=0.8"), "knowledge"
    )
    assert "knowledge failure" in bare.reason
    assert recommend([], TARGET, "behaviour").reason.endswith("nothing was measured")


def test_saved_results_render_the_same_report_again(tmp_path: Path) -> None:
    lora = summary("lora", 0.85, 0.02, "a")
    lora.forgetting = {"general_before": 1.0, "general_after": 0.4, "delta": -0.6}
    outcome = EvaluationOutcome.build(
        "t", "behaviour", TARGET, [summary("prompt", 0.2, 0.01), lora], "k"
    )
    again = EvaluationOutcome.from_dict(json.loads(json.dumps(outcome.as_dict())))
    assert again.text() == outcome.text()
    assert "general 1.00 → 0.40 (-0.60)" in again.text()
    again.write(tmp_path, None)
    assert (tmp_path / "chart.png").stat().st_size > 0


def test_saved_runs_of_one_task_merge_and_the_rule_is_applied_anew() -> None:
    old = EvaluationOutcome.build(
        "t", "behaviour", TARGET, [summary("prompt", 0.2, 0.01), summary("lora", 0.5, 0.02)], "a"
    )
    new = EvaluationOutcome.build(
        "t", "behaviour", TARGET, [summary("prompt", 0.3, 0.01), summary("shot", 0.95, 0.03)], "b"
    )
    merged = EvaluationOutcome.merged([old, new])
    assert [s.name for s in merged.summaries] == ["prompt", "lora", "shot"]
    assert merged.summaries[0].value("format_validity") == 0.3  # the later run's row
    assert merged.recommendation.chosen == "shot" and merged.key == "a+b"
    other = EvaluationOutcome.build("u", "behaviour", TARGET, [summary("x", 1.0, 0.01)], "c")
    with pytest.raises(ValueError, match="cannot share a report"):
        EvaluationOutcome.merged([old, other])


def test_targets_parse_and_compare() -> None:
    assert Target.parse("mrr > 0.5").met_by(0.6) and not Target.parse("mrr>0.5").met_by(0.5)
    assert not TARGET.met_by(math.nan)
    with pytest.raises(ValueError):
        Target.parse("accuracy is high")


class CountingBackend:
    """Answers every question with its id; can die after a number of calls."""

    def __init__(self, die_after: int | None = None) -> None:
        self.calls = 0
        self.die_after = die_after

    def chat(self, configuration: str, messages, seed: int) -> Reply:  # type: ignore[no-untyped-def]
        if self.die_after is not None and self.calls >= self.die_after:
            raise KeyboardInterrupt("killed")
        self.calls += 1
        return Reply(messages[-1]["content"], 10, 2, 0, 0, 0.01)

    def close(self) -> None:
        pass


def small_task() -> Task:
    examples = tuple(
        EvalExample(f"q{n}", ({"role": "user", "content": f"answer {n}"},), f"answer {n}")
        for n in range(5)
    )
    return Task("tiny", "general", Path("."), examples, "contains_answer")


def test_a_killed_evaluation_resumes_without_recomputing(tmp_path: Path) -> None:
    task, path = small_task(), tmp_path / "journal.jsonl"
    with pytest.raises(KeyboardInterrupt):
        evaluate(
            task, ["a", "b"], CountingBackend(die_after=7), Journal.open(path), task.examples, 0
        )
    with path.open("a") as journal_file:
        journal_file.write('{"configuration": "b", "exam')  # a line torn by the kill
    resumed = CountingBackend()
    results = evaluate(task, ["a", "b"], resumed, Journal.open(path), task.examples, 0)
    assert resumed.calls == 3
    assert all(r.scores["contains_answer"] == 1.0 for rs in results.values() for r in rs)
    assert [r.example for r in results["b"]] == [f"q{n}" for n in range(5)]


def test_journal_lines_are_whole_results(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "j.jsonl")
    journal.add(ExampleResult("a", "q1", {"text": "x"}, {"m": 1.0}))
    row = json.loads((tmp_path / "j.jsonl").read_text())
    assert row == {
        "configuration": "a",
        "example": "q1",
        "reply": {"text": "x"},
        "scores": {"m": 1.0},
    }


def test_a_heldout_example_is_found_in_training_data_despite_case_and_spacing(
    tmp_path: Path,
) -> None:
    messages = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "  ANSWER \t\n 3 "},
        {"role": "assistant", "content": "3"},
    ]
    training = tmp_path / "train.jsonl"
    training.write_text(json.dumps({"messages": messages}) + "\n")
    heldout = small_task().examples[3]
    assert training_prompts(training) == {heldout.prompt_key}
    trained, _ = load_examples(training)
    assert trained[0].prompt_key == heldout.prompt_key


def test_a_call_costs_its_tokens_at_the_price_per_million() -> None:
    assert call_cost(2_000, 500, (0.15, 0.60)) == pytest.approx(0.0006)
    assert call_cost(0, 0, (1.0, 1.0)) == 0.0
