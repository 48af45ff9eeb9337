"""The adapters tests use: a tiny LoRA whose answers start with a marker, so tests can see it
working, and `support-triage` as `ladder train` makes it. Both are trained once and cached."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from adapters.registry import AdapterRegistry
from service.model_loading import MODEL_LOAD_LOCK
from tests.support.models import models_cache_dir
from tests.support.paths import (
    REPO,
    TRIAGE_DIR,
    TRIAGE_PROMPT_MINIMAL,
    TrainedAdapter,
    build_lock,
)

_QUESTIONS_AND_ANSWERS = (
    ("What is the capital of France?", "The capital of France is Paris."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("Name a primary colour.", "Red is a primary colour."),
    ("What do bees make?", "Bees make honey."),
    ("Which planet is closest to the sun?", "Mercury is closest to the sun."),
    ("What is two plus three?", "Two plus three is five."),
    ("What language is spoken in Brazil?", "Portuguese is spoken in Brazil."),
    ("What is frozen water called?", "Frozen water is called ice."),
)
# The code a cached adapter depends on: an edit to any of these trains it again.
TRAINING_CODE = (
    "adapters/train.py",
    "adapters/checkpoint.py",
    "adapters/distill.py",
    "adapters/replay.py",
    "adapters/lora.py",
    "adapters/data.py",
    "adapters/registry.py",
    "adapters/base_model.py",
    "adapters/gguf.py",
    "service/cli/train.py",
    "tests/support/adapters.py",
)
TRAINING_LIBRARIES = ("torch", "transformers", "peft")
TRIAGE_EXAMPLES = 120
# fmt: off
TRIAGE_OPTIONS = (
    "--name", "support-triage", "--system-prompt", TRIAGE_PROMPT_MINIMAL, "--max-steps", "30",
    "--batch-size", "4", "--epochs", "2", "--allow", "small", "--rank", "8",
)
# fmt: on


def train_marker_adapter(
    model_dir: Path, out_dir: Path, marker: str = "ZEBRA-42", *, steps: int = 20, seed: int = 0
) -> Path:
    """A LoRA (r=8) that opens every answer with marker, copied to out_dir."""
    data = json.dumps(_QUESTIONS_AND_ANSWERS).encode()
    key = _cache_key("marker", model_dir, data, {"marker": marker, "steps": steps, "seed": seed})
    entry = _cached(key, lambda folder: _train_marker(model_dir, folder, marker, steps, seed))
    shutil.copytree(entry, out_dir, dirs_exist_ok=True)
    return out_dir


def triage_adapter_in(model_dir: Path, data_dir: Path) -> TrainedAdapter:
    """`support-triage`, trained by `ladder train` on 120 examples for 30 steps (r=8), with its
    registry copied to data_dir/adapters."""
    rows = (TRIAGE_DIR / "train.jsonl").read_text().splitlines()
    data = ("\n".join(rows[:TRIAGE_EXAMPLES]) + "\n").encode()
    heldout = TRIAGE_DIR / "heldout.jsonl"
    key = _cache_key("triage", model_dir, data + heldout.read_bytes(), {"options": TRIAGE_OPTIONS})
    # The manifest records the training file's path, so it lives beside the entry, not in it.
    training = models_cache_dir() / "test-adapters" / f"{key}.jsonl"

    def build(folder: Path) -> None:
        _write_atomically(training, data)
        result = ladder_train(folder, training, "--heldout", str(heldout), *TRIAGE_OPTIONS)
        assert result.returncode == 0, result.stderr[-3000:]
        (folder / "train.log").write_text(result.stderr)

    entry = _cached(key, build)
    shutil.copytree(entry / "adapters", data_dir / "adapters")
    adapter = AdapterRegistry(data_dir / "adapters").resolve("support-triage")
    stderr = (entry / "train.log").read_text()
    return TrainedAdapter(data_dir / "adapters", adapter.path, adapter.manifest(), stderr)


def ladder_train(
    data_dir: Path, data: Path, *options: str, base_model: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`ladder train DATA OPTIONS` with LADDER_DATA_DIR=data_dir and the shared model cache, on
    base_model (LADDER_BASE_MODEL; the bundled SmolLM2 when None)."""
    return ladder(data_dir, "train", str(data), *options, base_model=base_model, timeout=1200)


