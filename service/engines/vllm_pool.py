"""The vLLM engine's replicas: per replica a pooled client, its adapter slots and routing state;
health probes that re-admit a replica once its cooldown has passed; per-replica metrics.

The routing policy is service/engines/replicas.py; this module does its I/O.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from service.engines.replicas import Decision, NoReplica, Policy, ReplicaRouter, ReplicaState
from service.engines.transport import AiohttpTransport
from service.engines.vllm_adapters import AdapterLost, AdapterSlots
from service.errors import EngineTimeout, EngineUnavailable, LadderError

if TYPE_CHECKING:
    from service.settings import Settings

log = logging.getLogger("ladder.vllm")


@dataclass(frozen=True)
class RoutingOptions:
    """How requests are spread over replicas (see replicas.py for the policies)."""

    policy: Policy = "affinity"
    slots: int = 4
    cooldown_s: float = 5.0
    spill: int = 4
    health_timeout_s: float = 2.0

    @classmethod
    def of(cls, settings: Settings) -> RoutingOptions:
        return cls(
            settings.vllm_routing,
            settings.vllm_max_loras,
            settings.vllm_replica_cooldown_s,
            settings.vllm_affinity_spill,
            settings.vllm_health_timeout_s,
        )


@dataclass(frozen=True)
class ExpectedModel:
    """The base model ladder is configured for: its source, prepared folder and window."""

    source: str
    folder: str
    window: int

    def mismatch(self, served: Mapping[str, Any] | None, name: str) -> str | None:
        """Why vLLM's /v1/models entry for the served name is not this model, or None. A field
        vLLM leaves out is not compared; a longer vLLM window is fine (ladder budgets within it)."""
        if served is None:
            return f"vLLM serves no model named {name!r}"
        root, length = served.get("root"), served.get("max_model_len")
        names = {self.source.rstrip("/"), self.folder.rstrip("/")}
        if (root is None or str(root).rstrip("/") in names) and (
            not isinstance(length, int) or length >= self.window
        ):
            return None
        configured = self.source if self.source == self.folder else f"{self.source} ({self.folder})"
        return (
            f"vLLM serves {root} with max_model_len {length}, ladder is configured for"
            f" {configured} with window {self.window}"
        )


class Replica:
    """One vLLM server: its client (and the transport under it), adapter slots, routing state."""

    def __init__(
        self,
        url: str,
        model: str,
        timeout: httpx.Timeout,
        transport: httpx.AsyncBaseTransport,
        state: ReplicaState,
    ) -> None:
        self.url = url.rstrip("/")
        self.transport = transport
        self.client = httpx.AsyncClient(base_url=self.url, timeout=timeout, transport=transport)
        self.chat_url = self.client.build_request("POST", "/v1/chat/completions").url
        self.state = state
        self.adapters = AdapterSlots(self.client, state, model)
        self.probing = False
        self._model_matched = False

    async def unready_reason(
        self, model: str, expected: ExpectedModel | None, timeout_s: float
    ) -> str | None:
        """Why this vLLM cannot take requests now, or None. A served model that matched is not
        asked again until /health fails (a restart may bring another model)."""
        try:
            response = await self.client.get("/health", timeout=timeout_s)
        except httpx.HTTPError as error:
            self._model_matched = False
            return f"vLLM cannot be reached: {type(error).__name__} {error}".rstrip()
        if response.status_code != 200:
            self._model_matched = False
            return f"vLLM's /health answered {response.status_code}"
        if expected is None or self._model_matched:
            return None
        reason = await self._served_model_mismatch(model, expected, timeout_s)
        self._model_matched = reason is None
        return reason

    async def _served_model_mismatch(
        self, model: str, expected: ExpectedModel, timeout_s: float
    ) -> str | None:
        """Compares vLLM's /v1/models entry for the served name with the expected model."""
        try:
            response = await self.client.get("/v1/models", timeout=timeout_s)
            listed = response.json().get("data") if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError, AttributeError) as error:
            return f"vLLM's /v1/models could not be read: {type(error).__name__} {error}".rstrip()
        if not isinstance(listed, list):
            return f"vLLM's /v1/models answered {response.status_code} without a model list"
        served = [m for m in listed if isinstance(m, dict) and m.get("id") == model]
        return expected.mismatch(served[0] if served else None, model)


