"""ExperimentService: routes requests into experiments from an in-memory copy of their state,
kept fresh by polling the database's version counter, and records what each arm did."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from functools import partial
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from evaluation.pricing import call_cost, hosted_prices
from service.errors import StateUnavailable
from service.experiments import export, guardrail_monitor, repository, results, traffic
from service.experiments import spec as specs
from service.experiments.export import ExportFormat
from service.experiments.guardrail_monitor import GuardrailMonitor
from service.experiments.identity import Identity, Lookup, identify
from service.experiments.live import Decision, LiveExperiment
from service.experiments.live import Route as Route
from service.experiments.protocol import FeedbackOut
from service.experiments.repository import StoredExperiment
from service.experiments.spec import ExperimentSpec, Status
from service.experiments.store import Database, migrate, open_database
from service.experiments.traffic import ARM_PAUSED, ArmOutcome, Exposure
from service.routing.live import LiveConfigs
from service.settings import Settings

log = logging.getLogger("ladder.experiments")
Prices = Mapping[str, tuple[float, float]]


class ExperimentService:
    """What the chat service, the feedback route, the admin API and the CLI call."""

    def __init__(
        self,
        database: Database,
        served: Callable[[], Collection[str]],
        prices: Prices,
        *,
        min_samples: int = 100,
        refresh_s: float = 1.0,
        cache_size: int = 200_000,
        key_unit: bool = False,
        export_rows: int = 1000,
        guardrail_every: int = 20,
        guardrail_interval_s: float = 1.0,
        guardrail_alpha: float = 0.05,
        guardrail_min_users: int = 20,
    ) -> None:
        self.database = database
        self._served = served
        self._prices = prices
        self.min_samples = min_samples
        self._refresh_s = refresh_s
        self._cache_size = cache_size
        self.key_unit = key_unit
        self._export_rows = export_rows
        self._version = -1
        self._by_model: dict[str, LiveExperiment] = {}
        self._by_name: dict[str, LiveExperiment] = {}
        # Keyed by the re-bucket too: an arm cached before a re-bucket is never served after it.
        self._sticky: dict[tuple[int, int, str], str] = {}
        self._poller: asyncio.Task[None] | None = None
        self._writes: set[asyncio.Future[None]] = set()
        self.guardrails = GuardrailMonitor(
            database,
            self._pause_for_guardrail,
            every=guardrail_every,
            interval_s=guardrail_interval_s,
            alpha=guardrail_alpha,
            min_users=guardrail_min_users,
        )

    def refresh(self, *, force: bool = False) -> bool:
        """Reloads the experiments when another change was stored; True when it did."""
        if not force and repository.state_version(self.database) == self._version:
            return False
        version, stored = repository.load_all(self.database)
        live = [LiveExperiment.of(item) for item in stored]
        self._by_name = {item.stored.spec.name: item for item in live}
        # A concluded experiment keeps serving its winner unless a newer one captures the model.
        ordered = sorted(live, key=lambda item: item.stored.spec.status != "concluded")
        self._by_model = {item.stored.spec.model: item for item in reversed(ordered)}
        self._version = version
        return True

    async def start(self) -> None:
        """Loads the state and polls for changes made by other replicas or the CLI."""
        await asyncio.to_thread(self.refresh, force=True)
        self._poller = asyncio.create_task(self._poll())

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            try:
                await asyncio.to_thread(self.refresh)
            except Exception:  # a database blip must not stop the polling
                log.exception("refreshing experiments failed; serving the last known state")

    async def aclose(self) -> None:
        """Stops polling, waits for outcome writes, and closes the database."""
        if self._poller is not None:
            self._poller.cancel()
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        self.database.dispose()

    def decide(
        self,
        model: str,
        user: str | None,
        header: str | None,
        request_id: str,
        owner: str | None = None,
    ) -> Decision | None:
        """The in-memory part of routing: the hot path for a user seen before."""
        live = self._by_model.get(model)
        if live is None:
            return None
        key = identify(user, header, owner, key_unit=self.key_unit).key
        if live.fixed_arm is not None:
            return Decision(live, live.fixed_arm, key)
        spec = live.stored.spec
        if key is None:
            random = spec.stickiness == "random"
            return Decision(live, live.arm_by_bucket(request_id) if random else spec.control, None)
        return Decision(live, self._sticky.get((live.stored.id, spec.rebucket_version, key)), key)

    async def route(
        self,
        model: str,
        user: str | None,
        header: str | None,
        request_id: str,
        *,
        owner: str | None = None,
        correlation_id: str | None = None,
    ) -> Route | None:
        """The arm a request is served by, stored (assignment and exposure) before it is.

        `request_id` is the response's id (the server's); `owner` the caller it is served to,
        the only one whose feedback on it counts; `correlation_id` the client's own id.
        When the database fails the request is served, uncounted, by the arm already known for
        its user, else by the control.
        """
        decision = self.decide(model, user, header, request_id, owner)
        if decision is None:
            return None
        spec = decision.live.stored.spec
        served_to = (request_id, owner, correlation_id)
        try:
            arm = await asyncio.to_thread(self._persist, decision, *served_to)
        except (SQLAlchemyError, StateUnavailable) as error:
            arm = decision.arm or spec.control
            log.error("experiment %s not recorded, serving arm %s: %s", spec.name, arm, error)
        arm = decision.live.served_arm(arm)
        return Route(spec.arm(arm).configuration, spec.name, arm)

    def _persist(
        self, decision: Decision, request_id: str, owner: str | None, correlation_id: str | None
    ) -> str:
        live, key = decision.live, decision.key
        stored = live.stored
        arm = decision.arm or live.arm_by_bucket(key or request_id)
        exposure = Exposure(
            request_id,
            stored.id,
            arm,
            live.serves[arm],
            key,
            stored.spec.status if live.served_arm(arm) == arm else ARM_PAUSED,
            stored.weights_version,
            owner,
            correlation_id,
        )
        if key is None or decision.arm is not None:
            traffic.expose(self.database, exposure)
            return arm
        rebucket_version = stored.spec.rebucket_version
        paused = [a.name for a in stored.spec.arms if live.served_arm(a.name) != a.name]
        arm = traffic.assign_and_expose(
            self.database, exposure, live.serves, rebucket_version, paused=paused
        )
        if len(self._sticky) >= self._cache_size:
            self._sticky.clear()
        self._sticky[(stored.id, rebucket_version, key)] = arm
        return arm

    def cost(self, configuration: str, adapter: str | None, prompt: int, completion: int) -> float:
        """Dollars for the tokens: the configuration's own price, else base or fine-tuned."""
        key = configuration if configuration in self._prices else "adapter" if adapter else "base"
        return call_cost(prompt, completion, self._prices.get(key, (0.0, 0.0)))

    def observe(self, response_id: str, experiment: str, outcome: ArmOutcome) -> None:
        """Stores how a response ended, off the event loop (or inline when there is none)."""
        live = self._by_name.get(experiment)
        if live is None:
            return
        write = (experiment, response_id, live.stored.id, outcome)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._store_outcome(*write)
            return
        future = loop.run_in_executor(None, self._store_outcome, *write)
        self._writes.add(future)
        future.add_done_callback(self._written)

    def _store_outcome(
        self, experiment: str, response_id: str, experiment_id: int, outcome: ArmOutcome
    ) -> None:
        """Stores an outcome, then lets the guardrail monitor count it (and maybe check)."""
        traffic.record_outcome(self.database, response_id, experiment_id, outcome)
        live = self._by_name.get(experiment)
        if live is not None:
            self.guardrails.stored(live.stored)

    def _written(self, future: asyncio.Future[None]) -> None:
        self._writes.discard(future)
        if not future.cancelled() and future.exception() is not None:
            log.error("an outcome was not stored: %s", future.exception())

    def feedback(
        self, response_id: str, score: float, comment: str | None, caller: str
    ) -> FeedbackOut:
        """Stores the score of the caller the response was served to (-1 becomes 0); where it
        is counted. PermissionDenied for any other caller."""
        stored = results.stored_score(score)
        experiment_id, arm = traffic.record_feedback(
            self.database, response_id, stored, comment, caller
        )
        names = {live.stored.id: name for name, live in self._by_name.items()}
        experiment = names.get(experiment_id) or str(experiment_id)
        return FeedbackOut(response_id=response_id, experiment=experiment, arm=arm, score=stored)

    def experiments(self) -> list[StoredExperiment]:
        """Every experiment, freshly read."""
        return repository.load_all(self.database)[1]

    def find(self, name: str) -> StoredExperiment:
        """One experiment, freshly read; NotFound when there is none."""
        return repository.find(self.database, name)

    def export(self, name: str, form: ExportFormat, since: float | None) -> Iterator[str]:
        """Every exposure of the experiment as text, page by page; NotFound before any."""
        stored = self.find(name)
        found = export.pages(self.database, stored.id, since, self._export_rows)
        return export.encoded(found, form)

    def _changed(self, stored: StoredExperiment) -> StoredExperiment:
        self.refresh(force=True)
        log.info("experiment %s is now version %d", stored.spec.name, stored.version)
        return stored

    def create(self, spec: ExperimentSpec, actor: str) -> StoredExperiment:
        """Stores a new experiment; it routes from the next request when created running."""
        return self._changed(repository.create(self.database, spec, actor, self._served()))

    def _change(
        self,
        name: str,
        action: str,
        apply: repository.Change,
        actor: str,
        weights_version: int | None = None,
        *,
        rebucket: bool = False,
        evidence: dict[str, Any] | None = None,
    ) -> StoredExperiment:
        served = self._served()
        stored = repository.change(
            self.database,
            name,
            action,
            apply,
            actor,
            served,
            weights_version,
            rebucket=rebucket,
            evidence=evidence,
        )
        return self._changed(stored)

    def set_weights(
        self, name: str, weights: Mapping[str, float], actor: str, *, rebucket: bool = False
    ) -> StoredExperiment:
        """New weights; users already assigned keep their arm, unless `rebucket` re-assigns
        every user by the new weights when next seen."""
        action = "weights+rebucket" if rebucket else "weights"
        return self._change(
            name, action, lambda s: specs.with_weights(s, weights), actor, rebucket=rebucket
        )

    def lookup(self, name: str, identity: Identity) -> tuple[StoredExperiment, Lookup]:
        """The arm a unit has or would get, and why; reads only, records nothing."""
        live, key = LiveExperiment.of(self.find(name)), identity.key
        assigned = traffic.assignment_of(self.database, live.stored.id, key) if key else None
        return live.stored, live.explain(identity, assigned)

    def set_status(self, name: str, status: Status, actor: str) -> StoredExperiment:
        """Starts, pauses or resumes an experiment."""
        return self._change(name, status, lambda s: specs.with_status(s, status), actor)

    def set_arm_paused(
        self, name: str, arm: str, paused: bool, actor: str, evidence: Any = None
    ) -> StoredExperiment:
        """Pauses one arm (its users get the control) or resumes it (they get it back)."""
        action = f"{'pause' if paused else 'resume'} arm {arm}"
        change = partial(specs.with_arm_paused, arm=arm, paused=paused, at=time.time())
        return self._change(name, action, change, actor, evidence=evidence)

    def _pause_for_guardrail(self, name: str, arm: str, evidence: list[dict[str, Any]]) -> None:
        self.set_arm_paused(name, arm, True, guardrail_monitor.ACTOR, {"breaches": evidence})

    def promote(self, name: str, arm: str, actor: str) -> StoredExperiment:
        """Sends all traffic to one arm and concludes."""
        return self._change(name, "promote", lambda s: specs.promoted(s, arm), actor)

    def rollback(self, name: str, version: int | None, actor: str) -> StoredExperiment:
        """Restores an earlier version (by default the one before the current) as a new one."""
        target = version if version is not None else self.find(name).version - 1
        restored, weights_version = repository.snapshot(self.database, name, target)
        action = f"rollback to v{target}"
        return self._change(name, action, lambda _spec: restored, actor, weights_version)

    def record_event(self, action: str, actor: str, changes: dict[str, Any]) -> None:
        """Audits a change outside any experiment."""
        repository.record_event(self.database, action, actor, changes)

    def check_served(self, served: Collection[str]) -> None:
        """InvalidChange when a live experiment's arm would lose its configuration."""
        for live in self._by_name.values():
            if live.stored.spec.status != "concluded":
                specs.check_configurations(live.stored.spec, served)

    def audit(
        self, experiment: str | None = None, actor: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Changes, newest first."""
        return repository.audit(self.database, experiment, actor, limit)

    def results(self, name: str) -> dict[str, Any]:
        """Per-arm measurements, comparisons against the control, and the guardrails."""
        stored = self.find(name)
        monitor = self.guardrails
        judged = guardrail_monitor.report(self.database, stored, monitor.alpha, monitor.min_users)
        blocked = guardrail_monitor.blocked(stored, judged)
        found = results.results(self.database, stored, self.min_samples, blocked)
        return guardrail_monitor.annotated(found, stored, judged)


def open_experiments(settings: Settings, live: LiveConfigs) -> ExperimentService:
    """Opens and migrates the database (Alembic `upgrade head`); does not start polling."""
    database = open_database(settings.experiments_db_url, settings.db_busy_timeout_s)
    migrate(database)
    return ExperimentService(
        database,
        live.names,
        settings.prices if settings.prices is not None else hosted_prices(),
        min_samples=settings.experiment_min_samples,
        refresh_s=settings.experiment_refresh_s,
        key_unit=settings.experiment_key_unit,
        export_rows=settings.experiment_export_rows,
        guardrail_every=settings.guardrail_check_every,
        guardrail_interval_s=settings.guardrail_check_interval_s,
        guardrail_alpha=settings.guardrail_alpha,
        guardrail_min_users=settings.guardrail_min_users,
    )
