"""vLLM's loaded LoRA adapters, kept in step with ladder's adapter registry."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx

from service.engines.vllm_wire import status_error, upstream_message
from service.errors import EngineError, LadderError

log = logging.getLogger("ladder.vllm")

Resolver = Callable[[str], tuple[str, str]]
"""An adapter ref (`name` or `name@version`) -> (its exact `name@version`, its folder)."""


class AdapterSlots:
    """vLLM's loaded adapters kept in step with the registry.

    A ref is loaded once (one lock per ref, so concurrent requests wait for the same load) and
    counted while requests use it; a version superseded by a newer one is unloaded once idle.
    """

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._seeded = asyncio.Lock()
        self._loaded: set[str] | None = None
        self._in_flight: Counter[str] = Counter()
        self._stale: set[str] = set()
        self._pinned: set[str] = set()

    @asynccontextmanager
    async def use(self, asked: str, ref: str, path: str) -> AsyncIterator[None]:
        """Keeps ref loaded while the body runs; asking by bare name retires older versions."""
        loaded = await self._seed()
        self._note(asked, ref, loaded)
        async with self._locks[ref]:
            if ref not in loaded:
                await self._load(ref, path)
                loaded.add(ref)
            self._in_flight[ref] += 1
        try:
            yield
        finally:
            self._in_flight[ref] -= 1
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
                if self._in_flight[ref] or ref not in self._stale:
                    continue
                if ref in loaded:
                    await self._unload(ref)
                    loaded.discard(ref)
                self._stale.discard(ref)

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