class ReplicaPool:
    """The replicas behind one engine, routed by a ReplicaRouter.

    A request that fails a replica (unreachable, timed out, 503) marks it down for the cooldown;
    a due replica is probed (/health and the served model) in the background, and re-admitted
    when it answers; its adapters are read again from vLLM, as it may have restarted.
    """

    def __init__(
        self,
        urls: Sequence[str],
        model: str,
        *,
        timeout: httpx.Timeout,
        transport: Callable[[], httpx.AsyncBaseTransport],
        options: RoutingOptions,
        expected: ExpectedModel | None = None,
        pinned: frozenset[str] = frozenset(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.model = model
        self.options = options
        self.expected = expected
        self.replicas = [
            Replica(url, model, timeout, transport(), ReplicaState(url, options.slots, pinned))
            for url in urls
        ]
        self.router = ReplicaRouter([r.state for r in self.replicas], options.policy, options.spill)
        self.health: dict[str, str | None] = {}
        self._clock = clock
        self._probes: set[asyncio.Task[None]] = set()

    @asynccontextmanager
    async def routed(
        self, adapter: str | None, tried: list[Replica]
    ) -> AsyncIterator[tuple[Replica, Decision]]:
        """A replica for one request (added to tried), its eviction done, held for the request;
        a failure of the replica marks it down."""
        self._probe_due()
        if adapter is not None:
            await self._read_adapters()
        try:
            decision = self.router.choose(adapter, [r.state for r in tried])
        except NoReplica as error:
            raise EngineUnavailable(str(error)) from error
        replica = self._of(decision.replica)
        tried.append(replica)
        self.router.begin(decision)
        try:
            if decision.to_unload:
                await self._evict(replica, decision.to_unload)
            yield replica, decision
        except (EngineUnavailable, EngineTimeout) as error:
            replica.state.errors += 1
            self.mark_down(replica, str(error))
            raise
        except AdapterLost:
            replica.adapters.forget()  # what it serves is read again before the next request
            replica.state.forget_all()
            raise
        except LadderError as error:
            replica.state.errors += error.status_code >= 500  # not a request vLLM refused
            raise
        else:
            self.router.recover(replica.state)
        finally:
            self.router.end(decision)

    async def load_on(self, replica: Replica, asked: str, ref: str, path: str) -> None:
        """Loads an adapter on a replica ahead of traffic, making room as a request would."""
        state = replica.state
        to_unload = state.eviction(ref)
        for evicted in to_unload:
            state.drop(evicted)
        await self._evict(replica, to_unload)
        state.adapter_loads += not state.has(ref)
        async with replica.adapters.use(asked, ref, path):
            state.loaded.move_to_end(ref)

    def can_retry(self, tried: Sequence[Replica]) -> bool:
        """Whether a request that failed on a replica may try once more, on one it has not
        tried (a request no replica was chosen for has nothing to retry)."""
        return len(tried) == 1 and len(self.replicas) > 1

    def mark_down(self, replica: Replica, why: str) -> None:
        """Routes around a replica until its cooldown has passed and it answers /health."""
        if replica.state.up:
            log.warning("vLLM replica %s is down: %s", replica.url, why)
        self.router.fail(replica.state, self._clock() + self.options.cooldown_s)
        replica.adapters.forget()

    async def check_all(self) -> list[str | None]:
        """Asks every replica whether it can take requests (kept in `health`); one that cannot
        is marked down, a down one that can is re-admitted once its cooldown has passed."""
        reasons = await asyncio.gather(*(self._check(r) for r in self.replicas))
        return list(reasons)

    def report(self) -> list[dict[str, object]]:
        """Each replica as /ready shows it, from the last checks."""
        return [
            {
                "url": r.url,
                "healthy": r.url in self.health and self.health[r.url] is None,
                "routed": r.state.up,
                "reason": self.health.get(r.url),
                "outstanding": r.state.outstanding,
                "adapters": list(r.state.loaded),
            }
            for r in self.replicas
        ]

    def collect(self) -> Iterator[Metric]:
        """Per-replica counters and gauges for /metrics (a prometheus_client collector)."""
        counters = {
            "requests": "Requests routed to each vLLM replica.",
            "errors": "Requests that failed on each vLLM replica.",
            "adapter_loads": "Adapter loads each vLLM replica was asked for.",
            "affinity_hits": "Requests routed to a replica that held their adapter.",
        }
        for name, text in counters.items():
            family = CounterMetricFamily(f"ladder_vllm_replica_{name}", text, labels=["replica"])
            for r in self.replicas:
                family.add_metric([r.url], getattr(r.state, name))
            yield family
        gauges = {
            "up": ("1 while requests are routed to the replica.", lambda s: float(s.up)),
            "outstanding": ("Requests in flight on the replica.", lambda s: s.outstanding),
            "adapters": ("Adapters loaded on the replica.", lambda s: len(s.loaded)),
        }
        for name, (text, value) in gauges.items():
            gauge = GaugeMetricFamily(f"ladder_vllm_replica_{name}", text, labels=["replica"])
            for r in self.replicas:
                gauge.add_metric([r.url], value(r.state))
            yield gauge

    async def aclose(self) -> None:
        for task in list(self._probes):
            task.cancel()
        for replica in self.replicas:
            await replica.client.aclose()  # and its transport

    def _of(self, state: ReplicaState) -> Replica:
        return next(r for r in self.replicas if r.state is state)

    async def _read_adapters(self) -> None:
        """Reads what each replica that is up serves, where not known yet (its start-up adapters
        count for affinity); a replica that cannot say is marked down."""
        unread = [r for r in self.replicas if r.state.up and not r.adapters.known]
        answers = await asyncio.gather(*(r.adapters.seed() for r in unread), return_exceptions=True)
        for replica, answer in zip(unread, answers, strict=True):
            if isinstance(answer, Exception):
                self.mark_down(replica, f"its adapters could not be read: {answer}")

    async def _evict(self, replica: Replica, refs: Sequence[str]) -> None:
        try:
            await replica.adapters.evict(refs)
        except (LadderError, httpx.HTTPError) as error:  # the request goes on; vLLM has room
            log.warning("unloading %s from %s failed: %s", ", ".join(refs), replica.url, error)

    async def _check(self, replica: Replica) -> str | None:
        timeout_s = self.options.health_timeout_s
        reason = await replica.unready_reason(self.model, self.expected, timeout_s)
        self.health[replica.url] = reason
        if reason is not None:
            self.mark_down(replica, reason)
        elif replica.state in self.router.due(self._clock()):
            log.info("vLLM replica %s is back", replica.url)
            self.router.recover(replica.state)
        return reason

    def _probe_due(self) -> None:
        """Probes, in the background, every down replica whose cooldown has passed."""
        for state in self.router.due(self._clock()):
            replica = self._of(state)
            if not replica.probing:
                replica.probing = True
                task = asyncio.create_task(self._probe(replica))
                self._probes.add(task)
                task.add_done_callback(self._probes.discard)

    async def _probe(self, replica: Replica) -> None:
        try:
            await self._check(replica)
        finally:
            replica.probing = False


def shared_or_own(
    transport: httpx.AsyncBaseTransport | None, max_connections: int
) -> Callable[[], httpx.AsyncBaseTransport]:
    """A given transport for every replica (tests), else a pool of each replica's own."""
    if transport is not None:
        return lambda: transport
    return lambda: AiohttpTransport(max_connections)