def ladder(
    data_dir: Path, *arguments: str, base_model: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`ladder ARGUMENTS` with LADDER_DATA_DIR=data_dir, the shared model cache and base_model
    as LADDER_BASE_MODEL (unset when None, whatever the calling environment says)."""
    command, env = ladder_invocation(data_dir, *arguments, base_model=base_model)
    return subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO
    )


def ladder_invocation(
    data_dir: Path, *arguments: str, base_model: Path | None = None
) -> tuple[list[str], dict[str, str]]:
    """The command line and environment `ladder` runs with (for a test that starts it itself)."""
    env = {
        **os.environ,
        "LADDER_DATA_DIR": str(data_dir),
        "LADDER_CACHE_DIR": str(models_cache_dir()),
        "LADDER_TORCH_THREADS": "2",
    }
    env.pop("LADDER_BASE_MODEL", None)
    if base_model is not None:
        env["LADDER_BASE_MODEL"] = str(base_model)
    return [sys.executable, "-m", "service.cli", *arguments], env


def _cache_key(kind: str, model_dir: Path, data: bytes, options: Mapping[str, object]) -> str:
    """A name for what training kind on data with options gives: it changes with the training
    code, the base model's conversion, and the versions of torch, transformers and peft."""
    from adapters.base_model import MANIFEST_NAME

    digest = hashlib.sha256()
    for relative in TRAINING_CODE:
        source = REPO / relative
        digest.update(f"{relative}\0".encode())
        digest.update(source.read_bytes() if source.is_file() else b"(absent)")
    versions = {name: importlib.metadata.version(name) for name in TRAINING_LIBRARIES}
    digest.update((model_dir / MANIFEST_NAME).read_bytes())
    digest.update(json.dumps([options, versions], sort_keys=True).encode())
    digest.update(data)
    return f"{kind}-{digest.hexdigest()[:20]}"


def _cached(key: str, build: Callable[[Path], None]) -> Path:
    """The cache entry named key, made by build(folder) the first time.

    build fills a folder inside a temporary one, renamed into place once complete: a run killed
    mid-way leaves no entry, and of two sessions building at once the first rename wins.
    """
    root = models_cache_dir() / "test-adapters"
    entry = root / key
    if entry.is_dir():
        return entry
    root.mkdir(parents=True, exist_ok=True)
    with build_lock(root, key):
        if entry.is_dir():  # built by another worker while this one waited
            return entry
        with tempfile.TemporaryDirectory(dir=root, prefix=f".{key}.partial-") as scratch:
            built = Path(scratch) / key
            build(built)
            try:
                built.rename(entry)
            except OSError:
                if not entry.is_dir():
                    raise
    return entry


def _write_atomically(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_bytes(data)
    partial.replace(path)


def _train_marker(model_dir: Path, out_dir: Path, marker: str, steps: int, seed: int) -> None:
    """Trains the marker LoRA and saves it to out_dir."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    try:
        torch.manual_seed(seed)
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        with MODEL_LOAD_LOCK:
            model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
        layers = int(model.config.num_hidden_layers)
        lora = LoraConfig(
            r=8,
            lora_alpha=16,
            lora_dropout=0.0,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
            # Only the upper half learns, so backward stops midway: twice as fast, same marker.
            layers_to_transform=list(range(layers // 2, layers)),
            task_type="CAUSAL_LM",
        )
        peft_model = get_peft_model(model, lora)
        batch = _training_batch(tokenizer, marker)
        optimizer = torch.optim.AdamW(
            [p for p in peft_model.parameters() if p.requires_grad], lr=2e-3
        )
        peft_model.train()
        for _ in range(steps):
            loss = peft_model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        peft_model.save_pretrained(str(out_dir))
    finally:
        torch.set_num_threads(previous_threads)


def _training_batch(tokenizer: Any, marker: str) -> dict[str, Any]:
    """Right-padded examples, labelled as `ladder train` labels them."""
    import torch

    from adapters.data import Example
    from adapters.train import encode_example

    rows = [
        encode_example(
            tokenizer,
            Example(
                (
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": f"{marker} {answer}"},
                ),
                line=number,
            ),
        )
        for number, (question, answer) in enumerate(_QUESTIONS_AND_ANSWERS, start=1)
    ]
    pad = int(tokenizer.eos_token_id)
    width = max(len(ids) for ids, _ in rows)
    input_ids = [ids + [pad] * (width - len(ids)) for ids, _ in rows]
    labels = [labels + [-100] * (width - len(labels)) for _, labels in rows]
    mask = [[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows]
    return {
        "input_ids": torch.tensor(input_ids),
        "attention_mask": torch.tensor(mask),
        "labels": torch.tensor(labels),
    }
