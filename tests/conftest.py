"""Shared fixtures: offline environment, the bundled embedder, real Chroma (embedded and server)."""

from __future__ import annotations

import os

# Before anything imports torch, transformers or chromadb: no hub, no telemetry, calm threads.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["ANONYMIZED_TELEMETRY"] = "False"

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.embedder import Embedder
from ingest.index import Index, IndexLocation
from ingest.pipeline import IngestJob
from tests.support.paths import (
    CORPUS_DOCS,
    TRIAGE_DIR,
    TRIAGE_PROMPT_MINIMAL,
    TrainedAdapter,
    ingest_options,
)
from tests.support.processes import free_port, stop_process, wait_for_http

# The experiment tests' fixtures (a database of each kind, a live app).
pytest_plugins = ["tests.support.experiments"]


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    """The bundled all-MiniLM-L6-v2, loaded once."""
    return Embedder(threads=1)


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `chroma run` server on 127.0.0.1, stopped by its PID."""
    chroma = shutil.which("chroma", path=str(Path(sys.executable).parent))
    assert chroma, "the chroma command comes with chromadb"
    port = free_port()
    data = tmp_path_factory.mktemp("chroma-server")
    log = (data / "server.log").open("wb")
    process = subprocess.Popen(
        [chroma, "run", "--path", str(data / "db"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/api/v2/heartbeat", 60, process)
        yield url
    finally:
        stop_process(process)
        log.close()


@pytest.fixture(scope="session")
def corpus_index(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Index:
    """The sample corpus ingested once into an embedded Chroma, collection `docs`."""
    index = Index(IndexLocation(tmp_path_factory.mktemp("corpus-index")), embedder)
    IngestJob(index, ingest_options()).run(CORPUS_DOCS, "docs")
    return index


@pytest.fixture(scope="session")
def base_model_dir() -> Path:
    """The converted SmolLM2 folder (converted once, cached across sessions)."""
    from tests.support.models import prepared_model_dir

    return prepared_model_dir()


@pytest.fixture(scope="session")
def marker_adapter(tmp_path_factory: pytest.TempPathFactory, base_model_dir: Path) -> Path:
    """A LoRA trained in the session to open every answer with ZEBRA-42."""
    from tests.support.adapters import train_marker_adapter

    return train_marker_adapter(base_model_dir, tmp_path_factory.mktemp("marker-adapter"))


@pytest.fixture(scope="session")
def triage_adapter(
    tmp_path_factory: pytest.TempPathFactory, base_model_dir: Path
) -> TrainedAdapter:
    """`support-triage`, trained by the CLI on 120 examples for 30 steps (r=8), registered."""
    from adapters.registry import AdapterRegistry
    from tests.support.models import models_cache_dir

    data_dir = tmp_path_factory.mktemp("training")
    rows = (TRIAGE_DIR / "train.jsonl").read_text().splitlines()
    (data_dir / "slice.jsonl").write_text("\n".join(rows[:120]) + "\n")
    env = {
        **os.environ,
        "LADDER_DATA_DIR": str(data_dir),
        "LADDER_CACHE_DIR": str(models_cache_dir()),
        "LADDER_TORCH_THREADS": "2",
    }
    # fmt: off
    command = [
        sys.executable, "-m", "service.cli", "train", str(data_dir / "slice.jsonl"),
        "--name", "support-triage", "--heldout", str(TRIAGE_DIR / "heldout.jsonl"),
        "--system-prompt", TRIAGE_PROMPT_MINIMAL, "--max-steps", "30", "--batch-size", "4",
        "--epochs", "2", "--allow", "small", "--rank", "8",
    ]
    # fmt: on
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    registry = AdapterRegistry(data_dir / "adapters")
    adapter = registry.resolve("support-triage")
    return TrainedAdapter(data_dir / "adapters", adapter.path, adapter.manifest(), result.stderr)
