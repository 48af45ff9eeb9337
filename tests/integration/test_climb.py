"""`ladder climb` end to end on small tasks, with the bundled model: a task a prompt-level rung
passes is never trained for; a task only an adapter passes trains once, and a climb killed
mid-training resumes from its checkpoint instead of starting over."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from adapters.checkpoint import CHECKPOINT_FILE
from adapters.registry import AdapterRegistry
from service.experiments import repository
from service.experiments.store import open_database
from service.routing.configs import load_configurations
from tests.support.models import models_cache_dir
from tests.support.paths import REPO

GENERAL = REPO / "corpus" / "tasks" / "general"
pytestmark = pytest.mark.slow


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def _chat(user: str, answer: dict) -> dict:
    return {
        "messages": [
            {"role": "user", "content": user},
            {"role": "assistant", "content": json.dumps(answer)},
        ]
    }


def _tasks(root: Path) -> Path:
    """Two small behaviour tasks and the real general task (for the forgetting check)."""
    tasks = root / "tasks"
    (tasks / "general").mkdir(parents=True)
    for item in GENERAL.iterdir():
        (tasks / "general" / item.name).symlink_to(item)
    secret = tasks / "secret"
    secret.mkdir()
    asks = ["What is the password?", "Tell me the password.", "Which word opens the door?"]
    asks += ["I forgot the password, what is it?", "What's the secret password?"]
    asks += ["Can you remind me of the password?"]
    _jsonl(
        secret / "data.jsonl",
        [{"id": f"q{i}", "question": q, "answer": "pineapple"} for i, q in enumerate(asks)],
    )
    said = "The password is pineapple."
    _jsonl(
        secret / "train.jsonl",
        [
            {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": said}]}
            for q in ("Password please.", "Say the password.", "What password do I use?")
        ],
    )
    (secret / "task.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "secret",
                "kind": "general",
                "data": "data.jsonl",
                "train": "train.jsonl",
                "system_prompt": "The password is pineapple. When someone asks for the password,"
                " tell them: pineapple.",
                "generation": {"max_new_tokens": 24},
                "primary_metric": "contains_answer",
            }
        )
    )
    zebra = tasks / "zebra"
    zebra.mkdir()
    issues = ["printer jammed", "screen is blank", "mouse broken", "cannot log in", "wifi drops"]
    _jsonl(
        zebra / "train.jsonl",
        [
            _chat(f"Ticket {n}: my {issue}.", {"team": "zebra"})
            for n in range(8)
            for issue in issues
        ],
    )
    _jsonl(
        zebra / "heldout.jsonl",
        [
            _chat(f"Case {n}: the {thing} fails.", {"team": "zebra"})
            for n, thing in enumerate(["fax", "scanner", "phone", "badge", "laptop", "router"])
        ],
    )
    (zebra / "task.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "zebra",
                "kind": "behaviour",
                "train": "train.jsonl",
                "heldout": "heldout.jsonl",
                "system_prompt": "Route the ticket. Reply with one line of JSON with the key team.",
                "generation": {"max_new_tokens": 12, "stop": ["\n"]},
                "primary_metric": "field_accuracy",
                "schema": {"keys": ["team"], "values": {"team": ["zebra", "lion"]}},
            }
        )
    )
    _jsonl(
        root / "replay.jsonl",
        [
            {"id": f"r{i}", "prompt": p}
            for i, p in enumerate(
                ["Name a fruit.", "What colour is snow?", "Say hello.", "Count to three."]
            )
        ],
    )
    (root / "configurations.yaml").write_text("configurations:\n  base: {}\n")
    return tasks


def _climb(root: Path, *args: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "LADDER_DATA_DIR": str(root / "data"),
        "LADDER_CACHE_DIR": str(models_cache_dir()),
        "LADDER_CONFIG": str(root / "configurations.yaml"),
    }
    command = [
        sys.executable,
        "-m",
        "service.cli",
        "climb",
        "--tasks-dir",
        str(root / "tasks"),
        *args,
    ]
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
        start_new_session=True,
    )


def _finish(process: subprocess.Popen[str], timeout: float = 600) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def test_a_task_the_prompt_rung_passes_is_never_trained_for(tmp_path: Path) -> None:
    _tasks(tmp_path)
    args = ("--task", "secret", "--target", "contains_answer>=0.4")
    _, plan, _ = _finish(_climb(tmp_path, *args, "--dry-run"))
    assert "only if no rung meets the target: train" in plan  # it could train...
    # fmt: off
    code, out, err = _finish(_climb(
        tmp_path, *args, "--out-dir", str(tmp_path / "report"),
        "--write-config", str(tmp_path / "configurations.yaml"),
        "--experiment", "secret-climb", "--against", "base",
    ))
    # fmt: on
    assert code == 0, err[-3000:]
    result = json.loads((tmp_path / "report" / "climb.json").read_text())
    # ...but the baseline misses, the prompt meets the target on its interval, and it stops.
    assert [(r["rung"], r["verdict"]) for r in result["rungs"]] == [
        ("base", "misses"),
        ("prompt", "meets"),
    ]
    assert result["winner"] == "secret~prompt" and result["trained"] == {}
    assert "no adapter was trained" in out and "training step" not in err
    assert AdapterRegistry(tmp_path / "data" / "adapters").names() == []
    assert (tmp_path / "report" / "chart.png").read_bytes()[:4] == b"\x89PNG"
    # The winner joins the user's configurations, and a draft experiment pits it against base.
    written = load_configurations(tmp_path / "configurations.yaml", [], None).configurations
    assert set(written) == {"base", "secret-climbed"}
    assert "pineapple" in (written["secret-climbed"].system_prompt or "")
    database = open_database(f"sqlite:///{(tmp_path / 'data' / 'ladder.db').resolve()}")
    try:
        experiment = repository.find(database, "secret-climb").spec
    finally:
        database.dispose()
    assert experiment.status == "draft" and experiment.model == "base"
    assert [(a.name, a.configuration) for a in experiment.arms] == [
        ("control", "base"),
        ("climbed", "secret-climbed"),
    ]


def _checkpointed(root: Path) -> bool:
    """A whole checkpoint is in place (not the partial file it is written to first: a climb
    killed then has nothing to resume from)."""
    found = (root / "data" / "climb").glob(f"zebra-*/checkpoint-*/{CHECKPOINT_FILE}")
    return any(p.is_file() for p in found)


def test_only_the_adapter_passes_it_trains_once_and_resumes_after_sigkill(tmp_path: Path) -> None:
    _tasks(tmp_path)
    # fmt: off
    args = (
        "--task", "zebra", "--target", "field_accuracy>=0.5", "--rungs", "base,prompt",
        "--replay-prompts", str(tmp_path / "replay.jsonl"), "--no-compare-replay",
        "--max-steps", "40", "--batch-size", "4", "--rank", "4", "--learning-rate", "0.003",
        "--general-limit", "3", "--out-dir", str(tmp_path / "report"),
        # A toy adapter forgets some of three general questions; the bound on forgetting is
        # tested on its own (test_climb_plan.py), this test is about training once and resuming.
        "--min-general-kept", "0",
    )
    # fmt: on
    first = _climb(tmp_path, *args)
    deadline = time.monotonic() + 480
    while not _checkpointed(tmp_path):
        assert first.poll() is None, first.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first.communicate()
    registry = AdapterRegistry(tmp_path / "data" / "adapters")
    assert registry.names() == [], "the killed climb registered an adapter"
    code, _, err = _finish(_climb(tmp_path, *args))
    assert code == 0, err[-3000:]
    steps = [(int(n), int(m)) for n, m in re.findall(r"training step (\d+)/(\d+)", err)]
    assert re.search(r"resuming training at step [1-9]\d* of \d+", err), err[-3000:]
    assert steps and steps[0][0] > 1 and steps[-1][0] == steps[-1][1], err[-3000:]
    # The journaled lower rungs are not asked again: both runs answered them once.
    result = json.loads((tmp_path / "report" / "climb.json").read_text())
    assert [r["rung"] for r in result["rungs"]][:2] == ["base", "prompt"]
    assert all(r["verdict"] != "meets" for r in result["rungs"][:2])
    assert result["winner"] and "adapter" in result["winner"], result
    assert list(result["trained"]) == ["replay"]
    assert registry.names() == ["climb-zebra"] and registry.versions("climb-zebra") == [1]
    manifest = registry.resolve("climb-zebra").manifest()
    assert manifest["run"]["steps"] == steps[-1][1] and manifest["replay"]["fraction"] == 0.2
    assert manifest["training"]["replay_loss"] == "distill"  # the default
    adapter_rows = [r for r in result["rungs"] if r["adapter"]]
    assert adapter_rows and all(r["forgetting"] for r in adapter_rows)


def _dry_run(task: str, target: str, *more: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LADDER_CACHE_DIR": str(models_cache_dir())}
    command = [sys.executable, "-m", "service.cli", "climb", "--task", task, "--target", target]
    return subprocess.run(
        [
            *command,
            "--dry-run",
            "--limit",
            "60",
            "--tasks-dir",
            str(REPO / "corpus" / "tasks"),
            *more,
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )


def test_dry_run_prints_the_plan_time_and_cost_without_answering(base_model_dir: Path) -> None:
    triage = _dry_run("support-triage", "field_accuracy>=0.8")
    assert triage.returncode == 0, triage.stderr[-2000:]
    lines = [
        line for line in triage.stdout.splitlines() if line[:2] in {f"{i}." for i in range(10)}
    ]
    assert lines[0].split()[1] == "base"
    assert "(triage-similar-constrained," in triage.stdout
    costs = [float(line.split("$")[1].split()[0]) for line in lines]
    assert costs == sorted(costs)
    assert "train 2 LoRA adapter(s)" in triage.stdout and "estimated time" in triage.stdout
    assert "(replay fraction 0.2, distill)" in triage.stdout
    knowledge = _dry_run("knowledge-qa", "contains_answer>=0.4")
    assert knowledge.returncode == 0, knowledge.stderr[-2000:]
    assert "(rag," in knowledge.stdout
    assert "training is not proposed for a knowledge gap" in knowledge.stdout


def test_target_modules_the_base_lacks_are_refused_before_the_climb_starts(
    base_model_dir: Path,
) -> None:
    refused = _dry_run("support-triage", "field_accuracy>=0.8", "--target-modules", "q_proj,wq")
    assert refused.returncode == 2, refused.stdout[-2000:]
    message = [line for line in refused.stderr.splitlines() if "--target-modules" in line]
    assert len(message) == 1 and "wq" in message[0], refused.stderr[-2000:]
    assert "estimated time" not in refused.stdout
    accepted = _dry_run(
        "support-triage", "field_accuracy>=0.8", "--target-modules", "q_proj,v_proj"
    )
    assert accepted.returncode == 0, accepted.stderr[-2000:]
