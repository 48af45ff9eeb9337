"""`ladder climb`'s plan and verdicts: which rungs a task's pieces allow, their order by cost,
the interval rule, the configuration it writes, and its one-line refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from evaluation.climb_plan import Estimate, Rung, generated_definitions, order_by_cost
from evaluation.climb_report import (
    RungResult,
    adapter_choice,
    best_lower,
    verdict,
    write_configuration,
)
from evaluation.metrics import Interval
from evaluation.report import ConfigurationSummary, Target
from evaluation.tasks import load_task
from service.routing.configs import Configuration, load_configurations
from tests.support.paths import REPO

TASKS = REPO / "corpus" / "tasks"


def _summary(name: str, value: float, low: float, high: float) -> ConfigurationSummary:
    return ConfigurationSummary(
        name=name,
        n=60,
        metrics={"field_accuracy": Interval(value, low, high, 60)},
        prompt_tokens=100,
        completion_tokens=20,
        few_shot_tokens=0,
        context_tokens=0,
        p50_latency_s=1.0,
        cost_per_1k=0.1,
        self_hosted_per_1k=0.1,
    )


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("field_accuracy>=0.6", "meets"),
        ("field_accuracy>=0.7", "point estimate only"),
        ("field_accuracy>=0.8", "misses"),
        ("field_accuracy<=0.8", "meets"),
        ("field_accuracy<=0.75", "point estimate only"),
        ("format_validity>=0.1", "not measured"),
    ],
)
def test_a_rung_meets_only_when_its_interval_bound_does(target: str, expected: str) -> None:
    assert verdict(_summary("x", 0.72, 0.66, 0.78), Target.parse(target)) == expected


def test_triage_rungs_come_from_the_tasks_pieces_and_its_mapped_configurations() -> None:
    task = load_task(TASKS, "support-triage")
    made, missing = generated_definitions(task)
    assert set(made) == {
        "base",
        "prompt",
        "few-shot",
        "few-shot-similar",
        "constrained",
        "similar-constrained",
    }
    assert "rag" in missing and "collection" in missing["rag"]
    assert made["base"] == {"generation": {"max_tokens": 48, "stop": ["\n"]}}
    assert made["similar-constrained"]["few_shot"]["select"] == "similar"
    assert Path(made["constrained"]["output"]["json_schema_file"]).is_file()
    assert task.configurations["similar-constrained"] == "triage-similar-constrained"


def test_a_task_without_pieces_gets_only_the_baseline(tmp_path: Path) -> None:
    folder = tmp_path / "bare"
    folder.mkdir()
    (folder / "data.jsonl").write_text('{"question": "2+2?", "answer": "4"}\n')
    (folder / "task.yaml").write_text("name: bare\nkind: general\ndata: data.jsonl\n")
    made, missing = generated_definitions(load_task(tmp_path, "bare"))
    assert list(made) == ["base"]
    assert set(missing) == {
        "prompt",
        "few-shot",
        "few-shot-similar",
        "constrained",
        "similar-constrained",
        "rag",
    }


def test_rungs_go_cheapest_first_the_ladder_breaking_ties() -> None:
    def rung(rung_id: str) -> Rung:
        return Rung(rung_id, Configuration(name=rung_id))

    rungs = [rung("few-shot"), rung("constrained"), rung("prompt"), rung("base")]
    costs = {"few-shot": 0.17, "constrained": 0.13, "prompt": 0.13, "base": 0.02}
    estimates = {name: Estimate(0, 0, cost, 0) for name, cost in costs.items()}
    assert [r.id for r in order_by_cost(rungs, estimates)] == [
        "base",
        "prompt",
        "constrained",
        "few-shot",
    ]


def test_the_best_lower_rung_skips_the_baseline_and_adapters() -> None:
    target = Target.parse("field_accuracy>=0.8")
    results = [
        RungResult(Rung("base", Configuration(name="b")), _summary("b", 0.9, 0.8, 0.95), "meets"),
        RungResult(Rung("prompt", Configuration(name="p")), _summary("p", 0.3, 0.2, 0.4), "misses"),
        RungResult(
            Rung("few-shot", Configuration(name="f")), _summary("f", 0.5, 0.4, 0.6), "misses"
        ),
        RungResult(
            Rung("adapter", Configuration(name="a", adapter="x")),
            _summary("a", 0.7, 0.6, 0.8),
            "misses",
        ),
    ]
    found = best_lower(results, target)
    assert found is not None and found.rung.id == "few-shot"


def test_the_winner_joins_a_configurations_file_that_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "configs.yaml"
    original = "# ours\nconfigurations:\n  prod: &p\n    system_prompt: Be brief.\n  again: *p\n"
    path.write_text(original)
    raw = {"system_prompt": "Classify.", "generation": {"max_tokens": 12}}
    write_configuration(path, "triage-climbed", raw, "ladder climb: prompt meets x>=0.5")
    loaded = load_configurations(path, [], None).configurations
    assert set(loaded) == {"prod", "again", "triage-climbed"}
    assert path.read_text().startswith(original)  # comments and anchors kept
    with pytest.raises(ValueError, match="already has"):
        write_configuration(path, "prod", raw, "d")
    assert loaded["prod"].system_prompt == "Be brief."
    assert loaded["triage-climbed"].generation.max_tokens == 12
    (tmp_path / "other.yaml").write_text("just: text\n")
    with pytest.raises(ValueError, match="not a configurations file"):
        write_configuration(tmp_path / "other.yaml", "x", raw, "d")
    assert yaml.safe_load((tmp_path / "other.yaml").read_text()) == {"just": "text"}


def test_an_unknown_rung_or_an_experiment_without_control_is_one_line() -> None:
    for extra in (["--rungs", "prompt,magic"], ["--experiment", "e1"]):
        command = [sys.executable, "-m", "service.cli", "climb", "--task", "support-triage"]
        result = subprocess.run(
            [*command, "--target", "field_accuracy>=0.8", *extra],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
        )
        assert result.returncode == 2
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr


def _adapter(name: str, variant: str, value: float, kept: float, cost: float) -> RungResult:
    summary = _summary(name, value, value - 0.05, value + 0.05)
    summary.cost_per_1k = cost
    summary.forgetting = {"general_before": 1.0, "general_after": kept, "delta": kept - 1.0}
    rung = Rung("adapter", Configuration(name=name, adapter=name), variant=variant)
    return RungResult(rung, summary, "meets" if value - 0.05 >= 0.8 else "misses")


def test_an_adapter_that_forgets_is_never_the_winner_nor_the_comparison_variant() -> None:
    lower = RungResult(
        Rung("few-shot", Configuration(name="f")), _summary("f", 0.7, 0.6, 0.8), "misses"
    )
    forgets = _adapter("cheap", "replay", 0.9, kept=0.5, cost=0.05)
    keeps = _adapter("dear", "replay", 0.9, kept=0.85, cost=0.30)
    no_replay = _adapter("bare", "no-replay", 0.95, kept=0.01, cost=0.01)
    winner, considered, forgot = adapter_choice([lower, forgets, keeps, no_replay], "replay", 0.8)
    assert winner is keeps  # the cheaper one that meets the target keeps only half
    assert forgot == [forgets]
    assert no_replay not in considered and lower in considered
    # With a looser bound the cheapest that meets the target wins again.
    assert adapter_choice([lower, forgets, keeps], "replay", 0.5)[0] is forgets
    # Nothing keeps enough: no winner, and both are named as forgetting.
    winner, _, forgot = adapter_choice(
        [forgets, _adapter("d", "replay", 0.9, 0.6, 1)], "replay", 0.8
    )
    assert winner is None and [r.rung.name for r in forgot] == ["cheap", "d"]
