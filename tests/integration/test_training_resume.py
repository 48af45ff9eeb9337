"""Training that survives a SIGKILL, and replay answers that come from the base model.

`ladder train --checkpoint-dir` killed with SIGKILL midway and run again resumes at its last
checkpoint and ends with the same steps and adapter weights as a run never interrupted (the tiny
Qwen2, so each run takes seconds). Replay examples are SmolLM2's own greedy answers, cached, and
`ladder train --replay-prompts` mixes them into what it trains on."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from adapters.base_model import resolve_base_model
from adapters.checkpoint import CHECKPOINT_FILE, Checkpoints
from adapters.registry import AdapterRegistry
from adapters.replay import replay_examples
from service.model_loading import MODEL_LOAD_LOCK
from tests.support.adapters import ladder_invocation, ladder_train
from tests.support.models import models_cache_dir
from tests.support.paths import REPO, TRIAGE_DIR, TRIAGE_PROMPT_MINIMAL
from tests.support.tiny_model import tiny_model_dir

CATEGORIES = ("billing", "shipping", "returns", "warranty")
# Long questions make a step slow enough (~0.1-0.3 s) for the test to kill the run between its
# first checkpoint and its end.
STORY = "The kettle came last month in a damaged box and I would like some help with it. " * 5
STEPS = 24
TRAINING = (
    "--name", "resumable", "--allow", "small", "--rank", "4", "--batch-size", "8",
    "--epochs", "6", "--max-steps", str(STEPS), "--checkpoint-every", "4",
)  # fmt: skip
GENERAL_SYSTEM_PROMPT = "You are a helpful assistant. Answer briefly."
# Prompts SmolLM2 answers in a sentence, well within the replay's 48 tokens.
SHORT_ANSWERS = (
    "What is 12 multiplied by 11?",
    "What are the three states of matter?",
    'What is the plural of "leaf"?',
)


@pytest.fixture(scope="module")
def tiny_base() -> Path:
    return tiny_model_dir(models_cache_dir())


@pytest.fixture(scope="module")
def categories(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 chat lines whose answer is the category the long question names."""
    rows = [
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": f"Order {1000 + n} about {category}. {STORY}"},
                    {"role": "assistant", "content": category},
                ]
            }
        )
        for n, category in enumerate(CATEGORIES * 12)
    ]
    path = tmp_path_factory.mktemp("resume-data") / "categories.jsonl"
    path.write_text("\n".join(rows) + "\n")
    return path


def adapter_weights(data_dir: Path) -> dict[str, torch.Tensor]:
    adapter = AdapterRegistry(data_dir / "adapters").resolve("resumable")
    return load_file(str(adapter.path / "adapter_model.safetensors"))


