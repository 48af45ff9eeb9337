"""Thin admin routes: experiments changed at run time, versioned and audited (bearer token)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from adapters.registry import InvalidRef, RegistryError
from service.api.deps import AdminDep, ExperimentsDep, StateDep
from service.api.state import ServiceState
from service.engines.base import LoadsAdapters
from service.errors import InvalidChange, InvalidRequest, NotFound
from service.experiments.export import MEDIA_TYPES, ExportFormat, since_seconds
from service.experiments.identity import KEY_PREFIX, identify
from service.experiments.protocol import (
    AssignmentOut,
    AuditEntry,
    ExperimentOut,
    PromoteRequest,
    RollbackRequest,
    WeightsChange,
)
from service.experiments.spec import ExperimentSpec
from service.settings import DIGEST_PREFIX

KEY_DIGEST = r"^(sha256:)?[0-9A-Fa-f]{64}$"

router = APIRouter(prefix="/admin", tags=["admin"])


@router.get("/experiments")
def list_experiments(actor: AdminDep, experiments: ExperimentsDep) -> list[ExperimentOut]:
    """Every experiment."""
    return [ExperimentOut.of(stored) for stored in experiments.experiments()]


@router.post("/experiments", status_code=201)
def create_experiment(
    body: ExperimentSpec, actor: AdminDep, experiments: ExperimentsDep
) -> ExperimentOut:
    """Creates an experiment (draft unless its status says running)."""
    if body.status not in ("draft", "running"):
        raise InvalidChange("a new experiment is draft or running", param="status")
    return ExperimentOut.of(experiments.create(body, actor))


@router.get("/experiments/{name}")
def get_experiment(name: str, actor: AdminDep, experiments: ExperimentsDep) -> ExperimentOut:
    """One experiment."""
    return ExperimentOut.of(experiments.find(name))


@router.post("/experiments/{name}/weights")
def change_weights(
    name: str, body: WeightsChange, actor: AdminDep, experiments: ExperimentsDep
) -> ExperimentOut:
    """New weights; users already assigned keep their arm unless `rebucket`, new users follow
    the new split."""
    changed = experiments.set_weights(name, body.weights, actor, rebucket=body.rebucket)
    return ExperimentOut.of(changed)


@router.get("/experiments/{name}/assignment")
def experiment_assignment(
    name: str,
    actor: AdminDep,
    experiments: ExperimentsDep,
    user: Annotated[str | None, Query(max_length=256, description="The body's `user`.")] = None,
    header: Annotated[str | None, Query(max_length=256, description="X-Ladder-User.")] = None,
    key: Annotated[
        str | None,
        Query(
            pattern=KEY_DIGEST,
            description="The caller's API key digest (sha256:<hex>), a unit only with"
            " LADDER_EXPERIMENT_KEY_UNIT.",
        ),
    ] = None,
) -> AssignmentOut:
    """The arm a unit has or would get and why, by the routing's identity order; a dry run
    that records nothing."""
    caller = f"{KEY_PREFIX}{key.removeprefix(DIGEST_PREFIX).lower()}" if key else None
    identity = identify(user, header, caller, key_unit=experiments.key_unit)
    stored, lookup = experiments.lookup(name, identity)
    return AssignmentOut.of(stored, identity, lookup)


@router.get("/experiments/{name}/exposures")
def export_exposures(
    name: str,
    actor: AdminDep,
    experiments: ExperimentsDep,
    form: Annotated[ExportFormat, Query(alias="format")] = "csv",
    since: Annotated[
        str | None, Query(max_length=64, description="Unix seconds or an ISO 8601 time.")
    ] = None,
) -> StreamingResponse:
    """Every exposure with its outcome and feedback score, streamed as CSV or JSON lines."""
    chunks = experiments.export(name, form, since_seconds(since))
    disposition = f'attachment; filename="{name}-exposures.{form}"'
    return StreamingResponse(
        chunks, media_type=MEDIA_TYPES[form], headers={"content-disposition": disposition}
    )


@router.post("/experiments/{name}/start")
def start_experiment(name: str, actor: AdminDep, experiments: ExperimentsDep) -> ExperimentOut:
    """Starts or resumes assigning users to arms."""
    return ExperimentOut.of(experiments.set_status(name, "running", actor))


@router.post("/experiments/{name}/pause")
def pause_experiment(name: str, actor: AdminDep, experiments: ExperimentsDep) -> ExperimentOut:
    """Serves the control arm to everyone until resumed."""
    return ExperimentOut.of(experiments.set_status(name, "paused", actor))


@router.post("/experiments/{name}/arms/{arm}/pause")
def pause_arm(name: str, arm: str, actor: AdminDep, experiments: ExperimentsDep) -> ExperimentOut:
    """Serves the arm's users the control until resumed; they keep their arm."""
    return ExperimentOut.of(experiments.set_arm_paused(name, arm, True, actor))


