"""Load: 64 concurrent streaming clients for 60 s against `ladder serve` on a loopback upstream.

Run from the repository root: `python bench/load.py [--quick] [--seconds 60] [--clients 64]
[--out FILE]`. Everything runs on 127.0.0.1. Reports errors, p50/p99 latency of whole streams, and
ladder's RSS, open file descriptors and ESTABLISHED sockets before and after the load (both
measured idle, after a warm-up, so the upstream connection pool is already filled), and writes the
"## Load" section.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import harness
from harness import median, percentile

SECTION_TITLE = "## Load"
CONFIGURATIONS = "configurations:\n  plain: {}\n"
PIECES = 8  # content chunks per streamed answer
GOAL_RSS_GROWTH = 0.10
QUESTION = "How long does the Aurora K3 keep water hot?"
WARMUP_S = 5.0
FULL = (60.0, 64)  # seconds, clients
QUICK = (10.0, 16)


@dataclass
class Snapshot:
    """ladder's resources at one moment."""

    rss_mib: float
    fds: int
    established: int


def established_sockets(pid: int) -> int:
    """TCP sockets of the process in state ESTABLISHED (its fds matched to /proc/net/tcp*)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            count += fields[3] == "01" and fields[9] in inodes
    return count


def snapshot(pid: int) -> Snapshot:
    """RSS, open descriptors and ESTABLISHED sockets of a process."""
    fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    return Snapshot(harness.rss_mib(pid), fds, established_sockets(pid))


def measure(seconds: float, clients: int) -> dict[str, Any]:
    """Warm-up, idle snapshot, the load, idle snapshot; servers stopped by PID afterwards."""
    bodies = [harness.chat_body("plain", QUESTION, stream=True)]
    with tempfile.TemporaryDirectory(prefix="ladder-load-") as folder:
        with harness.ladder_stack(Path(folder), CONFIGURATIONS, PIECES) as stack:
            url, pid = stack.ladder.base, stack.pids["ladder"]
            ready = snapshot(pid)
            warm = harness.client_process(url, bodies, clients, WARMUP_S).load
            time.sleep(2.0)
            before = snapshot(pid)
            load = harness.client_process(url, bodies, clients, seconds).load
            time.sleep(5.0)
            after = snapshot(pid)
        log = harness.log_problems(stack.log)
    return {
        "ready": ready,
        "before": before,
        "after": after,
        "warm": warm,
        "load": load,
        "log": log,
    }


def render(run: dict[str, Any], clients: int, machine: dict[str, str]) -> str:
    """The Markdown section."""
    load, before, after = run["load"], run["before"], run["after"]
    latencies = load.latencies_ms
    growth = after.rss_mib / before.rss_mib - 1
    goal = "met" if growth < GOAL_RSS_GROWTH else "NOT met"
    lines = [
        SECTION_TITLE,
        "",
        f"`python bench/load.py`: {clients} concurrent streaming clients (one client process) for "
        f"{load.wall_s:.0f} s against `ladder serve` (vllm engine, configuration `plain`, one "
        "worker) in front of tests/support/fake_upstream.py "
        f"({PIECES} content chunks, usage, `[DONE]`), all on 127.0.0.1; "
        f"{harness.machine_line(machine)}. Client, upstream and ladder share the cores.",
        "",
        "| streams | errors | throughput | p50 | p99 | max |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {len(latencies)} | {len(load.errors)} | {load.throughput:.0f} /s "
        f"| {median(latencies):.1f} ms | {percentile(latencies, 99):.1f} ms "
        f"| {max(latencies):.1f} ms |",
        "",
        f"| ladder | ready | idle before (after {WARMUP_S:.0f} s warm-up) "
        "| idle after (5 s after the load) |",
        "|---|---:|---:|---:|",
        f"| RSS | {run['ready'].rss_mib:.0f} MiB | {before.rss_mib:.0f} MiB "
        f"| {after.rss_mib:.0f} MiB ({growth:+.1%}; goal < +10 %: {goal}) |",
        f"| open file descriptors | {run['ready'].fds} | {before.fds} | {after.fds} |",
        f"| ESTABLISHED TCP sockets | {run['ready'].established} | {before.established} "
        f"| {after.established} |",
        "",
        "Latency is a whole stream, request to `[DONE]`. An error is a non-200, a transport "
        "error, or a stream without `[DONE]` or with an error event. Sockets left ESTABLISHED "
        "when idle are ladder's keep-alive pool to the upstream. ladder's log: "
        f"{run['log']['warnings']} warning and {run['log']['errors']} error lines.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Runs the load, prints the section and writes it to --out."""
    parser = harness.run_options(__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, help=f"default {FULL[0]:g}; {QUICK[0]:g} quick")
    parser.add_argument("--clients", type=int, help=f"default {FULL[1]}; {QUICK[1]} quick")
    args = parser.parse_args()
    seconds, clients = QUICK if args.quick else FULL
    seconds, clients = args.seconds or seconds, args.clients or clients
    os.environ.update(harness.BENCH_ENV)
    machine = harness.machine_info(("fastapi", "uvicorn", "httpx", "uvloop", "httptools"))
    run = measure(seconds, clients)
    machine["load average at end"] = harness.load_average()
    harness.publish(render(run, clients, machine), SECTION_TITLE, args)
    print(json.dumps({"errors": run["load"].errors[:5], "warm_errors": run["warm"].errors[:5]}))


if __name__ == "__main__":
    main()
