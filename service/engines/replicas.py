"""Which vLLM replica serves a request: the routing policy, pure (no I/O, no clock of its own),
driven by the engine's pool (service/engines/vllm_pool.py) and by bench/routing_sim.py.

Policies:
- affinity (default): a replica that has the request's adapter loaded, the least busy of them,
  unless it carries more than `spill` requests over the least busy replica: then the least busy
  replica, which loads the adapter too (a hot adapter spreads instead of queueing on one replica);
  with no holder, the least busy replica, one with a free slot first. Base requests, and the
  leak guard's pinned adapter that every replica holds, go to the least busy replica.
- least_busy: the replica with the fewest outstanding requests.
- round_robin: the next replica in turn.

A replica that failed is down until the pool sees it healthy again; while any replica is up, no
request goes to a down one; with none up, a request is tried on the one whose cooldown ends first
(one replica behaves as a single vLLM does: every request tries it). A chosen replica whose slots
are full unloads its least recently used adapters that no request is using (never a pinned one:
the leak guard's zero adapter); when every loaded adapter is in use it loads one over its slots.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

Policy = Literal["affinity", "round_robin", "least_busy"]
POLICIES: tuple[str, ...] = get_args(Policy)


class NoReplica(Exception):
    """Every replica was excluded (each already failed this request)."""


@dataclass(eq=False)
class ReplicaState:
    """What the router knows of one replica; `loaded` is in LRU order, oldest first."""

    name: str
    slots: int
    pinned: frozenset[str] = frozenset()
    outstanding: int = 0
    loaded: OrderedDict[str, None] = field(default_factory=OrderedDict)
    in_use: Counter[str] = field(default_factory=Counter)
    down_until: float | None = None
    requests: int = 0
    errors: int = 0
    adapter_loads: int = 0
    affinity_hits: int = 0

    @property
    def up(self) -> bool:
        return self.down_until is None

    def has(self, adapter: str) -> bool:
        return adapter in self.loaded

    def held(self) -> int:
        """Adapters loaded for requests: the pinned guard adapter takes no slot (it is ladder's
        own, on every replica, and a slot count counts what requests asked for)."""
        return sum(1 for adapter in self.loaded if adapter not in self.pinned)

    def free_slot(self) -> bool:
        return self.held() < self.slots

    def seed(self, adapters: Iterable[str]) -> None:
        """Adds adapters the replica already serves (its start-up list), oldest first."""
        for adapter in adapters:
            self.loaded.setdefault(adapter, None)

    def drop(self, adapter: str) -> None:
        """Forgets an adapter the replica no longer serves."""
        self.loaded.pop(adapter, None)

    def forget_all(self) -> None:
        """Forgets every adapter: a replica that restarted has only its start-up list again."""
        self.loaded.clear()

    def eviction(self, adapter: str) -> tuple[str, ...]:
        """The idle, unpinned adapters to unload, oldest first, to make room for adapter."""
        excess = self.held() + 1 - self.slots
        if excess <= 0 or adapter in self.loaded:
            return ()
        idle = [a for a in self.loaded if not self.in_use[a] and a not in self.pinned]
        return tuple(idle[:excess])


@dataclass(frozen=True)
class Decision:
    """Where one request goes: its replica, whether the adapter must be loaded there first, which
    adapters to unload there to make room, and whether it followed an adapter already loaded."""

    replica: ReplicaState
    adapter: str | None
    must_load: bool
    to_unload: tuple[str, ...]
    affinity: bool


class ReplicaRouter:
    """Chooses replicas and keeps their routing state: call `begin` when a decision is acted on,
    `end` when its request is over, `fail`/`recover` as replicas go down and come back."""

    def __init__(
        self, replicas: Sequence[ReplicaState], policy: Policy = "affinity", spill: int = 4
    ) -> None:
        if not replicas:
            raise ValueError("a router needs at least one replica")
        if policy not in POLICIES:
            raise ValueError(f"unknown routing policy {policy!r}; one of {', '.join(POLICIES)}")
        self.replicas = list(replicas)
        self.policy = policy
        self.spill = spill
        self._turn = 0

    def choose(self, adapter: str | None, exclude: Collection[ReplicaState] = ()) -> Decision:
        """The replica for a request using adapter (None: the base model); NoReplica when every
        replica is excluded."""
        candidates = self._candidates(exclude)
        replica, affinity = self._pick(adapter, candidates)
        must_load = adapter is not None and not replica.has(adapter)
        to_unload = replica.eviction(adapter) if adapter is not None and must_load else ()
        return Decision(replica, adapter, must_load, to_unload, affinity)

    def begin(self, decision: Decision) -> None:
        """Counts the request on its replica; the adapter is loaded there from now on (so the
        next requests follow it) and the evicted ones are not."""
        replica, adapter = decision.replica, decision.adapter
        replica.outstanding += 1
        replica.requests += 1
        replica.affinity_hits += decision.affinity
        for evicted in decision.to_unload:
            replica.drop(evicted)
        if adapter is not None:
            replica.adapter_loads += decision.must_load
            replica.loaded[adapter] = None
            replica.loaded.move_to_end(adapter)
            replica.in_use[adapter] += 1

    def end(self, decision: Decision) -> None:
        """The request is over (answered or failed)."""
        replica, adapter = decision.replica, decision.adapter
        replica.outstanding -= 1
        if adapter is not None:
            replica.in_use[adapter] -= 1
            if replica.in_use[adapter] <= 0:
                del replica.in_use[adapter]

    def fail(self, replica: ReplicaState, until: float) -> None:
        """Marks a replica down until a time (the pool's clock). What it had loaded is forgotten:
        it may come back restarted, with only its start-up adapters."""
        replica.down_until = until
        replica.forget_all()

    def recover(self, replica: ReplicaState) -> None:
        """Marks a replica up again."""
        replica.down_until = None

    def due(self, now: float) -> list[ReplicaState]:
        """The down replicas whose cooldown has passed: the pool probes them."""
        return [r for r in self.replicas if r.down_until is not None and r.down_until <= now]

    def _candidates(self, exclude: Collection[ReplicaState]) -> list[ReplicaState]:
        allowed = [r for r in self.replicas if r not in exclude]
        if not allowed:
            raise NoReplica("every vLLM replica failed this request")
        up = [r for r in allowed if r.up]
        if up:
            return up
        return [min(allowed, key=lambda r: r.down_until or 0.0)]

    def _pick(
        self, adapter: str | None, candidates: list[ReplicaState]
    ) -> tuple[ReplicaState, bool]:
        if self.policy == "round_robin":
            replica = self._next_in_turn(candidates)
            return replica, adapter is not None and replica.has(adapter)
        least = min(candidates, key=_busyness)
        if adapter is None or adapter in least.pinned:
            return least, False
        if self.policy == "least_busy":
            return least, least.has(adapter)
        holders = [r for r in candidates if r.has(adapter)]
        if holders:
            holder = min(holders, key=_busyness)
            if holder.outstanding <= least.outstanding + self.spill:
                return holder, True
            return least, False
        roomy = min(candidates, key=lambda r: (r.outstanding, not r.free_slot(), r.requests))
        return roomy, False

    def _next_in_turn(self, candidates: list[ReplicaState]) -> ReplicaState:
        count = len(self.replicas)
        for step in range(count):
            replica = self.replicas[(self._turn + step) % count]
            if replica in candidates:
                self._turn = (self._turn + step + 1) % count
                return replica
        return candidates[0]


def _busyness(replica: ReplicaState) -> tuple[int, int]:
    """Fewest outstanding first; of equals, the one that served fewest (spreads ties)."""
    return (replica.outstanding, replica.requests)
