"""Configurations are validated at load; a mistake names the configuration and the field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.errors import ConfigurationError
from service.routing.configs import load_configurations
from service.settings import DEFAULT_CONFIG


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "configs.yaml"
    path.write_text(text)
    return path


def test_the_shipped_file_loads_and_holds_every_rung() -> None:
    configs = load_configurations(DEFAULT_CONFIG, ["support-triage"], ["docs"])
    assert {"base", "prompt", "few-shot", "rag", "lora", "lora+rag"} <= set(configs.configurations)
    assert configs.get("few-shot").few_shot.selected()  # type: ignore[union-attr]
    assert configs.get("lora+rag").layers() == ["system_prompt", "rag", "adapter"]  # type: ignore[union-attr]


def test_adapter_configurations_wait_for_their_adapter_when_asked() -> None:
    configs = load_configurations(DEFAULT_CONFIG, [], ["docs"])
    assert "lora" not in configs.configurations and "unknown adapter" in configs.skipped["lora"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("configurations:\n  a:\n    system_promt: hi\n", "configuration 'a': field system_promt"),
        (
            "configurations:\n  a:\n    adapter: ghost\n",
            "configuration 'a': field adapter: unknown adapter 'ghost'",
        ),
        (
            "configurations:\n  a:\n    retrieval: {collection: dcs}\n",
            "field retrieval.collection: unknown collection 'dcs'",
        ),
        (
            "configurations:\n  a:\n    retrieval: {collection: docs, k: 0}\n",
            "configuration 'a': field retrieval.k",
        ),
        (
            "configurations:\n  a:\n    few_shot: {file: missing.jsonl}\n",
            "field few_shot.file: no such file",
        ),
        ("configurations:\n  a:\n    generation: {temprature: 1}\n", "field generation.temprature"),
        ("configurations: {}\n", "configurations"),
        ("configurations: [\n", "not valid YAML"),
    ],
)
def test_mistakes_are_start_up_errors_naming_configuration_and_field(
    tmp_path: Path, text: str, expected: str
) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(expected)):
        load_configurations(write(tmp_path, text), ["known"], ["docs"])


def test_a_malformed_few_shot_file_names_its_line(tmp_path: Path) -> None:
    (tmp_path / "shots.jsonl").write_text('{"user": "a", "assistant": "b"}\n{"user": "only"}\n')
    path = write(tmp_path, "configurations:\n  a:\n    few_shot: {file: shots.jsonl}\n")
    with pytest.raises(ConfigurationError, match=r"shots\.jsonl line 2"):
        load_configurations(path, [], None)


def test_chat_format_few_shot_lines_are_read(tmp_path: Path) -> None:
    line = '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}'
    (tmp_path / "shots.jsonl").write_text(line + "\n")
    path = write(tmp_path, "configurations:\n  a:\n    few_shot: {file: shots.jsonl, count: 1}\n")
    example = load_configurations(path, [], None).get("a").few_shot.selected()[0]  # type: ignore[union-attr]
    assert (example.user, example.assistant) == ("q", "a")


def test_collections_are_not_checked_while_the_index_is_unreachable(tmp_path: Path) -> None:
    path = write(tmp_path, "configurations:\n  a:\n    retrieval: {collection: later}\n")
    assert "a" in load_configurations(path, [], None).configurations


def test_serving_only_some_configurations_checks_only_those(tmp_path: Path) -> None:
    text = (
        "configurations:\n  a:\n    system_prompt: hi\n"
        "  b:\n    retrieval: {collection: not-built-yet}\n"
    )
    path = write(tmp_path, text)
    assert set(load_configurations(path, [], [], only=["a"]).configurations) == {"a"}
    with pytest.raises(ConfigurationError, match="unknown collection 'not-built-yet'"):
        load_configurations(path, [], [])
    typo = write(tmp_path, text + "  c:\n    adaptr: x\n")
    with pytest.raises(ConfigurationError, match="configuration 'c': field adaptr"):
        load_configurations(typo, [], [], only=["a"])
