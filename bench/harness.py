"""What the benchmarks share: servers on 127.0.0.1, CPU and memory from /proc, the machine, one
percentile, and the sections of bench/RESULTS.md.

Scripts run as `python bench/<name>.py` import this as `harness`; run itself, it is the client
process of `client_process`. It puts the repository root on sys.path, because the process helpers
and the fake upstream live in `tests.support` for tests and benchmarks alike (one home each).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import math
import os
import platform
import re
import resource
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "RESULTS.md"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support.processes import free_port as free_port  # noqa: E402  (re-exported)

if TYPE_CHECKING:
    from tests.support.fault_servers import UpstreamProcess
    from tests.support.ladder_process import LadderProcess

BENCH_ENV = {
    "HF_HUB_OFFLINE": "1",
    "OMP_WAIT_POLICY": "PASSIVE",
    "TOKENIZERS_PARALLELISM": "false",
    "ANONYMIZED_TELEMETRY": "False",
}
TICK = os.sysconf("SC_CLK_TCK")
T = TypeVar("T")

# --- statistics -----------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), interpolated between closest ranks like numpy's default.

    Not service/experiments/results.py's nearest-rank one: that answers None for an empty arm and
    sits behind SQLAlchemy; a benchmark cell without values is a failure, and interpolation keeps
    p99 of a few hundred samples steady.
    """
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: Sequence[float]) -> float:
    """The 50th percentile."""
    return percentile(values, 50)


# --- processes and the machine, from /proc --------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User plus system CPU a process has spent so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_busy_seconds() -> float:
    """CPU the whole machine has spent busy so far, summed over cores."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / TICK  # minus idle and iowait


@dataclass
class CpuSpent:
    """CPU seconds spent over a span by each named process and by this process's children, and
    the cores every other process on the machine kept busy on average."""

    processes: dict[str, float] = field(default_factory=dict)
    children: float = 0.0
    other_cores: float = 0.0


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@contextmanager
def cpu_spent(pids: dict[str, int]) -> Iterator[CpuSpent]:
    """Accounts the CPU spent while the block runs; the figures are filled in when it ends."""
    spent = CpuSpent()
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    busy, children = machine_busy_seconds(), _children_cpu_seconds()
    started = time.monotonic()
    yield spent
    wall = time.monotonic() - started
    spent.processes = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    spent.children = _children_cpu_seconds() - children
    other = machine_busy_seconds() - busy - sum(spent.processes.values()) - spent.children
    spent.other_cores = max(other, 0.0) / wall


def rss_mib(pid: int | None = None, peak: bool = False) -> float:
    """Resident memory of a process (this one by default), now or at its peak."""
    key = "VmHWM" if peak else "VmRSS"
    status = Path(f"/proc/{pid or os.getpid()}/status").read_text()
    found = re.search(rf"^{key}:\s+(\d+) kB", status, re.MULTILINE)
    return int(found.group(1)) / 1024 if found else math.nan


def load_average() -> str:
    """The 1, 5 and 15 minute load averages."""
    return ", ".join(Path("/proc/loadavg").read_text().split()[:3])


def machine_info(packages: Sequence[str] = ()) -> dict[str, str]:
    """What the numbers are measured on; scripts add `load average at end` when they finish."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    info = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(len(os.sched_getaffinity(0))),
        "CPU": model.group(1).strip() if model else platform.processor(),
        "memory": f"{memory:.0f} GiB",
        "Python": platform.python_version(),
    }
    if packages:
        info["packages"] = ", ".join(f"{name} {_version(name)}" for name in packages)
    return info | {"load average at start": load_average()}


def machine_line(info: dict[str, str]) -> str:
    """The machine in one sentence, for a section's header."""
    return "; ".join(value if key == "date" else f"{key} {value}" for key, value in info.items())


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


# --- ladder in front of the fake upstream ---------------------------------------------------------
# tests.support's fault_servers and ladder_process import ingest and service, which a client
# process running this module must not pay for: they are imported where used.


@dataclass
class LadderStack:
    """`ladder serve` in front of the fake upstream, and what `ladder ingest` added before."""

    upstream: UpstreamProcess
    ladder: LadderProcess
    ingested: dict[str, Any]
    log: Path

    @property
    def pids(self) -> dict[str, int]:
        """The two servers' process ids, by name."""
        assert self.upstream.process is not None
        return {"ladder": self.ladder.process.pid, "upstream": self.upstream.process.pid}


