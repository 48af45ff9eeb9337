"""`ladder train` on a small slice: the adapter holds the triage format better than base.

The 30-step adapter is cached across sessions (tests/support/adapters.py); a 2-step run of the
real command line is not, so every session trains through `ladder train` at least once."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from adapters.registry import AdapterRegistry
from evaluation.metrics import format_valid
from evaluation.tasks import load_task
from service.engines.base import ChatMessage, GenerationRequest, SamplingParams
from service.engines.local import LocalEngine
from tests.support.adapters import ladder_train
from tests.support.paths import REPO, TRIAGE_DIR, TRIAGE_PROMPT_MINIMAL, TrainedAdapter

TASKS = REPO / "corpus" / "tasks"


@pytest.fixture(scope="module")
def trained(triage_adapter: TrainedAdapter) -> tuple[Path, dict]:
    """The session's adapter, trained by the CLI on 120 examples for 30 steps."""
    assert "warning: small" in triage_adapter.stderr
    return triage_adapter.path, triage_adapter.manifest


def test_training_writes_adapter_and_manifest(trained: tuple[Path, dict]) -> None:
    path, manifest = trained
    assert (path / "adapter_config.json").is_file()
    assert manifest["rank"] == 8 and manifest["base_model"].endswith("SmolLM2-135M-Instruct")
    assert manifest["base_fingerprint"]["architecture"] == "LlamaForCausalLM"
    assert manifest["target_modules"] == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    assert (
        manifest["training_data"]["examples"] + manifest["training_data"]["validation_examples"]
        == 120
    )
    assert len(manifest["training_data"]["sha256"]) == 64
    assert manifest["run"]["steps"] == 30 and manifest["run"]["epochs"][0]["validation_loss"] > 0
    assert manifest["training"]["seed"] == 0


def test_ladder_train_trains_and_registers_uncached(tmp_path: Path, base_model_dir: Path) -> None:
    rows = (TRIAGE_DIR / "train.jsonl").read_text().splitlines()[:16]
    data = tmp_path / "slice.jsonl"
    data.write_text("\n".join(rows) + "\n")
    # fmt: off
    result = ladder_train(
        tmp_path, data, "--name", "tiny-run", "--max-steps", "2", "--batch-size", "4",
        "--allow", "small", "--rank", "4", "--system-prompt", TRIAGE_PROMPT_MINIMAL,
    )
    # fmt: on
    assert result.returncode == 0, result.stderr[-3000:]
    adapter = AdapterRegistry(tmp_path / "adapters").resolve("tiny-run")
    manifest = adapter.manifest()
    assert (adapter.path / "adapter_model.safetensors").is_file()
    assert manifest["rank"] == 4 and manifest["run"]["steps"] == 2
    split = manifest["training_data"]
    assert split["examples"] + split["validation_examples"] + split["heldout_examples"] == len(rows)


def test_trained_adapter_holds_the_format_better_than_the_base_model(
    trained: tuple[Path, dict], base_model_dir: Path
) -> None:
    task = load_task(TASKS, "support-triage")
    examples = task.examples[:6]
    engine = LocalEngine(base_model_dir, {"triage": trained[0]}, threads=2)

    async def answers(adapter: str | None) -> list[str]:
        replies = []
        for example in examples:
            messages = (
                ChatMessage("system", TRIAGE_PROMPT_MINIMAL),
                ChatMessage("user", example.messages[-1]["content"]),
            )
            request = GenerationRequest(
                messages, adapter, SamplingParams(max_tokens=40, stop=("\n",))
            )
            replies.append((await engine.complete(request)).text)
        return replies

    async def both() -> tuple[list[str], list[str]]:
        try:
            return await answers(None), await answers("triage")
        finally:
            await engine.aclose()

    base, tuned = asyncio.run(both())
    valid_base = sum(format_valid(text, task.schema) for text in base)
    valid_tuned = sum(format_valid(text, task.schema) for text in tuned)
    assert valid_tuned > valid_base, json.dumps({"base": base, "tuned": tuned}, indent=1)
