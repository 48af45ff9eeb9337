"""The parts of a running service, built once in the app's lifespan."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from adapters.registry import AdapterRegistry
from ingest.index import Index
from service.api.guard import ClientGuard
from service.chat.serving import ChatService
from service.experiments.service import ExperimentService
from service.routing.configs import ConfigSet
from service.routing.live import LiveConfigs
from service.settings import Settings


@dataclass
class ServiceState:
    """What routes reach through `app.state.ladder`."""

    settings: Settings
    chat: ChatService
    index: Index | None
    registry: AdapterRegistry
    configs: Callable[[], ConfigSet]
    started_at: int
    experiments: ExperimentService | None = None
    live_configs: LiveConfigs | None = None
    guard: ClientGuard = field(default_factory=ClientGuard.off)
