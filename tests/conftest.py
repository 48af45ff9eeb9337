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
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ingest.chunking import ChunkingOptions
from ingest.embedder import Embedder
from ingest.index import Index, IndexLocation
from ingest.pipeline import IngestJob, IngestOptions

# The experiment tests' fixtures (a database of each kind, a live app).
pytest_plugins = ["tests.experiments_support"]

REPO = Path(__file__).resolve().parent.parent
CORPUS_DOCS = REPO / "corpus" / "docs"
QA_FILE = REPO / "corpus" / "qa.jsonl"
TRIAGE_DIR = REPO / "corpus" / "tasks" / "support-triage"
TRIAGE_PROMPT_MINIMAL = (TRIAGE_DIR / "system_prompt_minimal.txt").read_text().strip()


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_http(url: str, timeout_s: float, process: subprocess.Popen[bytes]) -> None:
    """Polls url until it answers 200, the process dies, or the time is up."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout_s} s")


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Stops a server started by a fixture, by its PID."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


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


def ingest_options() -> IngestOptions:
    """Small batches, so writes interleave with embedding as in a large run."""
    return IngestOptions(chunking=ChunkingOptions(size=200, overlap=30), embed_batch_size=32)


@pytest.fixture(scope="session")
def corpus_index(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Index:
    """The sample corpus ingested once into an embedded Chroma, collection `docs`."""
    index = Index(IndexLocation(tmp_path_factory.mktemp("corpus-index")), embedder)
    IngestJob(index, ingest_options()).run(CORPUS_DOCS, "docs")
    return index


@pytest.fixture(scope="session")
def base_model_dir() -> Path:
    """The converted SmolLM2 folder (converted once, cached across sessions)."""
    from tests.fixtures_models import prepared_model_dir

    return prepared_model_dir()


@pytest.fixture(scope="session")
def marker_adapter(tmp_path_factory: pytest.TempPathFactory, base_model_dir: Path) -> Path:
    """A LoRA trained in the session to open every answer with ZEBRA-42."""
    from tests.adapter_fixture import train_marker_adapter

    return train_marker_adapter(base_model_dir, tmp_path_factory.mktemp("marker-adapter"))


@dataclass(frozen=True)
class TrainedAdapter:
    """A registered adapter trained in the session by `ladder train`."""

    adapters_root: Path
    path: Path
    manifest: dict
    stderr: str


@pytest.fixture(scope="session")
def triage_adapter(
    tmp_path_factory: pytest.TempPathFactory, base_model_dir: Path
) -> TrainedAdapter:
    """`support-triage`, trained by the CLI on 120 examples for 30 steps (r=8), registered."""
    from adapters.registry import AdapterRegistry
    from tests.fixtures_models import models_cache_dir

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
