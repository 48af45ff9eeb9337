"""Runs a command and reports its peak resident memory, killing it past a ceiling so a runaway
child fails its test instead of exhausting the machine."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class MeasuredRun:
    """How a command ended and the most memory it held."""

    returncode: int
    stdout: str
    stderr: str
    peak_rss_mb: float
    seconds: float
    killed: str | None  # why the watch killed it, or None


def _high_water_mb(pid: int) -> float:
    """The process's peak RSS so far (VmHWM restarts at exec, so the forked copy of the parent
    does not count, as it would in getrusage's ru_maxrss)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    line = next((row for row in status.splitlines() if row.startswith("VmHWM:")), "VmHWM: 0 kB")
    return int(line.split()[1]) / 1024


def run_measured(
    command: list[str], env: dict[str, str], ceiling_mb: float, timeout_s: float, log_dir: Path
) -> MeasuredRun:
    """Runs command; kills it once its RSS passes ceiling_mb or timeout_s passes. The peak is
    sampled every 50 ms, which is enough for a job whose memory grows with what it reads."""
    started = time.monotonic()
    out_path, err_path = log_dir / "stdout.txt", log_dir / "stderr.txt"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, env=env)
    killed: str | None = None
    peak = 0.0
    while True:
        pid, status = os.waitpid(process.pid, os.WNOHANG)
        if pid:
            break
        peak = max(peak, _high_water_mb(process.pid))
        if killed is None and peak > ceiling_mb:
            killed = f"RSS {peak:.0f} MB passed the {ceiling_mb:.0f} MB ceiling"
        elif killed is None and time.monotonic() - started > timeout_s:
            killed = f"still running after {timeout_s:.0f} s"
        if killed is not None:
            os.kill(process.pid, signal.SIGKILL)
        time.sleep(0.05)
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, by waitpid
    return MeasuredRun(
        returncode=process.returncode,
        stdout=out_path.read_text(errors="replace"),
        stderr=err_path.read_text(errors="replace"),
        peak_rss_mb=peak,
        seconds=time.monotonic() - started,
        killed=killed,
    )
