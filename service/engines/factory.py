"""Builds the engine LADDER_ENGINE names, on the base model LADDER_BASE_MODEL names."""

from __future__ import annotations

from collections.abc import Collection

from adapters.base_model import BaseModel, BaseModelUnavailable, context_window, resolve_base_model
from adapters.gguf import Progress
from adapters.registry import AdapterRegistry, RegistryError, check_fits
from service.engines.base import Engine
from service.errors import ConfigurationError
from service.settings import Settings


def load_base_model(settings: Settings, progress: Progress | None = None) -> BaseModel:
    """The configured base model, prepared; a ConfigurationError says in one line what is wrong."""
    try:
        return resolve_base_model(settings.base_model, settings.cache_dir, progress)
    except BaseModelUnavailable as error:
        raise ConfigurationError(str(error)) from error


def model_window(settings: Settings, base: BaseModel) -> int:
    """The window requests are budgeted in: the model's, or a smaller LADDER_CONTEXT_WINDOW."""
    try:
        return context_window(base, settings.context_window)
    except BaseModelUnavailable as error:
        raise ConfigurationError(str(error)) from error


def build_engine(
    settings: Settings,
    adapter_refs: Collection[str],
    registry: AdapterRegistry,
    base: BaseModel | None = None,
) -> Engine:
    """The engine, knowing the adapters the served configurations use (resolved up front, so an
    unknown one, or one trained on another base model, stops start-up)."""
    base = base or load_base_model(settings)
    refs = list(adapter_refs)
    try:
        versions = [registry.resolve(ref) for ref in refs]
        for version in versions:
            check_fits(version, base)
    except RegistryError as error:
        raise ConfigurationError(str(error)) from error
    if settings.engine == "vllm":
        from service.engines.vllm_server import vllm_engine

        return vllm_engine(settings, registry, base)
    from service.engines.local import LocalEngine

    adapters = {ref: version.path for ref, version in zip(refs, versions, strict=True)}
    return LocalEngine(
        base.folder,
        adapters,
        max_queue=settings.max_queue,
        threads=settings.torch_threads,
        output_cache=settings.output_cache,
    )
