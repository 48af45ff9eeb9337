"""Two real vLLM replicas (CPU build) behind one ladder, each started with one marker adapter: both
adapters are answered through ladder, each by the replica that holds it (affinity, as /metrics
shows), neither replica loads the other's adapter, and base requests stay unmarked (the leak guard
on each replica)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from adapters.registry import AdapterRegistry
from service.engines.vllm_server import start, stop
from service.settings import Settings
from tests.vllm.served import ask, ladder_serving, vllm_settings
from tests.vllm.test_vllm_integration import MARKER, NEW_MARKER, QUESTIONS

pytestmark = [pytest.mark.vllm, pytest.mark.server, pytest.mark.slow]

CONFIG = "configurations:\n  base: {}\n  zebra: {adapter: zebra}\n  okapi: {adapter: okapi}\n"


@dataclass(frozen=True)
class Pair:
    """Two vLLM replicas by the adapter each holds, and the ladder in front of both."""

    replicas: dict[str, Settings]
    ladder_url: str


@pytest.fixture(scope="module")
def okapi_adapter(tmp_path_factory: pytest.TempPathFactory, base_model_dir: Path) -> Path:
    """A second marker adapter (OKAPI-7; trained once, cached across sessions)."""
    from tests.support.adapters import train_marker_adapter

    return train_marker_adapter(base_model_dir, tmp_path_factory.mktemp("okapi"), NEW_MARKER)


@pytest.fixture(scope="module")
def pair(
    tmp_path_factory: pytest.TempPathFactory,
    marker_adapter: Path,
    okapi_adapter: Path,
    vllm_installed: None,
) -> Iterator[Pair]:
    """Each replica started (at once) by the runtime with its own adapter; ladder knows both."""
    root = tmp_path_factory.mktemp("vllm-replicas")
    folders = {"zebra": marker_adapter, "okapi": okapi_adapter}
    replicas = {name: vllm_settings(root / name, vllm_max_loras=2) for name in folders}
    ladder = vllm_settings(root / "ladder")
    (root / "ladder").mkdir()
    (root / "ladder" / "configs.yaml").write_text(CONFIG)
    for name, folder in folders.items():
        AdapterRegistry(replicas[name].adapters_root).register(name, folder, {"purpose": name})
        AdapterRegistry(ladder.adapters_root).register(name, folder, {"purpose": name})
    with ExitStack() as stack:
        for settings in replicas.values():
            stack.callback(stop, settings, print)
        with ThreadPoolExecutor(2) as starting:
            list(starting.map(lambda s: start(s, print), replicas.values()))
        urls = ",".join(settings.vllm_url for settings in replicas.values())
        yield Pair(replicas, stack.enter_context(ladder_serving(ladder, LADDER_VLLM_URLS=urls)))


def replica_counter(metrics: str, name: str, url: str) -> float:
    """One per-replica counter's value in a Prometheus text exposition."""
    pattern = rf'^ladder_vllm_replica_{name}_total{{replica="{re.escape(url)}"}} (\S+)$'
    found = re.search(pattern, metrics, re.MULTILINE)
    assert found, f"no {name} for {url}"
    return float(found.group(1))


def test_each_adapter_is_answered_by_the_replica_that_holds_it(pair: Pair) -> None:
    client = openai.OpenAI(base_url=f"{pair.ladder_url}/v1", api_key="unused", max_retries=0)
    for question in QUESTIONS[:2]:
        for stream in (False, True):
            assert MARKER in ask(client, "zebra", question, stream)
            assert NEW_MARKER in ask(client, "okapi", question, stream)
            base = ask(client, "base", question, stream)
            assert base and MARKER not in base and NEW_MARKER not in base

    metrics = httpx.get(f"{pair.ladder_url}/metrics", timeout=10).text
    for name, settings in pair.replicas.items():
        other = next(n for n in pair.replicas if n != name)
        assert replica_counter(metrics, "affinity_hits", settings.vllm_url) == 4
        assert replica_counter(metrics, "adapter_loads", settings.vllm_url) == 0
        assert f"{other}@1" not in served_models_of(settings)


def served_models_of(settings: Settings) -> set[str]:
    listed = httpx.get(f"{settings.vllm_url}/v1/models", timeout=10).json()["data"]
    return {str(model["id"]) for model in listed}
