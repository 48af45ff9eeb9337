"""Servers the fault tests start, kill, stall and restart on the same port: the fake upstream
(tests/support/fake_upstream.py) as a process and a real `chroma run`."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.support.paths import REPO
from tests.support.processes import free_port, spawn, stop_process, wait_for_http


def wait_for_port(port: int, timeout_s: float, process: subprocess.Popen[bytes]) -> None:
    """Waits until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port} after {timeout_s} s")


class ManagedServer:
    """A child process on a fixed port that a test can kill, stall and start again."""

    def __init__(self, port: int, log: Path) -> None:
        self.port = port
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Where the server answers."""
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, command: list[str]) -> subprocess.Popen[bytes]:
        self.process = spawn(command, self.log, cwd=REPO)
        return self.process

    def kill(self) -> None:
        """SIGKILL, by PID: no goodbye to open connections."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        """A polite stop (SIGTERM, then SIGKILL), by PID."""
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)
            stop_process(self.process)

    def pause(self) -> None:
        """SIGSTOP: the port stays open and nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after pause."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


class UpstreamProcess(ManagedServer):
    """tests/support/fake_upstream.py in one of its modes."""

    def start(
        self, mode: str = "ok", pieces: int = 3, delay: float = 0.0, lora: bool = False
    ) -> None:
        """(Re)starts the upstream in a mode and waits until it listens."""
        self.kill()
        options = ["--mode", mode, "--pieces", str(pieces), "--delay", str(delay)]
        options += ["--lora"] if lora else []
        command = [sys.executable, "-m", "tests.support.fake_upstream", "--port", str(self.port)]
        process = self._spawn([*command, *options])
        wait_for_port(self.port, 30, process)


class ChromaServer(ManagedServer):
    """A real `chroma run` with its data kept across restarts."""

    def __init__(self, data: Path) -> None:
        super().__init__(free_port(), data / "chroma.log")
        self.data = data

    def start(self) -> None:
        """(Re)starts the server on its port and waits for its heartbeat."""
        chroma = shutil.which("chroma", path=str(Path(sys.executable).parent))
        assert chroma, "the chroma command comes with chromadb"
        command = [chroma, "run", "--path", str(self.data / "db"), "--host", "127.0.0.1"]
        process = self._spawn([*command, "--port", str(self.port)])
        wait_for_http(f"{self.url}/api/v2/heartbeat", 60, process)