def killed_after_first_checkpoint(
    data_dir: Path, command: list[str], env: dict[str, str], checkpoint: Path
) -> dict:
    """Starts the run, SIGKILLs it as soon as a checkpoint is on disk, returns that checkpoint."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log = (data_dir / "killed.log").open("wb")
    process = subprocess.Popen(command, env=env, cwd=REPO, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 120
        while not checkpoint.is_file() and process.poll() is None:
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        log.close()
    assert process.returncode == -signal.SIGKILL, (data_dir / "killed.log").read_text()[-2000:]
    state = torch.load(checkpoint, weights_only=True)
    assert isinstance(state, dict)
    return state


def test_a_run_killed_midway_resumes_and_ends_as_an_uninterrupted_one(
    tmp_path: Path, tiny_base: Path, categories: Path
) -> None:
    whole = ladder_train(tmp_path / "whole", categories, *TRAINING, base_model=tiny_base)
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert "resuming" not in whole.stderr

    folder = tmp_path / "checkpoints"
    options = (*TRAINING, "--checkpoint-dir", str(folder))
    command, env = ladder_invocation(
        tmp_path / "killed", "train", str(categories), *options, base_model=tiny_base
    )
    state = killed_after_first_checkpoint(
        tmp_path / "killed", command, env, folder / CHECKPOINT_FILE
    )
    done = state["loop"]["run"]["steps"]
    assert 0 < done < STEPS
    assert not (tmp_path / "killed" / "adapters" / "resumable").exists()

    resumed = ladder_train(tmp_path / "killed", categories, *options, base_model=tiny_base)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    said = re.search(r"^resuming at step (\d+) of (\d+)$", resumed.stderr, re.MULTILINE)
    assert said and int(said[1]) >= done and int(said[2]) == STEPS, resumed.stderr[-2000:]
    logged = [int(step) for step in re.findall(r"^step (\d+)/", resumed.stderr, re.MULTILINE)]
    assert logged and logged[0] > int(said[1]) and logged[-1] == STEPS, resumed.stderr[-2000:]
    assert not folder.exists()  # removed once the adapter is registered

    manifests = [
        AdapterRegistry(tmp_path / run / "adapters").resolve("resumable").manifest()
        for run in ("whole", "killed")
    ]
    assert [m["run"]["steps"] for m in manifests] == [STEPS, STEPS]
    losses = [[e["validation_loss"] for e in m["run"]["epochs"]] for m in manifests]
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    expected, got = adapter_weights(tmp_path / "whole"), adapter_weights(tmp_path / "killed")
    assert expected.keys() == got.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, rtol=1e-5, atol=1e-6, msg=name)


def test_a_checkpoint_of_another_run_or_unreadable_is_ignored(tmp_path: Path) -> None:
    Checkpoints(tmp_path, "run-a").save({"loop": {"steps": 3}})
    assert Checkpoints(tmp_path, "run-a").load() == {"loop": {"steps": 3}, "fingerprint": "run-a"}
    assert Checkpoints(tmp_path, "run-b").load() is None
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"half a checkpoint")
    assert Checkpoints(tmp_path, "run-a").load() is None


def test_replay_answers_are_the_base_models_own_greedy_answers_and_cached(
    tmp_path: Path, base_model_dir: Path
) -> None:
    base = resolve_base_model(None, models_cache_dir())
    examples = replay_examples(
        base, SHORT_ANSWERS, GENERAL_SYSTEM_PROMPT, cache_dir=tmp_path, batch_size=2
    )
    tokenizer = AutoTokenizer.from_pretrained(str(base_model_dir))
    with MODEL_LOAD_LOCK:
        model = AutoModelForCausalLM.from_pretrained(str(base_model_dir), dtype=torch.float32)
    for example, prompt in zip(examples, SHORT_ANSWERS, strict=True):
        messages = [
            {"role": "system", "content": GENERAL_SYSTEM_PROMPT},
            {"role": "user", "content": prompt},
        ]
        assert list(example.messages[:-1]) == messages
        ids: Any = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with torch.inference_mode():
            output = model.generate(**ids, max_new_tokens=48, do_sample=False)
        new_tokens = output[0, ids["input_ids"].shape[1] :]
        direct = str(tokenizer.decode(new_tokens, skip_special_tokens=True)).strip()
        assert example.answer == direct != "", (example.answer, direct)
    # The same prompts again come from the cache: no model is loaded (its folder is gone).
    elsewhere = replace(base, folder=tmp_path / "no-such-model")
    cached = replay_examples(
        elsewhere, SHORT_ANSWERS, GENERAL_SYSTEM_PROMPT, cache_dir=tmp_path, batch_size=2
    )
    assert cached == examples


def test_ladder_train_mixes_the_base_models_replay_answers_into_training(
    tmp_path: Path, base_model_dir: Path
) -> None:
    rows = (TRIAGE_DIR / "train.jsonl").read_text().splitlines()[:12]
    data = tmp_path / "slice.jsonl"
    data.write_text("\n".join(rows) + "\n")
    prompts = tmp_path / "replay.jsonl"
    lines = [json.dumps({"id": f"r{n}", "prompt": p}) for n, p in enumerate(SHORT_ANSWERS)]
    prompts.write_text("\n".join(lines) + "\n")
    # fmt: off
    result = ladder_train(
        tmp_path, data, "--name", "replayed", "--max-steps", "1", "--batch-size", "2",
        "--allow", "small", "--rank", "2", "--system-prompt", TRIAGE_PROMPT_MINIMAL,
        "--replay-prompts", str(prompts), "--replay-fraction", "0.5",
    )
    # fmt: on
    assert result.returncode == 0, result.stderr[-3000:]
    assert "replay: the base model answered 3/3 prompts" in result.stderr
    manifest = AdapterRegistry(tmp_path / "adapters").resolve("replayed").manifest()
    trained = manifest["training_data"]["examples"]
    assert manifest["replay"] == {
        "fraction": 0.5,
        "examples": trained,  # half of the mix: as many as the task's own
        "system_prompt": GENERAL_SYSTEM_PROMPT,
    }
    assert manifest["training"]["replay_loss"] == "distill"


def test_replay_options_go_together(tmp_path: Path, tiny_base: Path, categories: Path) -> None:
    for options in (("--replay-fraction", "0.2"), ("--replay-prompts", str(categories))):
        result = ladder_train(tmp_path, categories, "--name", "x", *options, base_model=tiny_base)
        assert result.returncode == 2
        assert result.stderr.strip().splitlines()[-1] == (
            "error: --replay-prompts and a --replay-fraction above 0 go together"
        )
