"""Load: 64 concurrent streaming clients for 60 s against `ladder serve` on a loopback upstream.

Run from the repository root: `python bench/load.py [--seconds 60] [--clients 64] [--out FILE]`.
Everything runs on 127.0.0.1. Reports errors, p50/p99 latency of whole streams, and ladder's RSS,
open file descriptors and ESTABLISHED sockets before and after the load (both measured idle, after
a warm-up, so the upstream connection pool is already filled), and writes the "## Load" section.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import service_overhead as overhead  # the upstream and the process helpers
from results_file import write_section

SECTION_TITLE = "## Load"
GOAL_RSS_GROWTH = 0.10
BODY = {
    "model": "plain",
    "stream": True,
    "max_tokens": 32,
    "messages": [{"role": "user", "content": "How long does the Aurora K3 keep water hot?"}],
}


@dataclass
class Snapshot:
    """ladder's resources at one moment."""

    rss_mib: float
    fds: int
    established: int


@dataclass
class LoadResult:
    """What the clients saw."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


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
    return Snapshot(overhead.vm_rss_mib(pid), fds, established_sockets(pid))


async def _stream_once(client: httpx.AsyncClient) -> str | None:
    """One streamed answer read to the end; what went wrong, if anything."""
    try:
        async with client.stream("POST", "/v1/chat/completions", json=BODY) as response:
            data = b"".join([part async for part in response.aiter_raw()])
    except httpx.HTTPError as error:
        return f"{type(error).__name__}: {error}"
    if response.status_code != 200:
        return f"{response.status_code}: {data[:200]!r}"
    if not data.endswith(b"data: [DONE]\n\n") or b'"error"' in data:
        return f"bad stream: {data[-200:]!r}"
    return None


async def drive(url: str, clients: int, seconds: float) -> LoadResult:
    """`clients` workers streaming back to back until `seconds` have passed."""
    result = LoadResult()
    # Idle connections expire before uvicorn's 5 s keep-alive does, as a load balancer's would:
    # with both at 5 s, a reused connection can meet the server's close (a client ReadError).
    limits = httpx.Limits(
        max_connections=clients, max_keepalive_connections=clients, keepalive_expiry=2.0
    )
    deadline = time.perf_counter() + seconds

    async def worker(client: httpx.AsyncClient) -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            problem = await _stream_once(client)
            result.latencies_ms.append((time.perf_counter() - started) * 1000)
            if problem is not None:
                result.errors.append(problem)

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30.0) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        result.seconds = time.perf_counter() - started
    return result


def start_stack(workdir: Path) -> overhead.Servers:
    """The fast upstream and `ladder serve` (vllm engine, configuration `plain`)."""
    (workdir / "configurations.yaml").write_text("configurations:\n  plain: {}\n")
    env = overhead.bench_env(workdir) | {"LADDER_VLLM_LEAK_GUARD": "false"}
    (servers,) = overhead.start_servers(workdir, env, overhead.fast_uvicorn_options())
    return servers


def measure(seconds: float, clients: int) -> dict[str, Any]:
    """Warm-up, idle snapshot, the load, idle snapshot; servers stopped by PID afterwards."""
    with tempfile.TemporaryDirectory(prefix="ladder-load-") as folder:
        servers = start_stack(Path(folder))
        pid = servers.ladder.pid
        try:
            ready = snapshot(pid)
            warm = asyncio.run(drive(servers.ladder_url, clients, 5.0))
            time.sleep(2.0)
            before = snapshot(pid)
            load = asyncio.run(drive(servers.ladder_url, clients, seconds))
            time.sleep(5.0)
            after = snapshot(pid)
        finally:
            overhead.stop(servers.ladder)
            overhead.stop(servers.upstream)
        log = overhead.scan_log(Path(folder) / "ladder.log")
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
        f"`python bench/load.py`: {clients} concurrent streaming clients for "
        f"{load.seconds:.0f} s against `ladder serve` (vllm engine, configuration `plain`, one "
        "worker) in front of `bench/service_overhead.py`'s raw ASGI upstream (8 content chunks, "
        f"usage, `[DONE]`), all on 127.0.0.1. {machine['date']}; nproc {machine['nproc']} "
        f"({machine['CPU']}); Python {machine['Python']}; load average at start "
        f"{machine['load average at start']}, at end {machine['load average at end']}. Client, "
        "upstream and ladder share the cores.",
        "",
        "| streams | errors | throughput | p50 | p99 | max |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {len(latencies)} | {len(load.errors)} | {len(latencies) / load.seconds:.0f} /s "
        f"| {overhead.percentile(latencies, 50):.1f} ms | {overhead.percentile(latencies, 99):.1f}"
        f" ms | {max(latencies):.1f} ms |",
        "",
        "| ladder | ready | idle before (after 5 s warm-up) | idle after (5 s after the load) |",
        "|---|---:|---:|---:|",
        f"| RSS | {run['ready'].rss_mib:.0f} MiB | {before.rss_mib:.0f} MiB "
        f"| {after.rss_mib:.0f} MiB ({growth:+.1%}; goal < +10 %: {goal}) |",
        f"| open file descriptors | {run['ready'].fds} | {before.fds} | {after.fds} |",
        f"| ESTABLISHED TCP sockets | {run['ready'].established} | {before.established} "
        f"| {after.established} |",
        "",
        "Latency is a whole stream, request to `[DONE]`. An error is a non-200, a transport "
        "error, or a stream without `[DONE]` or with an error event. Sockets left ESTABLISHED "
        "when idle are ladder's keep-alive pool to the upstream (httpx keeps up to 64). "
        f"ladder's log: {run['log']['warnings']} warning and {run['log']['errors']} error lines.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Runs the load, prints the section and writes it to --out."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--out", type=Path, default=overhead.DEFAULT_OUT)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    os.environ.update(overhead.BENCH_ENV)
    machine = overhead.machine_info()
    run = measure(args.seconds, args.clients)
    machine["load average at end"] = overhead._loadavg()
    section = render(run, args.clients, machine)
    print(section)
    print(json.dumps({"errors": run["load"].errors[:5], "warm_errors": run["warm"].errors[:5]}))
    if not args.no_write:
        write_section(args.out, SECTION_TITLE, section)
        print(f"written to {args.out}")


if __name__ == "__main__":
    main()
