"""vLLM's own venv is installed in the background from the moment the vLLM tests are collected,
so its download overlaps the rest of the suite (they run last); the first vLLM fixture waits."""

from __future__ import annotations

import threading

import pytest

from service.engines.vllm_server import install, runtime_paths
from service.settings import Settings

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
