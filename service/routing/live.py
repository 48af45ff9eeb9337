"""The configurations being served, swappable at run time without a restart."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from service.errors import ConfigurationError, InvalidChange
from service.routing.configs import ConfigSet


class LiveConfigs:
    """Holds the current ConfigSet; a reload swaps it in one assignment, so a request in flight
    keeps the Configuration it already took while the next request sees the new set."""

    def __init__(self, current: ConfigSet, load: Callable[[], ConfigSet]) -> None:
        self._current = current
        self._load = load
        self._adapters = _adapters(current)

    def get(self) -> ConfigSet:
        """The configurations now served."""
        return self._current

    def names(self) -> frozenset[str]:
        """The names of the configurations now served."""
        return frozenset(self._current.configurations)

    def load(self) -> ConfigSet:
        """Reads and validates the file again; InvalidChange (with the reason) when it is bad.

        Adapters are loaded when the engine starts, so a new one needs a restart.
        """
        try:
            candidate = self._load()
        except ConfigurationError as error:
            raise InvalidChange(f"configurations not reloaded: {error.message}") from error
        unknown = _adapters(candidate) - self._adapters
        if unknown:
            raise InvalidChange(
                f"configurations not reloaded: adapters {sorted(unknown)} need a restart to load"
            )
        return candidate

    def swap(self, candidate: ConfigSet) -> dict[str, Any]:
        """Serves the candidate from the next request on; returns what changed."""
        before, self._current = self._current, candidate
        old, new = before.configurations, candidate.configurations
        return {
            "digest": [before.digest, candidate.digest],
            "added": sorted(set(new) - set(old)),
            "removed": sorted(set(old) - set(new)),
            "changed": sorted(name for name in set(old) & set(new) if old[name] != new[name]),
        }


def _adapters(configs: ConfigSet) -> frozenset[str]:
    return frozenset(c.adapter for c in configs.configurations.values() if c.adapter)
