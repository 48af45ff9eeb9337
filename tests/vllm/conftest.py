"""vLLM's own venv is installed in the background from the moment the vLLM tests are collected,
so its download overlaps the rest of the suite (they run last); the first vLLM fixture waits.
The modules that need no adapter share one vLLM (`plain_stack`): a start costs over a minute."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from service.engines.vllm_server import install, runtime_paths
from service.settings import Settings
from tests.vllm.served import PLAIN_CONFIG, Stack, served_stack, vllm_settings

_install: dict[str, object] = {}


def _background_install() -> None:
    try:
        install(runtime_paths(Settings()), lambda line: print(f"[vllm install] {line}", flush=True))
    except BaseException as error:  # handed to the fixture that waits
        _install["error"] = error


def pytest_collection_finish(session: pytest.Session) -> None:
    """Starts the install when any vLLM test was selected."""
    if "thread" not in _install and any("tests/vllm/" in item.nodeid for item in session.items):
        thread = threading.Thread(target=_background_install, name="vllm-install", daemon=True)
        _install["thread"] = thread
        thread.start()


@pytest.fixture(scope="session")
def vllm_installed() -> None:
    """Waits for the background install; a failed install fails the vLLM tests with its cause."""
    thread = _install.get("thread")
    if isinstance(thread, threading.Thread):
        thread.join()
    error = _install.get("error")
    if isinstance(error, BaseException):
        raise error


@pytest.fixture(scope="session")
def plain_stack(tmp_path_factory: pytest.TempPathFactory, vllm_installed: None) -> Iterator[Stack]:
    """vLLM with no adapter and ladder in front of it, serving `base` and `remedy` (an output
    layer of three choices); started once for every module that uses it."""
    data = tmp_path_factory.mktemp("vllm-plain")
    (data / "configs.yaml").write_text(PLAIN_CONFIG)
    with served_stack(vllm_settings(data)) as stack:
        yield stack
