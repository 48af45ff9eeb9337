"""Shared fixtures (offline environment, the bundled embedder, real Chroma, the model and adapters)
and the suite's tiers: which tests are `slow` follows from what they use, never from a hand mark."""

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
from tests.support.paths import CORPUS_DOCS, TrainedAdapter, ingest_options
from tests.support.processes import free_port, stop_process, wait_for_http
from tests.support.scheduling import work_unit

# The experiment tests' fixtures (a database of each kind, a live app).
pytest_plugins = ["tests.support.experiments"]

# A test is slow when its fixture closure holds one of these...
SLOW_FIXTURES = frozenset(
    {
        "base_model_dir",  # the converted SmolLM2, loaded by the test or a process it starts
        "marker_adapter",  # trained adapters
        "triage_adapter",
        "chroma_server",  # a `chroma run` process
        "ingest_forkserver",  # ingestion children that load torch and are SIGKILLed
        "vllm_installed",  # a real vLLM
    }
)
# ...or when its module calls one of these starters directly, without a fixture.
SLOW_STARTERS = frozenset(
    {"ladder_serve", "ladder_train", "ChromaServer", "LocalEngine", "prepare_base_model"}
)
# Timeouts beyond pyproject's `timeout` (the fast tier's): pytest-timeout counts fixture set-up,
# so the first test to ask for a model, an adapter or vLLM pays for converting, training or
# installing it when no cache holds it yet.
BUILDING_FIXTURES = frozenset(
    {"base_model_dir", "marker_adapter", "triage_adapter", "vllm_installed"}
)
BUILD_TIMEOUT_S = 1800
SLOW_TIMEOUT_S = 600


def slow_because(item: pytest.Item) -> str | None:
    """What makes a collected test slow, or None."""
    if "tests/vllm/" in item.nodeid:
        return "runs against a real vLLM"
    used = SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ()))
    if used:
        return f"uses {', '.join(sorted(used))}"
    module = getattr(item, "module", None)
    started = SLOW_STARTERS.intersection(vars(module)) if module is not None else set()
    return f"starts {', '.join(sorted(started))}" if started else None


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by these marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Marks slow tests (and vLLM ones) from what they use, and gives them a longer timeout;
    in an xdist worker, also orders them for the two workers of `make test`."""
    for item in items:
        if "tests/vllm/" in item.nodeid:
            item.add_marker(pytest.mark.vllm)
        because = slow_because(item)
        if because:
            item.add_marker(pytest.mark.slow(reason=because))
        if item.get_closest_marker("timeout") is None:
            if BUILDING_FIXTURES.intersection(getattr(item, "fixturenames", ())):
                item.add_marker(pytest.mark.timeout(BUILD_TIMEOUT_S))
            elif item.get_closest_marker("slow"):
                item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_S))
    if hasattr(config, "workerinput"):
        schedule_for_workers(items)


def schedule_for_workers(items: list[pytest.Item]) -> None:
    """Orders the tests for `make test`'s workers (`-n 2 --dist loadscope --no-loadscope-reorder`,
    units from tests/support/scheduling.py), longest units first so none starts last: vLLM, then
    modules with a slow test, then the fast tier. The sort is stable: a module stays in order."""
    rank: dict[str, int] = {}
    for item in items:
        tier = 0 if item.get_closest_marker("vllm") else 1 if item.get_closest_marker("slow") else 2
        unit = work_unit(item.nodeid)
        rank[unit] = min(rank.get(unit, 2), tier)
    items.sort(key=lambda item: rank[work_unit(item.nodeid)])


@pytest.hookimpl(optionalhook=True)  # xdist may be absent or off (`-p no:xdist`)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """xdist hands out whole modules, all of vLLM as one (tests/support/scheduling.py)."""
    from tests.support.scheduling import ModuleScheduling

    return ModuleScheduling(config, log)  # type: ignore[arg-type]


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
    """A LoRA that opens every answer with ZEBRA-42 (trained once, cached across sessions)."""
    from tests.support.adapters import train_marker_adapter

    return train_marker_adapter(base_model_dir, tmp_path_factory.mktemp("marker-adapter"))


@pytest.fixture(scope="session")
def triage_adapter(
    tmp_path_factory: pytest.TempPathFactory, base_model_dir: Path
) -> TrainedAdapter:
    """`support-triage`, trained by `ladder train` (cached across sessions), registered in a
    data dir of this session's own."""
    from tests.support.adapters import triage_adapter_in

    return triage_adapter_in(base_model_dir, tmp_path_factory.mktemp("training"))