@router.post("/experiments/{name}/arms/{arm}/resume")
def resume_arm(name: str, arm: str, actor: AdminDep, experiments: ExperimentsDep) -> ExperimentOut:
    """Serves the arm to its users again; its guardrails judge it afresh from now."""
    return ExperimentOut.of(experiments.set_arm_paused(name, arm, False, actor))


@router.post("/experiments/{name}/promote")
def promote_arm(
    name: str, body: PromoteRequest, actor: AdminDep, experiments: ExperimentsDep
) -> ExperimentOut:
    """Gives one arm 100 % of the traffic and concludes the experiment."""
    return ExperimentOut.of(experiments.promote(name, body.arm, actor))


@router.post("/experiments/{name}/rollback")
def rollback_experiment(
    name: str, body: RollbackRequest, actor: AdminDep, experiments: ExperimentsDep
) -> ExperimentOut:
    """Restores an earlier version (the previous one by default) as a new version."""
    return ExperimentOut.of(experiments.rollback(name, body.version, actor))


@router.get("/experiments/{name}/results")
def experiment_results(name: str, actor: AdminDep, experiments: ExperimentsDep) -> dict[str, Any]:
    """Per-arm measurements, comparisons against the control, and the SRM check."""
    return experiments.results(name)


@router.get("/audit")
def audit_log(
    actor: AdminDep,
    experiments: ExperimentsDep,
    experiment: str | None = None,
    by: Annotated[str | None, Query(description="Only changes by this actor.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditEntry]:
    """Changes, newest first."""
    return [AuditEntry(**entry) for entry in experiments.audit(experiment, by, limit)]


@router.post("/configurations/reload")
def reload_configurations(
    actor: AdminDep, experiments: ExperimentsDep, state: StateDep
) -> dict[str, Any]:
    """Reads the configurations file again; a bad file is refused and the old one serves on."""
    live = state.live_configs
    if live is None:
        raise NotFound("configurations cannot be reloaded here")
    candidate = live.load()
    experiments.check_served(candidate.configurations)
    changes = live.swap(candidate)
    experiments.record_event("reload configurations", actor, changes)
    return {"reloaded": True, "source": str(candidate.source), **changes}


def _adapter_loader(state: ServiceState) -> LoadsAdapters:
    """The engine, when it loads adapters at run time (vLLM); the local one loads them at start."""
    engine = state.chat.engine
    if not isinstance(engine, LoadsAdapters):
        kind = getattr(engine, "name", "configured")
        raise InvalidChange(
            f"the {kind} engine loads its adapters at start-up; restart it to change them"
        )
    return engine


@router.get("/adapters")
def list_adapters(actor: AdminDep, state: StateDep) -> list[dict[str, Any]]:
    """Every registered adapter: its versions and its newest version's manifest."""
    registry = state.registry
    listed = []
    for name in registry.names():
        newest = registry.resolve(name)
        listed.append(
            {
                "name": name,
                "versions": registry.versions(name),
                "newest": newest.ref,
                "manifest": newest.manifest(),
            }
        )
    return listed


@router.post("/adapters/{name}/load")
async def load_adapter(name: str, actor: AdminDep, state: StateDep) -> dict[str, Any]:
    """Loads the adapter's newest version into vLLM now, rather than on first use (an unknown
    name is the engine's resolver's 404)."""
    refs = await _adapter_loader(state).sync([name])
    if state.experiments is not None:
        await run_in_threadpool(
            state.experiments.record_event, "load adapter", actor, {"loaded": refs}
        )
    return {"loaded": refs}


@router.post("/adapters/{ref}/unload")
async def unload_adapter(ref: str, actor: AdminDep, state: StateDep) -> dict[str, Any]:
    """Unloads `name@version` from vLLM: now when idle, else once its last request ends."""
    if "@" not in ref:
        raise InvalidChange("unload names one version: name@version", param="ref")
    try:
        version = state.registry.resolve(ref)
    except InvalidRef as error:
        raise InvalidRequest(str(error), param="ref") from None
    except RegistryError as error:
        raise NotFound(str(error), param="ref") from None
    gone = await _adapter_loader(state).unload(version.ref)
    if state.experiments is not None:
        changes = {"ref": version.ref, "unloaded_now": gone}
        await run_in_threadpool(state.experiments.record_event, "unload adapter", actor, changes)
    return {"ref": version.ref, "unloaded": gone}
