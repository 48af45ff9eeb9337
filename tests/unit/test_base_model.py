"""LADDER_BASE_MODEL: a folder, a .gguf file or a hub id, resolved to a folder, a fingerprint and a
window; every bad input is a one-line error. The second model is the tiny Qwen2 of
tests/support/tiny_model.py (another architecture, tokenizer and chat template than SmolLM2)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from adapters.base_model import (
    BaseModelUnavailable,
    context_window,
    default_target_modules,
    linear_modules,
    parameter_count,
    resolve_base_model,
)
from service.model_loading import MODEL_LOAD_LOCK
from tests.support.models import models_cache_dir
from tests.support.tiny_model import tiny_model_dir


@pytest.fixture(scope="module")
def tiny() -> Path:
    return tiny_model_dir(models_cache_dir())


def copy_of(tiny: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(tiny, folder)
    return folder


def test_a_model_folder_resolves_to_its_shape_window_and_a_stable_fingerprint(
    tiny: Path, tmp_path: Path
) -> None:
    base = resolve_base_model(str(tiny), tmp_path / "cache")
    assert base.folder == tiny.resolve() and base.source == str(tiny)
    fingerprint = base.fingerprint
    assert (fingerprint.architecture, fingerprint.hidden_size, fingerprint.layers) == (
        "Qwen2ForCausalLM",
        128,
        2,
    )
    assert fingerprint.vocab_size == 2048 and base.context_window == 1024
    assert resolve_base_model(str(tiny), tmp_path / "cache").fingerprint == fingerprint
    assert not (tmp_path / "cache").exists(), "a folder is used in place, never copied"

    changed = copy_of(tiny, tmp_path)
    config = json.loads((changed / "tokenizer_config.json").read_text())
    config["model_max_length"] = 512
    (changed / "tokenizer_config.json").write_text(json.dumps(config))
    other = resolve_base_model(str(changed), tmp_path / "cache").fingerprint
    assert other.files_sha256 != fingerprint.files_sha256
    assert other.architecture == fingerprint.architecture


def test_lora_modules_and_size_are_read_from_the_model_itself(tiny: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    assert default_target_modules(tiny) == (
        "down_proj",
        "gate_proj",
        "k_proj",
        "o_proj",
        "q_proj",
        "up_proj",
        "v_proj",
    )
    shapes = linear_modules(tiny)
    assert shapes["k_proj"] == (128, 64) and shapes["down_proj"] == (256, 128)
    with MODEL_LOAD_LOCK:
        model = AutoModelForCausalLM.from_pretrained(str(tiny), dtype=torch.float32)
    assert parameter_count(tiny) == sum(p.numel() for p in model.parameters())


def test_the_window_is_the_models_own_unless_a_smaller_one_is_set(tiny: Path) -> None:
    base = resolve_base_model(str(tiny), models_cache_dir())
    assert context_window(base, None) == 1024
    assert context_window(base, 512) == 512
    with pytest.raises(BaseModelUnavailable) as refused:
        context_window(base, 4096)
    assert str(refused.value) == (
        f"LADDER_CONTEXT_WINDOW=4096 is larger than {tiny}'s window of 1024 tokens"
    )


def _without(name: str):  # type: ignore[no-untyped-def]
    def damage(folder: Path) -> None:
        for file in folder.glob(name):
            file.unlink()

    return damage


def _architecture(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["ResNetForImageClassification"]
    (folder / "config.json").write_text(json.dumps(config))


def _no_template(folder: Path) -> None:
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        pytest.param(_without("config.json"), "has no config.json", id="no-config"),
        pytest.param(_without("tokenizer*.json"), "has no tokenizer", id="no-tokenizer"),
        pytest.param(_no_template, "has no chat template", id="no-chat-template"),
        pytest.param(
            _architecture,
            "architecture 'ResNetForImageClassification' is not a causal language model",
            id="unsupported-architecture",
        ),
    ],
)
def test_a_broken_model_folder_is_a_one_line_error(
    tiny: Path, tmp_path: Path, damage: object, expected: str
) -> None:
    folder = copy_of(tiny, tmp_path)
    damage(folder)  # type: ignore[operator]
    with pytest.raises(BaseModelUnavailable) as refused:
        resolve_base_model(str(folder), tmp_path / "cache")
    message = str(refused.value)
    assert expected in message and str(folder) in message and "\n" not in message


def test_a_gguf_transformers_cannot_read_is_refused_and_leaves_nothing_in_the_cache(
    tmp_path: Path,
) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + os.urandom(4096))
    cache = tmp_path / "cache"
    with pytest.raises(BaseModelUnavailable) as refused:
        resolve_base_model(str(broken), cache)
    message = str(refused.value)
    assert message.startswith(f"transformers cannot read the GGUF file {broken}")
    assert "\n" not in message
    assert list(cache.iterdir()) == [], "a failed conversion leaves no folder, whole or partial"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        pytest.param(
            "someone/not-cached-7b",
            "not in the local Hugging Face cache, and the hub is offline (HF_HUB_OFFLINE=1)",
            id="hub-id-offline",
        ),
        pytest.param("/no/such/model", "not a model folder, a .gguf file or a hub id", id="path"),
        pytest.param("/no/such/model.gguf", "no such GGUF file", id="gguf-path"),
    ],
)
def test_a_source_that_is_not_here_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, expected: str
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache: nothing is found
    with pytest.raises(BaseModelUnavailable) as refused:
        resolve_base_model(source, tmp_path / "cache")
    message = str(refused.value)
    assert message.startswith(f"LADDER_BASE_MODEL={source}: ") and expected in message
    assert "\n" not in message
