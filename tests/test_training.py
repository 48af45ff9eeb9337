"""`ladder train` on a small slice: the adapter holds the triage format better than base."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from adapters.metrics import format_valid
from adapters.registry import AdapterRegistry
from adapters.tasks import load_task
from service.engines.base import ChatMessage, GenerationRequest, SamplingParams
from service.engines.local import LocalEngine
from tests.conftest import REPO
from tests.fixtures_models import models_cache_dir

TASKS = REPO / "corpus" / "tasks"
TRIAGE = TASKS / "support-triage"
PROMPT = "Triage the customer message."


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """An adapter trained by the CLI on 120 examples for 30 steps."""
    data_dir = tmp_path_factory.mktemp("training")
    rows = (TRIAGE / "train.jsonl").read_text().splitlines()
    (data_dir / "slice.jsonl").write_text("\n".join(rows[:120]) + "\n")
    env = {
        **os.environ,
        "LADDER_DATA_DIR": str(data_dir),
        "LADDER_CACHE_DIR": str(models_cache_dir()),
        "LADDER_TORCH_THREADS": "2",
    }
    command = [
        sys.executable,
        "-m",
        "service.cli",
        "train",
        str(data_dir / "slice.jsonl"),
        "--name",
        "triage-small",
        "--heldout",
        str(TRIAGE / "heldout.jsonl"),
        "--system-prompt",
        PROMPT,
        "--max-steps",
        "30",
        "--batch-size",
        "4",
        "--epochs",
        "2",
        "--allow",
        "small",
        "--rank",
        "8",
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "warning: small" in result.stderr
    adapter = AdapterRegistry(data_dir / "adapters").resolve("triage-small")
    return adapter.path, adapter.manifest()


def test_training_writes_adapter_and_manifest(trained: tuple[Path, dict]) -> None:
    path, manifest = trained
    assert (path / "adapter_config.json").is_file()
    assert manifest["rank"] == 8 and manifest["base_model"].endswith("SmolLM2-135M-Instruct")
    assert (
        manifest["training_data"]["examples"] + manifest["training_data"]["validation_examples"]
        == 120
    )
    assert len(manifest["training_data"]["sha256"]) == 64
    assert manifest["run"]["steps"] == 30 and manifest["run"]["epochs"][0]["validation_loss"] > 0
    assert manifest["training"]["seed"] == 0


def test_trained_adapter_holds_the_format_better_than_the_base_model(
    trained: tuple[Path, dict], base_model_dir: Path
) -> None:
    task = load_task(TASKS, "support-triage")
    examples = task.examples[:8]
    engine = LocalEngine(base_model_dir, {"triage": trained[0]}, threads=2)

    async def answers(adapter: str | None) -> list[str]:
        replies = []
        for example in examples:
            messages = (
                ChatMessage("system", PROMPT),
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
