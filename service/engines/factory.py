"""Builds the engine LADDER_ENGINE names."""

from __future__ import annotations

from collections.abc import Collection

from adapters.registry import AdapterRegistry, RegistryError
from service.engines.base import Engine
from service.errors import ConfigurationError
from service.settings import Settings


def build_engine(
    settings: Settings, adapter_refs: Collection[str], registry: AdapterRegistry
) -> Engine:
    """The engine, knowing the adapters the served configurations use (resolved up front, so an
    unknown one stops start-up)."""
    try:
        adapters = {ref: registry.resolve(ref).path for ref in adapter_refs}
    except RegistryError as error:
        raise ConfigurationError(str(error)) from error
    if settings.engine == "vllm":
        from service.engines.vllm_server import vllm_engine

        return vllm_engine(settings, registry)
    from adapters.base_model import prepare_base_model
    from service.engines.local import LocalEngine

    model_dir = prepare_base_model(settings.cache_dir)
    return LocalEngine(
        model_dir, adapters, max_queue=settings.max_queue, threads=settings.torch_threads
    )
