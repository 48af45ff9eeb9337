"""The data-quality gate refuses each kind of bad data with its reason and accepts clean data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from adapters.data import check, load_examples, output_format
from tests.support.models import models_cache_dir

CATEGORIES = ("billing", "shipping", "returns", "warranty")


def chat_line(user: str, answer: str) -> str:
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return json.dumps({"messages": messages})


def clean_rows(count: int, offset: int = 0) -> list[str]:
    return [
        chat_line(
            f"Message {n}: my order {1000 + n} has a problem",
            json.dumps({"category": CATEGORIES[n % 4], "priority": "normal"}),
        )
        for n in range(offset, offset + count)
    ]


def write(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join(rows) + "\n")
    return path


def run_gate(tmp_path: Path, train: list[str], heldout: list[str], *extra: str):  # type: ignore[no-untyped-def]
    env = {
        **os.environ,
        "LADDER_DATA_DIR": str(tmp_path),
        "LADDER_CACHE_DIR": str(models_cache_dir()),
    }
    command = [
        sys.executable,
        "-m",
        "service.cli",
        "train",
        str(write(tmp_path / "train.jsonl", train)),
        "--name",
        "gate-test",
        "--heldout",
        str(write(tmp_path / "heldout.jsonl", heldout)),
        "--check-only",
        *extra,
    ]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def token_count(example) -> int:  # type: ignore[no-untyped-def]
    return sum(len(m["content"].split()) for m in example.messages)


def gate(tmp_path: Path, train: list[str], heldout: list[str]):  # type: ignore[no-untyped-def]
    examples, malformed = load_examples(write(tmp_path / "t.jsonl", train))
    held, _ = load_examples(write(tmp_path / "h.jsonl", heldout))
    report = check(examples, held, token_count, max_tokens=60)
    report.findings[:0] = malformed
    return report


def kinds(report) -> set[str]:  # type: ignore[no-untyped-def]
    return {finding.kind for finding in report.blocking()}


def test_clean_data_is_accepted(tmp_path: Path) -> None:
    report = gate(tmp_path, clean_rows(250), clean_rows(20, offset=500))
    assert report.blocking() == [] and not report.findings


@pytest.mark.parametrize(
    "bad_line",
    [
        "{not json",
        json.dumps({"text": "no messages"}),
        json.dumps({"messages": [{"role": "user", "content": "only a question"}]}),
        json.dumps(
            {"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}
        ),
        json.dumps(
            {"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "y"}]}
        ),
    ],
)
def test_malformed_lines_are_refused_with_their_line_number(tmp_path: Path, bad_line: str) -> None:
    report = gate(tmp_path, [*clean_rows(250), bad_line], clean_rows(5, offset=500))
    assert kinds(report) == {"malformed"}
    assert report.findings[0].lines == (251,)


def test_duplicates_are_refused(tmp_path: Path) -> None:
    rows = clean_rows(250)
    report = gate(
        tmp_path, [*rows, rows[3], rows[7].replace("Message", "message")], clean_rows(5, 500)
    )
    finding = next(f for f in report.findings if f.kind == "duplicate")
    assert finding.lines == (251, 252)


def test_heldout_examples_seen_in_training_are_leakage(tmp_path: Path) -> None:
    rows = clean_rows(250)
    report = gate(tmp_path, rows, [rows[10], *clean_rows(5, 500)])
    finding = next(f for f in report.findings if f.kind == "leakage")
    assert finding.lines == (1,)


def test_examples_over_the_length_limit_are_refused(tmp_path: Path) -> None:
    long = chat_line("word " * 80, json.dumps({"category": "billing", "priority": "high"}))
    report = gate(tmp_path, [*clean_rows(250), long], clean_rows(5, 500))
    assert kinds(report) == {"too-long"}


def test_an_80_20_mix_of_output_formats_is_refused(tmp_path: Path) -> None:
    prose = [
        chat_line(f"Prose question {n}", "This is about billing, normal priority.")
        for n in range(60)
    ]
    report = gate(tmp_path, [*clean_rows(240), *prose], clean_rows(5, 500))
    finding = next(f for f in report.findings if f.kind == "format-mix")
    assert "80% json object" in finding.message and "20% prose" in finding.message
    assert len(finding.lines) == 60


def test_differing_json_key_sets_are_a_format_mix() -> None:
    assert output_format('{"a": 1, "b": 2}') != output_format('{"a": 1}')
    assert output_format("plain words") == "prose"


def test_small_data_is_a_warning_that_says_why(tmp_path: Path) -> None:
    report = gate(tmp_path, clean_rows(50), clean_rows(5, 500))
    assert report.blocking() == []
    assert any(f.kind == "small" and "memorises" in f.message for f in report.findings)


def test_cli_exits_2_with_a_report_and_allow_overrides(tmp_path: Path) -> None:
    rows = clean_rows(250)
    refused = run_gate(tmp_path, [*rows, rows[0]], clean_rows(5, 500))
    assert refused.returncode == 2
    assert "duplicate" in refused.stderr and "--allow" in refused.stderr
    allowed = run_gate(tmp_path, [*rows, rows[0]], clean_rows(5, 500), "--allow", "duplicate")
    assert allowed.returncode == 0, allowed.stderr
    assert "accepts" in allowed.stdout