@contextmanager
def ladder_stack(
    workdir: Path, configurations: str, pieces: int, ingest: Sequence[str] = ()
) -> Iterator[LadderStack]:
    """tests/support/fake_upstream.py (`pieces` chunks per answer), `ladder ingest <ingest>` if
    given, then `ladder serve` (vllm engine, one torch thread) once /ready answers; both stopped
    by PID afterwards."""
    from tests.support.fault_servers import UpstreamProcess
    from tests.support.ladder_process import ladder_serve, vllm_engine_env

    upstream = UpstreamProcess(free_port(), workdir / "upstream.log")
    try:
        upstream.start("ok", pieces=pieces)
        env = vllm_engine_env(workdir, upstream.url, configurations)
        env |= BENCH_ENV | {"LADDER_TORCH_THREADS": "1"}
        ingested: dict[str, Any] = {}
        if ingest:
            command = [sys.executable, "-m", "service.cli", "ingest", *ingest, "--json"]
            done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, check=True)
            ingested = json.loads(done.stdout)
        log = workdir / "ladder.log"
        with ladder_serve(env, log, probe="/ready") as ladder:
            yield LadderStack(upstream, ladder, ingested, log)
    finally:
        upstream.stop()


# --- peers: other proxies measured in front of the same upstream ---------------------------------

LITELLM_CONFIG = REPO / "bench" / "peers" / "litellm.yaml"


def litellm_venv() -> Path:
    """Where `make bench-peers` put the LiteLLM proxy (LADDER_BENCH_LITELLM_VENV overrides)."""
    default = Path.home() / ".cache" / "ladder-bench" / "venv-litellm"
    return Path(os.environ.get("LADDER_BENCH_LITELLM_VENV") or default)


@dataclass
class PeerProxy:
    """A peer proxy process, where it answers and what version it is."""

    name: str
    process: subprocess.Popen[bytes]
    base: str
    version: str
    log: Path


def litellm_missing() -> str | None:
    """Why the LiteLLM peer cannot run here, or None."""
    if not (litellm_venv() / "bin" / "litellm").is_file():
        return f"no LiteLLM proxy in {litellm_venv()}: run `make bench-peers` to measure it"
    return None


