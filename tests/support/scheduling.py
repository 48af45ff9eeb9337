"""How `make test`'s two xdist workers share the suite (tests/conftest.py installs it)."""

from __future__ import annotations

from xdist.scheduler import LoadScopeScheduling

VLLM_TESTS = "tests/vllm/"


def work_unit(nodeid: str) -> str:
    """A test's unit of work: its module, so a module-scoped server starts once, or, for every
    vLLM test, one unit, so two vLLM servers never share the two cores."""
    module = nodeid.split("::", 1)[0]
    return VLLM_TESTS if module.startswith(VLLM_TESTS) else module


class ModuleScheduling(LoadScopeScheduling):
    """xdist's scope scheduling with the units above, handed out in collection order (run with
    `--no-loadscope-reorder`; the workers' collection puts the longest units first)."""

    def _split_scope(self, nodeid: str) -> str:
        return work_unit(nodeid)
