"""A real `ladder serve` process with the vllm engine pointed at an OpenAI-compatible upstream
(usually tests/support/fake_upstream.py), so it starts fast and answers at once."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.experiments import ADMIN_TOKEN, CONFIG
from tests.support.fake_upstream import fake_upstream
from tests.support.models import models_cache_dir
from tests.support.processes import free_port, spawn, stop_process, wait_for_http

__all__ = ["LadderProcess", "fake_upstream", "ladder_env", "ladder_serve", "vllm_engine_env"]


@dataclass
class LadderProcess:
    """One `ladder serve` child and where it answers."""

    process: subprocess.Popen[bytes]
    base: str

    def kill_hard(self) -> None:
        """SIGKILL: no shutdown code runs, nothing is flushed."""
        self.process.kill()
        self.process.wait(timeout=10)


def vllm_engine_env(workdir: Path, upstream: str, configurations: str) -> dict[str, str]:
    """The environment of a ladder process using the vllm engine against `upstream`."""
    config = workdir / "configs.yaml"
    config.write_text(configurations)
    return {
        **os.environ,
        "LADDER_ENGINE": "vllm",
        "LADDER_VLLM_URL": upstream,
        # The fake upstream has no LoRA endpoints; the guard is measured in bench/vllm_lora.py.
        "LADDER_VLLM_LEAK_GUARD": "false",
        "LADDER_DATA_DIR": str(workdir / "data"),
        "LADDER_CACHE_DIR": str(models_cache_dir()),
        "LADDER_CONFIG": str(config),
    }


def ladder_env(workdir: Path, upstream: str, db_url: str | None) -> dict[str, str]:
    """The experiment tests' environment: their configurations, an admin token, fast refresh."""
    env = vllm_engine_env(workdir, upstream, CONFIG)
    env |= {"LADDER_ADMIN_TOKEN": ADMIN_TOKEN, "LADDER_EXPERIMENT_REFRESH_S": "0.2"}
    if db_url is not None:
        env["LADDER_DB_URL"] = db_url
    return env


@contextmanager
def ladder_serve(env: dict[str, str], log: Path, probe: str = "/health") -> Iterator[LadderProcess]:
    """Starts `ladder serve` on a free port, waits for `probe`, and stops it by PID afterwards."""
    port = free_port()
    ladder = Path(sys.executable).parent / "ladder"
    process = spawn([str(ladder), "serve", "--port", str(port)], log, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}{probe}", 240, process, log)
        yield LadderProcess(process, base)
    finally:
        stop_process(process)
