"""`ladder eval` end to end: a report on a small slice, resumption, and refusal of leaked data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from adapters.registry import AdapterRegistry
from tests.support.models import models_cache_dir
from tests.support.paths import REPO

TASKS = REPO / "corpus" / "tasks"


def ladder_eval(
    data_dir: Path, *args: str, config: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "LADDER_DATA_DIR": str(data_dir),
        "LADDER_CACHE_DIR": str(models_cache_dir()),
    }
    if config is not None:
        env["LADDER_CONFIG"] = str(config)
    command = [sys.executable, "-m", "service.cli", "eval", "--tasks-dir", str(TASKS), *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=900, cwd=REPO)


@pytest.mark.slow
def test_small_slice_report_has_every_configuration_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    args = (
        "--task",
        "support-triage",
        "--configs",
        "triage-prompt,triage-few-shot",
        "--limit",
        "2",
        "--json",
        str(out),
        "--out-dir",
        str(tmp_path / "report"),
    )
    first = ladder_eval(tmp_path, *args)
    assert first.returncode == 0, first.stderr[-2000:]
    results = json.loads(out.read_text())
    rows = {row["name"]: row for row in results["configurations"]}
    assert set(rows) == {"triage-prompt", "triage-few-shot"}
    for row in rows.values():
        assert row["n"] == 2
        assert {"format_validity", "field_accuracy"} <= set(row["metrics"])
        assert row["metrics"]["format_validity"]["low"] <= row["metrics"]["format_validity"]["high"]
        assert row["prompt_tokens"] > 0 and row["cost_per_1k"] > 0 and row["p50_latency_s"] > 0
    assert (
        rows["triage-few-shot"]["few_shot_tokens"] > 0 == rows["triage-prompt"]["few_shot_tokens"]
    )
    assert rows["triage-few-shot"]["prompt_tokens"] > rows["triage-prompt"]["prompt_tokens"]
    assert "recommendation" in first.stdout and results["recommendation"]["reason"]
    assert (tmp_path / "report" / "chart.png").read_bytes()[:4] == b"\x89PNG"
    assert "| triage-few-shot |" in (tmp_path / "report" / "report.md").read_text()
    journal = next((tmp_path / "eval").glob("journal-support-triage-*.jsonl"))
    lines = journal.read_text().count("\n")
    again = ladder_eval(tmp_path, *args)
    assert again.returncode == 0, again.stderr[-2000:]
    assert journal.read_text().count("\n") == lines == 4
    assert json.loads(out.read_text())["configurations"] == results["configurations"]


def test_heldout_examples_in_an_adapters_training_data_are_refused(tmp_path: Path) -> None:
    heldout = (TASKS / "support-triage" / "heldout.jsonl").read_text().splitlines()
    training = tmp_path / "train.jsonl"
    training.write_text("\n".join(heldout[:3]) + "\n")
    adapter = tmp_path / "leaky"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    (adapter / "adapter_model.safetensors").write_bytes(b"not used")
    AdapterRegistry(tmp_path / "adapters").register(
        "leaky", adapter, {"training_data": {"path": str(training)}}
    )
    config = tmp_path / "configs.yaml"
    config.write_text("configurations:\n  leaky-config:\n    adapter: leaky\n")
    result = ladder_eval(
        tmp_path,
        "--task",
        "support-triage",
        "--configs",
        "leaky-config",
        "--limit",
        "2",
        config=config,
    )
    assert result.returncode == 2
    assert "3 held-out examples" in result.stderr and "refusing" in result.stderr
