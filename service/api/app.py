"""The FastAPI application: parts built in the lifespan and kept on app.state."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from adapters.registry import AdapterRegistry
from ingest.index import Index, IndexUnavailable
from service.api import admin, chat, dashboard, feedback, health
from service.api.deps import admit_client
from service.api.errors import install_error_handlers
from service.api.guard import client_guard
from service.api.middleware import BodySizeLimit, ClientAdmission, RequestGate
from service.api.state import ServiceState
from service.chat.examples import ExampleSelector, bundled_embedder
from service.chat.limits import chat_limits
from service.chat.metrics import Metrics, MetricSource
from service.chat.serving import ChatService
from service.engines.base import Engine
from service.engines.factory import build_engine, load_base_model, model_window
from service.experiments.service import open_experiments
from service.knowledge import open_index_or_none
from service.routing.configs import ConfigSet, Configuration, load_configurations
from service.routing.live import LiveConfigs
from service.settings import Settings

log = logging.getLogger("ladder")


def _adapter_refs(configs: ConfigSet) -> set[str]:
    return {c.adapter for c in configs.configurations.values() if c.adapter}


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


def _live_configs(
    settings: Settings,
    index: Index | None,
    registry: AdapterRegistry,
    extra: Mapping[str, Configuration] | None,
    serve_only: Collection[str] | None,
) -> LiveConfigs:
    """The configurations served, reloadable from the file; extra rungs join the first load."""
    configs = load_configs(settings, index, registry, serve_only)
    if extra:
        merged = {**configs.configurations, **extra}
        configs = ConfigSet(merged, configs.source, configs.digest, configs.skipped)
    return LiveConfigs(configs, lambda: load_configs(settings, index, registry, serve_only))


async def _start(
    settings: Settings,
    engine: Engine | None,
    index: Index | None,
    extra: Mapping[str, Configuration] | None,
    serve_only: Collection[str] | None,
) -> ServiceState:
    """Builds every part of the service and starts polling for experiment changes."""
    registry = AdapterRegistry(settings.adapters_root)
    chosen_index = index if index is not None else open_index_or_none(settings)
    live = _live_configs(settings, chosen_index, registry, extra, serve_only)
    experiments = open_experiments(settings, live)
    window = None
    if engine is None:
        base = load_base_model(settings)
        window = model_window(settings, base)
        engine = build_engine(settings, _adapter_refs(live.get()), registry, base)
    chosen_engine = engine
    chat_service = ChatService(
        live.get,
        chosen_engine,
        chosen_index,
        Metrics(*[chosen_engine] if isinstance(chosen_engine, MetricSource) else []),
        chat_limits(settings, window),
        experiments=experiments,
        examples=ExampleSelector(
            bundled_embedder(
                chosen_index, settings.torch_threads, settings.embed_backend, settings.cache_dir
            )
        ),
        debug_prompts=settings.debug_prompts,
    )
    await experiments.start()
    log.info(
        "serving %d configurations with the %s engine",
        len(live.get().configurations),
        chosen_engine.name,
    )
    return ServiceState(
        settings,
        chat_service,
        chosen_index,
        registry,
        live.get,
        int(time.time()),
        experiments=experiments,
        live_configs=live,
        guard=client_guard(settings),
    )


async def _stop(state: ServiceState) -> None:
    if state.experiments is not None:
        await state.experiments.aclose()
    await state.chat.engine.aclose()
    state.guard.close()


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
        state = await _start(settings, engine, index, extra_configurations, serve_only)
        app.state.ladder = state
        try:
            yield
        finally:
            await _stop(state)

    app = FastAPI(title="ladder", version="0.1.0", lifespan=lifespan)
    install_error_handlers(app)
    clients = [Depends(admit_client)]
    app.include_router(chat.router)  # its hot route reads the admitted caller itself
    app.include_router(health.router)
    app.include_router(feedback.router, dependencies=clients)
    if settings.admin_token:
        app.include_router(admin.router)
        app.include_router(dashboard.router)
    # The last added runs first: the gate, then /v1 admission, then the body is read.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(ClientAdmission)
    app.add_middleware(
        RequestGate,
        allowed_hosts=settings.allowed_hosts,
        max_headers=settings.max_headers,
        max_header_bytes=settings.max_header_bytes,
    )
    return app


def app_from_environment() -> FastAPI:
    """The app with settings from the environment (for uvicorn's factory mode)."""
    return create_app(Settings())
