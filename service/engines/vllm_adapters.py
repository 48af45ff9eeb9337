"""vLLM's loaded LoRA adapters, kept in step with ladder's adapter registry."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager

import httpx

from service.engines.replicas import ReplicaState
from service.engines.vllm_wire import status_error, upstream_message
from service.errors import EngineError, LadderError

log = logging.getLogger("ladder.vllm")

Resolver = Callable[[str], tuple[str, str]]
"""An adapter ref (`name` or `name@version`) -> (its exact `name@version`, its folder)."""


class AdapterLost(EngineError):
    """vLLM answered 404 for an adapter ladder had loaded there (a 502 if it stands): the request
    is tried once more, the adapter loaded again."""


class AdapterSlots:
    """One vLLM replica's loaded adapters kept in step with the registry.

    A ref is loaded once (one lock per ref, so concurrent requests wait for the same load); the
    requests using it are counted in the replica's routing state (the router counts them when it
    routes), and a version superseded by a newer one is unloaded once idle. What vLLM serves is
    known here; the routing state follows it (seeded from it, told of every unload).
    """

    def __init__(self, client: httpx.AsyncClient, state: ReplicaState, model: str) -> None:
        self._client = client
        self._state = state
        self._model = model
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._seeded = asyncio.Lock()
        self._loaded: set[str] | None = None
        self._stale: set[str] = set()
        self._pinned: set[str] = set()

    @property
    def known(self) -> bool:
        """Whether what vLLM serves has been read (since the last `forget`)."""
        return self._loaded is not None

    async def seed(self) -> None:
        """Reads what vLLM serves now, unless already known."""
        await self._seed()

    def forget(self) -> None:
        """Reads what vLLM serves again on next use (it may have restarted)."""
        self._loaded = None

    @asynccontextmanager
    async def use(self, asked: str, ref: str, path: str) -> AsyncIterator[None]:
        """Keeps ref loaded while the body runs; asking by bare name retires older versions."""
        loaded = await self._seed()
        self._note(asked, ref, loaded)
        async with self._locks[ref]:
            if ref not in loaded:
                try:
                    await self._load(ref, path)
                except BaseException:
                    self._state.drop(ref)
                    raise
                loaded.add(ref)
            self._state.loaded.setdefault(ref, None)
        try:
            yield
        finally:
            try:
                await self.retire_idle()
            except (LadderError, httpx.HTTPError) as error:  # the answer stands; retried later
                log.warning("retiring superseded adapters failed: %s", error)

    async def unload(self, ref: str) -> bool:
        """Unloads ref now when idle, else when its last request ends; True if gone now."""
        loaded = await self._seed()
        loaded.add(ref)  # vLLM may hold it from its start-up list, unknown to this process
        self._pinned.discard(ref)
        self._stale.add(ref)
        await self.retire_idle()
        return ref not in loaded

    async def retire_idle(self) -> None:
        """Unloads every superseded ref no request uses."""
        loaded = await self._seed()
        for ref in sorted(self._stale):
            async with self._locks[ref]:
                if self._state.in_use[ref] or ref not in self._stale:
                    continue
                if ref in loaded:
                    await self._unload(ref)
                    loaded.discard(ref)
                    self._state.drop(ref)
                self._stale.discard(ref)

    async def evict(self, refs: Iterable[str]) -> None:
        """Unloads refs the router evicted to make room, each unless a request took it up since."""
        loaded = await self._seed()
        for ref in refs:
            async with self._locks[ref]:
                if ref in loaded and not self._state.in_use[ref] and ref not in self._state.loaded:
                    await self._unload(ref)
                    loaded.discard(ref)

    def _note(self, asked: str, ref: str, loaded: set[str]) -> None:
        """Marks the versions a bare name no longer resolves to as stale."""
        if "@" in asked:
            self._pinned.add(ref)
            self._stale.discard(ref)
            return
        prefix = ref.split("@")[0] + "@"
        self._stale.discard(ref)
        for other in loaded:
            if other.startswith(prefix) and other != ref and other not in self._pinned:
                self._stale.add(other)

    async def _seed(self) -> set[str]:
        """What vLLM serves, read once from /v1/models (start-up adapters included)."""
        async with self._seeded:
            if self._loaded is None:
                response = await self._client.get("/v1/models")
                if response.status_code != 200:
                    raise status_error(response)
                self._loaded = {str(m.get("id")) for m in response.json().get("data") or []}
                self._state.seed(sorted(self._loaded - {self._model}))
            return self._loaded

    async def _load(self, ref: str, path: str) -> None:
        body = {"lora_name": ref, "lora_path": path}
        response = await self._client.post("/v1/load_lora_adapter", json=body)
        loaded_before = response.status_code == 400 and "already been loaded" in response.text
        if response.status_code != 200 and not loaded_before:
            message = upstream_message(response)
            raise EngineError(f"vLLM could not load adapter {ref}: {message}")

    async def _unload(self, ref: str) -> None:
        response = await self._client.post("/v1/unload_lora_adapter", json={"lora_name": ref})
        if response.status_code not in (200, 404):  # 404: vLLM no longer has it either way
            message = upstream_message(response)
            raise EngineError(f"vLLM could not unload adapter {ref}: {message}")
