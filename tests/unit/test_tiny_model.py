"""The tiny Qwen2 test model: deterministic, loadable by transformers, with its own chat turns."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from service.model_loading import MODEL_LOAD_LOCK
from tests.support import tiny_model
from tests.support.tiny_model import TURN_END, build_tiny_qwen2, tiny_model_dir

HELLO = [{"role": "user", "content": "Where is my kettle?"}]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_qwen2(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def model(folder: Path) -> Any:
    with MODEL_LOAD_LOCK:
        return AutoModelForCausalLM.from_pretrained(folder)


@pytest.fixture(scope="module")
def tokenizer(folder: Path) -> Any:
    return AutoTokenizer.from_pretrained(folder)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_same_seed_builds_the_same_files_and_another_seed_other_weights(
    folder: Path, tmp_path: Path
) -> None:
    again = build_tiny_qwen2(tmp_path / "again")
    other = build_tiny_qwen2(tmp_path / "other", seed=1)
    for name in ("model.safetensors", "tokenizer.json", "config.json", "chat_template.jinja"):
        assert sha256(again / name) == sha256(folder / name), name
    assert sha256(other / "model.safetensors") != sha256(folder / "model.safetensors")


def test_it_loads_as_a_bfloat16_qwen2_with_64_wide_heads_and_tied_embeddings(model: Any) -> None:
    config = model.config
    assert (config.model_type, config.num_hidden_layers, config.hidden_size) == ("qwen2", 2, 128)
    assert config.hidden_size // config.num_attention_heads == 64
    attention = model.model.layers[0].self_attn
    assert attention.k_proj.weight.shape == (64 * config.num_key_value_heads, 128)
    assert model.dtype == torch.bfloat16
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def test_the_vocabulary_covers_the_tokenizer_in_multiples_of_64(model: Any, tokenizer: Any) -> None:
    assert len(tokenizer) <= model.config.vocab_size < len(tokenizer) + 64
    assert model.config.vocab_size % 64 == 0


def test_the_chat_template_renders_role_headers_and_no_system_turn(tokenizer: Any) -> None:
    rendered = tokenizer.apply_chat_template(HELLO, tokenize=False, add_generation_prompt=True)
    expected = "<|turn_start|>user\nWhere is my kettle?<|turn_end|>\n<|turn_start|>assistant\n"
    assert rendered == expected


def test_the_end_of_turn_token_is_its_own_stop_token(folder: Path, tokenizer: Any) -> None:
    turn_end = tokenizer.convert_tokens_to_ids(TURN_END)
    assert tokenizer.encode(TURN_END, add_special_tokens=False) == [turn_end]
    assert turn_end not in (tokenizer.eos_token_id, tokenizer.pad_token_id)
    stops = GenerationConfig.from_pretrained(folder).eos_token_id
    assert set(stops) == {turn_end, tokenizer.eos_token_id}


def test_generate_continues_a_chat_prompt(model: Any, tokenizer: Any) -> None:
    prompt = tokenizer.apply_chat_template(
        HELLO, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    input_ids = prompt["input_ids"]
    output = model.generate(input_ids, max_new_tokens=5, do_sample=False)
    assert input_ids.shape[1] < output.shape[1] <= input_ids.shape[1] + 5
    assert isinstance(tokenizer.decode(output[0, input_ids.shape[1] :]), str)


def test_the_cached_build_is_made_once(tmp_path: Path) -> None:
    first = tiny_model_dir(tmp_path)
    built_at = (first / "model.safetensors").stat().st_mtime_ns
    assert tiny_model_dir(tmp_path) == first
    assert (first / "model.safetensors").stat().st_mtime_ns == built_at
    assert first.name.startswith("tiny-qwen2-")


def test_a_build_that_fails_midway_leaves_no_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*_args: object) -> None:
        raise RuntimeError("killed while saving the weights")

    monkeypatch.setattr(tiny_model, "_write_model", crash)
    with pytest.raises(RuntimeError):
        build_tiny_qwen2(tmp_path / "model")
    assert list(tmp_path.iterdir()) == []
