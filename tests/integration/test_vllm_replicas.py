"""A real `ladder serve` (vllm engine) in front of several scripted vLLM replicas (processes on
127.0.0.1 with vLLM's runtime LoRA routes): requests for an adapter stay on the replica that
loaded it, base requests go through the leak guard's adapter on every replica, a full replica
unloads its least recently used adapter, a replica killed mid-traffic costs no request that had
not started streaming and is routed to again once it is back, admin loads reach every replica,
and /ready and /metrics show each one."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.registry import AdapterRegistry
from service.engines.factory import load_base_model
from service.settings import Settings
from tests.support.experiments import ADMIN
from tests.support.fault_servers import UpstreamProcess
from tests.support.ladder_process import ladder_env, ladder_serve
from tests.support.models import models_cache_dir
from tests.support.processes import free_port
from tests.unit.test_registry_base import peft_folder

pytestmark = [pytest.mark.server, pytest.mark.slow]

ADAPTERS = [f"tone{number}" for number in range(10)]
CONFIG = "configurations:\n  plain: {}\n" + "".join(
    f"  {name}:\n    adapter: {name}\n" for name in ADAPTERS
)
GUARD = "ladder-identity"


@dataclass
class Replicas:
    """The scripted replicas and a client of the ladder in front of them."""

    upstreams: list[UpstreamProcess]
    http: httpx.Client

    def stats(self) -> list[dict[str, Any]]:
        """What each replica was asked: chats by model, loads, unloads, what it holds."""
        return [httpx.get(f"{u.url}/stats", timeout=10).json() for u in self.upstreams]

    def ask(self, model: str, stream: bool = False) -> httpx.Response:
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
        return self.http.post("/v1/chat/completions", json=body)


def register_adapters(workdir: Path) -> None:
    """Registers the test adapters for the bundled base model in the workdir's registry."""
    base = load_base_model(
        Settings(data_dir=workdir / "data", cache_dir_override=models_cache_dir())
    )
    registry = AdapterRegistry(workdir / "data" / "adapters")
    width = base.fingerprint.hidden_size
    layers = {"q_proj": (width, width), "v_proj": (width, width // 3)}
    for name in ADAPTERS:
        registry.register(
            name, peft_folder(workdir / "src" / name, base.source, layers), {}, base=base
        )


@contextmanager
def replicas(workdir: Path, count: int, **settings: str) -> Iterator[Replicas]:
    """count scripted replicas (LoRA routes on, 4 pieces 0.1 s apart) and a ladder over them."""
    register_adapters(workdir)
    with ExitStack() as stack:
        upstreams = []
        for number in range(count):
            upstream = UpstreamProcess(free_port(), workdir / f"upstream-{number}.log")
            stack.callback(upstream.kill)
            upstream.start("ok", pieces=4, delay=0.1, lora=True)
            upstreams.append(upstream)
        env = ladder_env(workdir, upstreams[0].url, None)
        (workdir / "configs.yaml").write_text(CONFIG)
        env |= {
            "LADDER_VLLM_URLS": ",".join(u.url for u in upstreams),
            "LADDER_VLLM_LEAK_GUARD": "true",
            "LADDER_VLLM_REPLICA_COOLDOWN_S": "0.5",
            "LADDER_VLLM_READ_TIMEOUT_S": "10",
            **{f"LADDER_{key.upper()}": value for key, value in settings.items()},
        }
        ladder = stack.enter_context(ladder_serve(env, workdir / "ladder.log", probe="/ready"))
        http = stack.enter_context(httpx.Client(base_url=ladder.base, timeout=30))
        yield Replicas(upstreams, http)


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    """Three replicas with room for the guard's adapter and two others each."""
    with replicas(tmp_path_factory.mktemp("replicas-3"), 3, vllm_max_loras="3") as stack:
        yield stack


def serving(stack: Replicas, ref: str) -> list[int]:
    """How many chats each replica answered for a model ref."""
    return [stats["chat"].get(ref, 0) for stats in stack.stats()]


def test_requests_for_one_adapter_stay_on_the_replica_that_loaded_it(three: Replicas) -> None:
    for _ in range(6):
        assert three.ask("tone0").status_code == 200
        assert three.ask("tone0", stream=True).status_code == 200

    counts = serving(three, "tone0@1")
    loads = [stats["loads"].count("tone0@1") for stats in three.stats()]
    assert sorted(counts) == [0, 0, 12], counts
    assert loads == [int(count > 0) for count in counts]
    holder = three.upstreams[counts.index(12)].url
    metrics = three.http.get("/metrics").text
    hits = f'ladder_vllm_replica_affinity_hits_total{{replica="{holder}"}}'
    assert any(
        line.startswith(hits) and float(line.split()[-1]) >= 11 for line in metrics.splitlines()
    )


def test_base_requests_go_through_the_guard_adapter_on_each_replica(three: Replicas) -> None:
    for _ in range(6):
        assert three.ask("plain").status_code == 200

    stats = three.stats()
    assert sum(s["chat"].get(GUARD, 0) for s in stats) == 6
    assert all(s["chat"].get("base", 0) == 0 for s in stats), stats
    assert all(GUARD in s["loaded"] for s in stats if s["chat"].get(GUARD))


def test_admin_load_reaches_every_replica(three: Replicas) -> None:
    response = three.http.post("/admin/adapters/tone5/load", headers=ADMIN)

    assert response.status_code == 200, response.text
    assert [("tone5@1" in stats["loaded"]) for stats in three.stats()] == [True, True, True]


def test_ready_and_metrics_show_every_replica(three: Replicas) -> None:
    ready = three.http.get("/ready")

    assert ready.status_code == 200
    shown = {(r["url"], r["healthy"], r["routed"]) for r in ready.json()["replicas"]}
    assert shown == {(u.url, True, True) for u in three.upstreams}
    metrics = three.http.get("/metrics").text
    for upstream in three.upstreams:
        for name in ("requests_total", "errors_total", "adapter_loads_total", "up"):
            assert f'ladder_vllm_replica_{name}{{replica="{upstream.url}"}}' in metrics


def answered(stack: Replicas, model: str, stream: bool) -> tuple[bool, bool]:
    """(whether the request was answered whole, whether any text reached the client first)."""
    if not stream:
        response = stack.ask(model)
        return response.status_code == 200, response.status_code == 200
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with stack.http.stream("POST", "/v1/chat/completions", json=body) as response:
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    text = any('"content":"word' in event for event in events)
    failed = response.status_code != 200 or any('"error"' in event for event in events)
    return not failed, text


def test_a_replica_killed_mid_traffic_costs_no_request_that_had_not_streamed(
    three: Replicas,
) -> None:
    victim = three.upstreams[1]
    outcomes: list[tuple[bool, bool, bool]] = []
    done = threading.Semaphore(0)

    def traffic(worker: int) -> None:
        for number in range(12):
            model, stream = ADAPTERS[(worker + number) % 5], bool(number % 2)
            outcomes.append((stream, *answered(three, model, stream)))
            done.release()

    workers = [threading.Thread(target=traffic, args=(w,)) for w in range(6)]
    for worker in workers:
        worker.start()
    for _ in range(12):  # the kill lands while traffic flows, after a known share of it
        done.acquire()
    victim.kill()
    for worker in workers:
        worker.join()

    lost = [o for o in outcomes if not o[1] and not (o[0] and o[2])]
    assert len(outcomes) == 72 and lost == [], lost
    victim.start("ok", pieces=4, delay=0.1, lora=True)
    poll_until(lambda: routed(three, victim.url), 30, "the restarted replica was not re-admitted")
    before = serving(three, GUARD)[1]
    for _ in range(6):
        assert three.ask("plain").status_code == 200
    assert serving(three, GUARD)[1] > before


def routed(stack: Replicas, url: str) -> bool:
    listed = stack.http.get("/ready").json()["replicas"]
    return any(r["url"] == url and r["routed"] for r in listed)


def poll_until(condition: Callable[[], bool], timeout_s: float, failure: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, failure
        time.sleep(0.1)


def test_a_full_replica_unloads_its_least_recently_used_adapter(three: Replicas) -> None:
    evictions = 0
    for name in [*ADAPTERS[6:], *ADAPTERS, "tone7", "tone0", "tone8"]:
        before = three.stats()
        assert three.ask(name).status_code == 200
        for old, new in zip(before, three.stats(), strict=True):
            unloaded = new["unloads"][len(old["unloads"]) :]
            if unloaded:
                last_use = {entry[1]: number for number, entry in enumerate(old["events"])}
                idle = sorted(set(old["loaded"]) - {GUARD}, key=last_use.__getitem__)
                assert unloaded == idle[: len(unloaded)], (name, old["events"])
                assert len(set(new["loaded"]) - {GUARD}) <= 3, new["loaded"]  # the guard: no slot
                evictions += len(unloaded)
    assert evictions >= 1
