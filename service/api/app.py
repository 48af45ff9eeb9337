"""The FastAPI application: parts built in the lifespan and kept on app.state."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI

from adapters.registry import AdapterRegistry, RegistryError
from ingest.index import Index, IndexUnavailable
from service.api import admin, chat, dashboard, feedback, health
from service.api.deps import admit_client
from service.api.errors import install_error_handlers
from service.api.guard import (
    ApiKeys,
    ClientGuard,
    RateLimiter,
    RedisTokenBuckets,
    StreamSlots,
    TokenBuckets,
)
from service.api.state import ServiceState
from service.chat.metrics import Metrics
from service.chat.serving import ChatLimits, ChatService
from service.engines.base import Engine
from service.errors import ConfigurationError, PayloadTooLarge, error_body
from service.experiments.wiring import attach, open_experiments
from service.routing.configs import ConfigSet, Configuration, load_configurations
from service.routing.live import LiveConfigs
from service.settings import Settings

log = logging.getLogger("ladder")
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]


class BodySizeLimit:
    """Refuses request bodies over the limit with 413, declared size or not."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _send_json(send, 413, error_body(self._error()))
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._error()
            return message

        await self.app(scope, limited, send)

    def _error(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"the request body is over {self.max_bytes} bytes")


async def _send_json(
    send: Callable[[Message], Awaitable[None]], status: int, body: dict[str, Any]
) -> None:
    import json

    payload = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def open_index(settings: Settings) -> Index | None:
    """The index, or None (with a warning) when Chroma cannot be reached at start-up."""
    from ingest.embedder import Embedder

    try:
        return Index(settings.index_location(), Embedder(threads=settings.torch_threads))
    except IndexUnavailable as error:
        log.warning("index unavailable at start-up: %s", error)
        return None


def load_configs(
    settings: Settings,
    index: Index | None,
    registry: AdapterRegistry,
    only: Collection[str] | None = None,
) -> ConfigSet:
    """Loads and validates the configurations file; raises ConfigurationError."""
    collections = None
    if index is not None:
        try:
            collections = index.collection_names()
        except IndexUnavailable as error:
            log.warning("collections not checked, index unavailable: %s", error)
    configs = load_configurations(settings.config, registry.names(), collections, only)
    for name, reason in configs.skipped.items():
        log.warning("configuration %r is not served: %s", name, reason)
    return configs


def build_engine(settings: Settings, configs: ConfigSet, registry: AdapterRegistry) -> Engine:
    """The engine LADDER_ENGINE names, with the adapters the configurations use."""
    from adapters.base_model import prepare_base_model

    refs = {c.adapter for c in configs.configurations.values() if c.adapter}
    try:
        adapters = {ref: registry.resolve(ref).path for ref in refs}
    except RegistryError as error:
        raise ConfigurationError(str(error)) from error
    if settings.engine == "vllm":
        from service.engines.vllm_server import vllm_engine

        return vllm_engine(settings, registry)
    from service.engines.local import LocalEngine

    model_dir = prepare_base_model(settings.cache_dir)
    return LocalEngine(
        model_dir, adapters, max_queue=settings.max_queue, threads=settings.torch_threads
    )


def chat_limits(settings: Settings) -> ChatLimits:
    """The request limits from the settings."""
    return ChatLimits(
        max_messages=settings.max_messages,
        max_message_chars=settings.max_message_chars,
        max_total_chars=settings.max_total_chars,
        max_tokens_ceiling=settings.max_tokens_ceiling,
        context_window=settings.context_window,
        retrieval_timeout_s=settings.retrieval_timeout_s,
    )


def client_guard(settings: Settings) -> ClientGuard:
    """API keys, the per-caller rate limit and stream slots, each off when unset."""
    limiter: RateLimiter | None = None
    if settings.rate_limit_rpm and settings.redis_url:
        limiter = RedisTokenBuckets(
            settings.rate_limit_rpm, settings.redis_url, settings.redis_timeout_s
        )
    elif settings.rate_limit_rpm:
        limiter = TokenBuckets(settings.rate_limit_rpm)
    return ClientGuard(
        ApiKeys(settings.api_keys) if settings.api_keys else None,
        limiter,
        StreamSlots(settings.max_streams_per_key) if settings.max_streams_per_key else None,
    )


def create_app(
    settings: Settings,
    *,
    engine: Engine | None = None,
    index: Index | None = None,
    extra_configurations: Mapping[str, Configuration] | None = None,
    serve_only: Collection[str] | None = None,
) -> FastAPI:
    """The ladder app; tests may hand in an engine or an index, the evaluation extra rungs and
    the configurations it serves (`serve_only`: the others are parsed but not served)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry = AdapterRegistry(settings.adapters_root)
        chosen_index = index if index is not None else open_index(settings)
        configs = load_configs(settings, chosen_index, registry, serve_only)
        if extra_configurations:
            merged = {**configs.configurations, **extra_configurations}
            configs = ConfigSet(merged, configs.source, configs.digest, configs.skipped)
        live = LiveConfigs(
            configs, lambda: load_configs(settings, chosen_index, registry, serve_only)
        )
        experiments = open_experiments(settings, live)
        chosen_engine = engine or build_engine(settings, configs, registry)
        chat_service = ChatService(
            live.get, chosen_engine, chosen_index, Metrics(), chat_limits(settings)
        )
        attach(chat_service, experiments)
        await experiments.start()
        app.state.ladder = ServiceState(
            settings, chat_service, chosen_index, registry, live.get, int(time.time())
        )
        app.state.ladder.experiments, app.state.ladder.live_configs = experiments, live
        app.state.ladder.guard = client_guard(settings)
        log.info(
            "serving %d configurations with the %s engine",
            len(configs.configurations),
            chosen_engine.name,
        )
        try:
            yield
        finally:
            await experiments.aclose()
            await chosen_engine.aclose()
            app.state.ladder.guard.close()

    app = FastAPI(title="ladder", version="0.1.0", lifespan=lifespan)
    install_error_handlers(app)
    clients = [Depends(admit_client)]
    app.include_router(chat.router, dependencies=clients)
    app.include_router(health.router)
    app.include_router(feedback.router, dependencies=clients)
    if settings.admin_token:
        app.include_router(admin.router)
        app.include_router(dashboard.router)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    return app


def app_from_environment() -> FastAPI:
    """The app with settings from the environment (for uvicorn's factory mode)."""
    return create_app(Settings())
