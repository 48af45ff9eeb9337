"""Server processes that tests and benchmarks start on 127.0.0.1 and stop by PID."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import httpx


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def spawn(
    command: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Starts a server with its stdout and stderr appended to a log file."""
    with log.open("ab") as output:
        return subprocess.Popen(command, env=env, cwd=cwd, stdout=output, stderr=subprocess.STDOUT)


def _tail(log: Path | None) -> str:
    if log is None or not log.is_file():
        return ""
    return "\n" + log.read_text(errors="replace")[-3000:]


def wait_for_http(
    url: str, timeout_s: float, process: subprocess.Popen[bytes], log: Path | None = None
) -> None:
    """Polls url until it answers 200; fails with the log's tail if the process dies or stalls."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"server exited with {process.returncode} before {url} answered{_tail(log)}"
            )
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout_s} s{_tail(log)}")


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to that one PID, SIGKILL if it lingers."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
