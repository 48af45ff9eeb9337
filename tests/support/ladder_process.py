"""A real `ladder serve` process in front of a tiny fake OpenAI upstream, for crash and replica
tests: the vllm engine talks HTTP to the fake, so the process starts fast and answers at once."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from tests.support.experiments import ADMIN_TOKEN, CONFIG
from tests.support.models import models_cache_dir
from tests.support.processes import free_port, stop_process, wait_for_http


def fake_upstream() -> FastAPI:
    """Answers chat completions with a fixed text, lists one model, reports healthy."""
    upstream = FastAPI()

    @upstream.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @upstream.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": "base", "object": "model"}]}

    @upstream.post("/v1/chat/completions")
    def complete(body: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": "upstream",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model", "base"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "ok"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 7, "completion_tokens": 1, "total_tokens": 8},
        }

    return upstream


@dataclass
class LadderProcess:
    """One `ladder serve` child and where it answers."""

    process: subprocess.Popen[bytes]
    base: str

    def kill_hard(self) -> None:
        """SIGKILL: no shutdown code runs, nothing is flushed."""
        self.process.kill()
        self.process.wait(timeout=10)


def ladder_env(workdir: Path, upstream: str, db_url: str | None) -> dict[str, str]:
    """The environment of a ladder process using the vllm engine against the fake upstream."""
    config = workdir / "configs.yaml"
    config.write_text(CONFIG)
    env = {
        **os.environ,
        "LADDER_ENGINE": "vllm",
        "LADDER_VLLM_URL": upstream,
        "LADDER_VLLM_LEAK_GUARD": "false",
        "LADDER_DATA_DIR": str(workdir / "data"),
        "LADDER_CACHE_DIR": str(models_cache_dir()),
        "LADDER_CONFIG": str(config),
        "LADDER_ADMIN_TOKEN": ADMIN_TOKEN,
        "LADDER_EXPERIMENT_REFRESH_S": "0.2",
    }
    if db_url is not None:
        env["LADDER_DB_URL"] = db_url
    return env


@contextmanager
def ladder_serve(env: dict[str, str], log: Path) -> Iterator[LadderProcess]:
    """Starts `ladder serve` on a free port and stops it (by PID) afterwards."""
    port = free_port()
    ladder = Path(sys.executable).parent / "ladder"
    with log.open("ab") as output:
        process = subprocess.Popen(
            [str(ladder), "serve", "--port", str(port)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/health", 240, process)
        yield LadderProcess(process, base)
    finally:
        stop_process(process)
