"""Builds the experiment service at start-up and connects it to the chat service."""

from __future__ import annotations

import time

from service.chat.serving import ChatService, Prepared
from service.experiments.service import ExperimentService, Route, outcome
from service.experiments.store import migrate, open_database
from service.experiments.traffic import Outcome
from service.routing.live import LiveConfigs
from service.settings import Settings


def open_experiments(settings: Settings, live: LiveConfigs) -> ExperimentService:
    """Opens and migrates the database (Alembic `upgrade head`); does not start polling."""
    database = open_database(settings.experiments_db_url, settings.db_busy_timeout_s)
    migrate(database)
    return ExperimentService(
        database,
        live.names,
        settings.prices,
        min_samples=settings.experiment_min_samples,
        refresh_s=settings.experiment_refresh_s,
    )


def attach(chat: ChatService, experiments: ExperimentService) -> None:
    """Has every response served through an experiment report its outcome per arm."""

    def on_outcome(prepared: Prepared, status: str, prompt: int, completion: int) -> None:
        if prepared.info.experiment is None:
            return
        plan = prepared.plan
        cost = experiments.cost(plan.configuration, plan.adapter, prompt, completion)
        first_token = prepared.marks.get("first_token")
        experiments.observe(
            prepared.id,
            prepared.info.experiment,
            lambda: outcome(status, prepared.started, first_token, (prompt, completion), cost),
        )

    chat.on_outcome = on_outcome


def observe_refusal(
    experiments: ExperimentService, request_id: str, route: Route, status: int, started: float
) -> None:
    """Counts a routed request refused before generation as an error of its arm."""
    latency_ms = (time.perf_counter() - started) * 1000
    refused = Outcome(status, latency_ms, None, 0, 0, 0.0)
    experiments.observe(request_id, route.experiment, lambda: refused)
