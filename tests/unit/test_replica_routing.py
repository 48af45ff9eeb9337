"""The replica router as a pure function of replica state: adapter affinity with a spill bound,
least-recently-used unloading that spares adapters in use and the pinned guard adapter, down
replicas routed around (and tried last when none is up), and the other two policies."""

from __future__ import annotations

import pytest

from service.engines.replicas import NoReplica, ReplicaRouter, ReplicaState

GUARD = "ladder-identity"


def router(
    count: int = 3, slots: int = 2, policy: str = "affinity", spill: int = 2
) -> ReplicaRouter:
    states = [ReplicaState(f"r{i}", slots, frozenset({GUARD})) for i in range(count)]
    return ReplicaRouter(states, policy, spill)  # type: ignore[arg-type]


def serve(router: ReplicaRouter, adapter: str | None, hold: bool = False) -> str:
    """Routes one request, ended at once unless held; the name of the replica chosen."""
    decision = router.choose(adapter)
    router.begin(decision)
    if not hold:
        router.end(decision)
    return decision.replica.name


def test_requests_follow_the_replica_that_loaded_their_adapter() -> None:
    routes = router()
    first = serve(routes, "tone@1")
    for other in ("a@1", "b@1", "c@1"):
        serve(routes, other)

    decision = routes.choose("tone@1")

    assert decision.replica.name == first
    assert (decision.affinity, decision.must_load, decision.to_unload) == (True, False, ())


def test_a_busy_holder_spills_to_the_least_busy_replica_beyond_the_bound() -> None:
    routes = router(spill=2)
    holder = serve(routes, "tone@1")
    for _ in range(3):  # up to 2 more outstanding than the idle others
        assert serve(routes, "tone@1", hold=True) == holder

    decision = routes.choose("tone@1")

    assert decision.replica.name != holder
    assert decision.must_load and not decision.affinity


def test_an_adapter_nobody_holds_goes_to_a_replica_with_a_free_slot() -> None:
    routes = router(count=2, slots=1)
    full, roomy = routes.replicas
    full.seed(["a@1"])
    roomy.requests = 5

    assert routes.choose("c@1").replica is roomy


def test_a_full_replica_unloads_its_least_recently_used_idle_adapter() -> None:
    routes = router(count=1, slots=3)
    for adapter in ("a@1", "b@1", "c@1", "a@1"):
        serve(routes, adapter)

    decision = routes.choose("d@1")
    routes.begin(decision)

    assert decision.to_unload == ("b@1",)
    assert list(routes.replicas[0].loaded) == ["c@1", "a@1", "d@1"]


def test_adapters_in_use_and_the_pinned_guard_adapter_are_never_unloaded() -> None:
    routes = router(count=1, slots=2)  # the guard adapter takes no slot
    serve(routes, GUARD)
    serve(routes, "a@1", hold=True)
    serve(routes, "b@1")

    assert routes.choose("c@1").to_unload == ("b@1",)
    serve(routes, "b@1", hold=True)
    assert routes.choose("c@1").to_unload == ()


def test_the_guard_adapter_takes_no_slot() -> None:
    routes = router(count=1, slots=1)
    serve(routes, GUARD)
    assert routes.choose("a@1").to_unload == ()
    serve(routes, "a@1")
    assert routes.choose("b@1").to_unload == ("a@1",)


def test_the_guard_adapter_every_replica_holds_goes_to_the_least_busy_replica() -> None:
    routes = router(spill=2)
    first = serve(routes, GUARD, hold=True)

    assert serve(routes, GUARD, hold=True) != first


def test_a_down_replica_gets_nothing_until_it_recovers_and_forgets_its_adapters() -> None:
    routes = router(count=2)
    holder = serve(routes, "tone@1")
    down = next(r for r in routes.replicas if r.name == holder)
    routes.fail(down, until=10.0)

    assert {serve(routes, "tone@1") for _ in range(4)} == {"r0", "r1"} - {holder}
    assert routes.due(9.0) == [] and routes.due(10.0) == [down]
    routes.recover(down)
    assert not down.has("tone@1") and down.up


def test_with_every_replica_down_the_one_whose_cooldown_ends_first_is_tried() -> None:
    routes = router(count=3)
    for state, until in zip(routes.replicas, (7.0, 3.0, 5.0), strict=True):
        routes.fail(state, until)

    assert routes.choose(None).replica.name == "r1"


def test_a_request_never_goes_back_to_a_replica_it_failed_on() -> None:
    routes = router(count=2)
    first = routes.choose("tone@1").replica

    assert routes.choose("tone@1", exclude=[first]).replica is not first
    with pytest.raises(NoReplica):
        routes.choose("tone@1", exclude=routes.replicas)


def test_round_robin_takes_turns_whatever_is_loaded() -> None:
    routes = router(policy="round_robin")

    assert [serve(routes, "tone@1") for _ in range(6)] == ["r0", "r1", "r2"] * 2


def test_least_busy_ignores_where_an_adapter_is_loaded() -> None:
    routes = router(policy="least_busy")
    holder = serve(routes, "tone@1", hold=True)

    assert serve(routes, "tone@1") != holder


def test_an_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown routing policy"):
        router(policy="random")