@contextmanager
def litellm_proxy(workdir: Path, upstream: str) -> Iterator[PeerProxy]:
    """The LiteLLM proxy (bench/peers/litellm.yaml: model `plain` mapped to `upstream`, no
    database, no callbacks, errors-only logging), one worker on 127.0.0.1; stopped by PID."""
    from tests.support.processes import spawn, stop_process, wait_for_http

    venv = litellm_venv()
    config = workdir / "litellm.yaml"
    config.write_text(LITELLM_CONFIG.read_text().replace("UPSTREAM", upstream))
    env = {**os.environ, **BENCH_ENV, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    env |= {"LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False"}
    version = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import importlib.metadata as m;print(m.version('litellm'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    port, log = free_port(), workdir / "litellm.log"
    command = [str(venv / "bin" / "litellm"), "--config", str(config), "--host", "127.0.0.1"]
    process = spawn([*command, "--port", str(port), "--num_workers", "1"], log, env, workdir)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_http(f"{base}/health/liveliness", 240, process, log)
        yield PeerProxy("litellm", process, base, version, log)
    finally:
        stop_process(process)


def log_problems(log: Path) -> dict[str, int | str]:
    """Counts a server log's warning and error lines; the first of them, if any."""
    lines = log.read_text(errors="replace").splitlines()
    warnings = [line for line in lines if " WARNING " in line]
    errors = [line for line in lines if " ERROR " in line or "Traceback" in line]
    first = (errors + warnings + [""])[0]
    return {"warnings": len(warnings), "errors": len(errors), "first": first}


# --- load: concurrent clients of an OpenAI-compatible server --------------------------------------


@dataclass
class Load:
    """What the clients saw: a latency per completed request, what went wrong, the wall time."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def throughput(self) -> float:
        """Completed requests per second."""
        return len(self.latencies_ms) / self.wall_s


def chat_body(model: str, content: str, stream: bool = False, max_tokens: int = 32) -> bytes:
    """A chat completion request's JSON; a streamed one asks for the usage chunk as well."""
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens}
    body["messages"] = [{"role": "user", "content": content}]
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return json.dumps(body).encode()


def load_client(url: str, concurrency: int) -> httpx.AsyncClient:
    """A client with one pooled connection per concurrent worker."""
    # Idle connections expire before uvicorn's 5 s keep-alive does, as a load balancer's would:
    # with both at 5 s, a reused connection can meet the server's close (a client ReadError).
    limits = httpx.Limits(
        max_connections=concurrency, max_keepalive_connections=concurrency, keepalive_expiry=2.0
    )
    return httpx.AsyncClient(base_url=url, limits=limits, timeout=30.0)


async def _complete(client: httpx.AsyncClient, body: bytes) -> str | None:
    """One chat completion read to its last byte; what went wrong (a non-200, a transport error,
    a stream without `[DONE]` or with an error event), if anything."""
    headers = {"content-type": "application/json"}
    try:
        async with client.stream(
            "POST", "/v1/chat/completions", content=body, headers=headers
        ) as response:
            data = b"".join([part async for part in response.aiter_raw()])
    except httpx.HTTPError as error:
        return f"{type(error).__name__}: {error}"
    if response.status_code != 200:
        return f"{response.status_code}: {data[:200]!r}"
    streamed = response.headers.get("content-type", "").startswith("text/event-stream")
    if streamed and (not data.endswith(b"data: [DONE]\n\n") or b'"error"' in data):
        return f"bad stream: {data[-200:]!r}"
    return None


async def drive(
    client: httpx.AsyncClient,
    bodies: Sequence[bytes],
    concurrency: int,
    seconds: float,
    requests: int | None = None,
) -> Load:
    """`concurrency` workers send the bodies in turn until `requests` are sent or `seconds` pass."""
    load, issued, deadline = Load(), 0, time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal issued
        while (requests is None or issued < requests) and time.perf_counter() < deadline:
            body = bodies[issued % len(bodies)]
            issued += 1
            started = time.perf_counter()
            problem = await _complete(client, body)
            load.latencies_ms.append((time.perf_counter() - started) * 1000)
            if problem is not None:
                load.errors.append(problem)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    load.wall_s = time.perf_counter() - started
    return load


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Runs a coroutine on uvloop when it is installed (as uvicorn does), else on asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


@dataclass
class ClientLoad:
    """A client process's load (with its warm-up's errors), the CPU each process spent per
    request meanwhile (warm-up included), and the cores every other process kept busy."""

    load: Load
    cpu_ms: dict[str, float]
    other_cores: float


def client_process(
    url: str,
    bodies: Sequence[bytes],
    concurrency: int,
    seconds: float,
    requests: int | None = None,
    warmup: int = 0,
    pids: dict[str, int] | None = None,
) -> ClientLoad:
    """`warmup` requests, then `drive`'s load, sent by a fresh `python bench/harness.py` process
    (so its CPU is its own); accounts the CPU of that client and of `pids` meanwhile."""
    spec = {"url": url, "bodies": [body.decode() for body in bodies], "warmup": warmup}
    spec |= {"concurrency": concurrency, "seconds": seconds, "requests": requests}
    with cpu_spent(pids or {}) as spent:
        done = subprocess.run(
            [sys.executable, __file__],
            input=json.dumps(spec).encode(),
            capture_output=True,
            check=True,
            timeout=seconds * 4 + 60,
        )
    result = json.loads(done.stdout)
    load = Load(result["latencies_ms"], result["warm_errors"] + result["errors"], result["wall_s"])
    cpu = spent.processes | {"client": result["cpu_s"]}
    cpu_ms = {name: 1000 * used / result["requests"] for name, used in cpu.items()}
    return ClientLoad(load, cpu_ms, spent.other_cores)


def _client_main() -> None:
    """The client process: its spec on stdin, what it measured as JSON on stdout."""
    spec = json.load(sys.stdin)
    bodies = [body.encode() for body in spec["bodies"]]
    c, seconds = spec["concurrency"], spec["seconds"]

    async def phases() -> dict[str, Any]:
        async with load_client(spec["url"], c) as client:
            cpu = time.process_time()  # the load's CPU, without the interpreter's start-up
            warm = await drive(client, bodies, c, seconds, spec["warmup"])
            load = await drive(client, bodies, c, seconds, spec["requests"])
            cpu_s = time.process_time() - cpu
        requests = len(warm.latencies_ms) + len(load.latencies_ms)
        return asdict(load) | {"cpu_s": cpu_s, "requests": requests, "warm_errors": warm.errors}

    print(json.dumps(run_async(phases())))


# --- bench/RESULTS.md -----------------------------------------------------------------------------


def run_options(description: str) -> argparse.ArgumentParser:
    """A parser with --quick (a smoke run) and --out (default RESULTS.md; none with --quick)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a smaller, faster smoke run")
    parser.add_argument(
        "--out", type=Path, help=f"results file (default {RESULTS}; none with --quick)"
    )
    return parser


def publish(section: str, title: str, args: argparse.Namespace) -> None:
    """Prints the section and writes it to --out (RESULTS.md unless --quick)."""
    print(section)
    out: Path | None = args.out or (None if args.quick else RESULTS)
    if out is not None:
        write_section(out, title, section)
        print(f"written to {out}")


def write_section(path: Path, title: str, section: str) -> None:
    """Adds or replaces the section that starts with `title`, leaving the others alone."""
    existing = path.read_text() if path.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"^{re.escape(title)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(existing):
        updated = pattern.sub(lambda _: section + "\n", existing, count=1).rstrip() + "\n"
    else:
        updated = existing.rstrip() + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(updated)


if __name__ == "__main__":
    _client_main()
