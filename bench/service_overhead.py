"""Service overhead: ladder in front of a minimal loopback upstream vs the upstream called directly.

Run from the repository root: `python bench/service_overhead.py [--quick] [--out bench/RESULTS.md]`.
Starts a tiny OpenAI-compatible upstream (raw ASGI, this file's `upstream_app`) and `ladder serve`
with the vllm engine pointed at it, then drives both with the same httpx client, a process per cell.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from results_file import write_section

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "bench" / "RESULTS.md"
SECTION_TITLE = "## Service overhead"
QUESTIONS = REPO / "corpus" / "qa.jsonl"
BENCH_ENV = {
    "HF_HUB_OFFLINE": "1",
    "OMP_WAIT_POLICY": "PASSIVE",
    "TOKENIZERS_PARALLELISM": "false",
    "ANONYMIZED_TELEMETRY": "False",
}
CONFIGURATIONS_YAML = (
    "configurations:\n  plain: {}\n  rag:\n    retrieval: {collection: docs, k: 4}\n"
)
GOAL_ADDED_P50_MS = 2.0
GOAL_RATIO = 0.9
TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Sizes:
    """How many requests each cell sends."""

    requests: dict[int, int]
    warmup: int
    cell_seconds: float


FULL = Sizes(requests={1: 400, 16: 2000, 64: 2000}, warmup=50, cell_seconds=60.0)
QUICK = Sizes(requests={1: 100, 16: 300, 64: 300}, warmup=20, cell_seconds=15.0)

# --- the upstream: a raw ASGI callable, so the baseline costs as little as we can make it ---------

ANSWER = "The Aurora K3 keeps water hot for 45 minutes."
USAGE = {"prompt_tokens": 24, "completion_tokens": 12, "total_tokens": 36}
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


def _chunk(delta: dict[str, str], finish: str | None = None, **extra: Any) -> bytes:
    choices = [{"index": 0, "delta": delta, "finish_reason": finish}]
    event = {"id": "up-1", "object": "chat.completion.chunk", "created": 0, "model": "base"}
    event |= {"choices": choices} | extra
    return b"data: " + json.dumps(event).encode() + b"\n\n"


_COMPLETION = json.dumps(
    {
        "id": "up-1",
        "object": "chat.completion",
        "created": 0,
        "model": "base",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": ANSWER},
                "finish_reason": "stop",
            }
        ],
        "usage": USAGE,
    }
).encode()
_PIECES = [ANSWER[i : i + 6] for i in range(0, 48, 6)]
_EVENTS = [
    *(_chunk({"content": piece}) for piece in _PIECES),
    _chunk({}, "stop"),
    b"data: " + json.dumps({"id": "up-1", "choices": [], "usage": USAGE}).encode() + b"\n\n",
    b"data: [DONE]\n\n",
]


async def _respond(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def upstream_app(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
    """A fixed OpenAI chat completion (JSON, or SSE with stream=true) and GET /health."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["method"] == "GET" and scope["path"] == "/health":
        await _respond(send, 200, b"{}")
        return
    if scope["method"] != "POST" or scope["path"] != "/v1/chat/completions":
        await _respond(send, 404, b'{"error": {"message": "not found"}}')
        return
    body, more = b"", True
    while more:
        message = await receive()
        body, more = body + message.get("body", b""), message.get("more_body", False)
    if not json.loads(body).get("stream"):
        await _respond(send, 200, _COMPLETION)
        return
    headers = [(b"content-type", b"text/event-stream")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for event in _EVENTS:
        await send({"type": "http.response.body", "body": event, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


# --- the load generator: runs in its own process, one per cell ------------------------------------


@dataclass(frozen=True)
class ClientSpec:
    """One cell's load: where, which configuration, how hard, how long."""

    url: str
    model: str
    concurrency: int
    requests: int
    warmup: int
    seconds: float
    stream: bool


def _bodies(model: str, stream: bool) -> list[bytes]:
    questions = [json.loads(line)["question"] for line in QUESTIONS.read_text().splitlines()]
    extra: dict[str, Any] = {"stream_options": {"include_usage": True}} if stream else {}
    return [
        json.dumps(
            {"model": model, "messages": [{"role": "user", "content": q}], "max_tokens": 32}
            | {"stream": stream}
            | extra
        ).encode()
        for q in questions
    ]


async def _one(client: httpx.AsyncClient, body: bytes, stream: bool) -> str | None:
    """Sends one request and reads it to the last byte; returns what went wrong, if anything."""
    headers = {"content-type": "application/json"}
    try:
        async with client.stream(
            "POST", "/v1/chat/completions", content=body, headers=headers
        ) as r:
            data = b"".join([part async for part in r.aiter_raw()])
    except httpx.HTTPError as error:
        return f"{type(error).__name__}: {error}"
    if r.status_code != 200:
        return f"{r.status_code}: {data[:200]!r}"
    if stream and (not data.endswith(b"data: [DONE]\n\n") or b'"error"' in data):
        return f"bad stream: {data[-200:]!r}"
    return None


async def _phase(
    client: httpx.AsyncClient, spec: ClientSpec, count: int, bodies: list[bytes]
) -> dict[str, Any]:
    latencies: list[float] = []
    errors: list[str] = []
    issued = 0
    deadline = time.perf_counter() + spec.seconds

    async def worker() -> None:
        nonlocal issued
        while issued < count and time.perf_counter() < deadline:
            body = bodies[issued % len(bodies)]
            issued += 1
            started = time.perf_counter()
            problem = await _one(client, body, spec.stream)
            latencies.append((time.perf_counter() - started) * 1000)
            if problem is not None:
                errors.append(problem)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(spec.concurrency)))
    wall = time.perf_counter() - started
    return {"latencies_ms": latencies, "errors": errors, "wall_s": wall}


async def _load(spec: ClientSpec) -> dict[str, Any]:
    bodies = _bodies(spec.model, spec.stream)
    limits = httpx.Limits(
        max_connections=spec.concurrency, max_keepalive_connections=spec.concurrency
    )
    async with httpx.AsyncClient(base_url=spec.url, limits=limits, timeout=30.0) as client:
        cpu = time.process_time()
        warm = await _phase(client, spec, spec.warmup, bodies)
        result = await _phase(client, spec, spec.requests, bodies)
        result["cpu_s"] = time.process_time() - cpu
    result["total_requests"] = len(warm["latencies_ms"]) + len(result["latencies_ms"])
    result["warmup_errors"] = warm["errors"]
    return result


def client_main(spec: ClientSpec) -> None:
    """Runs one cell's load (on uvloop when installed) and prints the result as JSON."""
    try:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            result = runner.run(_load(spec))
    except ImportError:
        result = asyncio.run(_load(spec))
    print(json.dumps(result))


# --- the servers ----------------------------------------------------------------------------------


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fast_uvicorn_options() -> list[str]:
    """uvloop and httptools when installed (nothing is installed for this benchmark)."""
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return ["--loop", loop, "--http", http]


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Starts a server with its output going to a log file."""
    with log.open("wb") as sink:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT)


def wait_until_200(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    """Polls url until it answers 200; fails with the log's tail when the server dies or stalls."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} server exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{url} not ready after {timeout:.0f}s:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to that one PID, SIGKILL if it lingers."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def vm_rss_mib(pid: int) -> float:
    """Resident memory of a process, from /proc/<pid>/status."""
    found = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(found.group(1)) / 1024 if found else float("nan")


def cpu_ticks(pid: int) -> int:
    """User plus system CPU ticks of a process (all threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def busy_ticks() -> int:
    """CPU ticks the whole machine spent busy (all cores)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return sum(values) - values[3] - values[4]


# --- the measurements -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One measurement: direct to the upstream, or through a ladder configuration."""

    target: str
    config: str
    concurrency: int
    stream: bool

    @property
    def label(self) -> str:
        """How progress lines name it."""
        mode = "stream" if self.stream else "json"
        return f"{self.target:6} {self.config:5} c={self.concurrency:<2} {mode}"


@dataclass
class CellResult:
    """One cell's latencies, errors and CPU accounting."""

    cell: Cell
    latencies_ms: list[float]
    errors: list[str]
    wall_s: float
    total_requests: int
    cpu_ms_per_request: dict[str, float]
    other_cores: float

    @property
    def throughput(self) -> float:
        """Completed requests per second in the measured phase."""
        return len(self.latencies_ms) / self.wall_s


@dataclass
class Servers:
    """The two server processes and their URLs."""

    upstream: subprocess.Popen[bytes]
    upstream_url: str
    ladder: subprocess.Popen[bytes]
    ladder_url: str


def cell_order(concurrencies: tuple[int, ...]) -> list[Cell]:
    """Direct runs bracket the ladder runs of each concurrency, so drift shows and averages out."""
    cells: list[Cell] = []
    for c in concurrencies:
        direct = Cell("direct", "-", c, False)
        cells += [
            direct,
            Cell("ladder", "plain", c, False),
            Cell("ladder", "rag", c, False),
            direct,
        ]
    streamed = Cell("direct", "-", 16, True)
    return [*cells, streamed, Cell("ladder", "plain", 16, True), streamed]


def measure(cell: Cell, servers: Servers, sizes: Sizes, env: dict[str, str]) -> CellResult:
    """Runs one cell's client process, accounting the CPU every process spent meanwhile."""
    direct = cell.target == "direct"
    spec = ClientSpec(
        url=servers.upstream_url if direct else servers.ladder_url,
        model="base" if direct else cell.config,
        concurrency=cell.concurrency,
        requests=sizes.requests[cell.concurrency],
        warmup=sizes.warmup,
        seconds=sizes.cell_seconds,
        stream=cell.stream,
    )
    pids = {"ladder": servers.ladder.pid, "upstream": servers.upstream.pid}
    before = {name: cpu_ticks(pid) for name, pid in pids.items()}
    machine_before, children_before, started = (
        busy_ticks(),
        resource.getrusage(resource.RUSAGE_CHILDREN),
        time.time(),
    )
    command = [sys.executable, __file__, "--client", json.dumps(asdict(spec))]
    done = subprocess.run(
        command, env=env, capture_output=True, check=True, timeout=4 * sizes.cell_seconds + 60
    )
    wall_ticks = (time.time() - started) * TICK
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_ticks = (
        children.ru_utime + children.ru_stime - children_before.ru_utime - children_before.ru_stime
    ) * TICK
    spent = {name: cpu_ticks(pid) - before[name] for name, pid in pids.items()}
    other = busy_ticks() - machine_before - sum(spent.values()) - client_ticks
    result = json.loads(done.stdout)
    per_request = {
        name: ticks / TICK * 1000 / result["total_requests"] for name, ticks in spent.items()
    }
    per_request["client"] = result["cpu_s"] * 1000 / result["total_requests"]
    return CellResult(
        cell,
        result["latencies_ms"],
        result["warmup_errors"] + result["errors"],
        result["wall_s"],
        result["total_requests"],
        per_request,
        max(other, 0) / wall_ticks,
    )


def sanity_check(ladder_url: str) -> dict[str, Any]:
    """One request per configuration: the upstream's answer comes back, and RAG really retrieved."""
    seen: dict[str, Any] = {}
    for config in ("plain", "rag"):
        body = {
            "model": config,
            "messages": [{"role": "user", "content": "What does the K3 cost?"}],
        }
        response = httpx.post(f"{ladder_url}/v1/chat/completions", json=body, timeout=30.0)
        response.raise_for_status()
        answer = response.json()
        if answer["choices"][0]["message"]["content"] != ANSWER:
            raise RuntimeError(f"{config}: unexpected answer {answer}")
        seen[config] = answer["ladder"]
    if seen["rag"]["retrieval"] != "used" or not seen["rag"]["citations"]:
        raise RuntimeError(f"rag did not retrieve: {seen['rag']}")
    return seen


# --- statistics and the written section -----------------------------------------------------------


def percentile(values: list[float], q: int) -> float:
    """The q-th percentile (inclusive interpolation)."""
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


@dataclass
class Row:
    """One table row: a ladder cell against the pooled direct cells of the same load."""

    ladder: CellResult
    direct: list[CellResult]

    def direct_latencies(self) -> list[float]:
        """The bracketing direct runs' latencies, pooled."""
        return [ms for result in self.direct for ms in result.latencies_ms]

    def added(self, q: int) -> float:
        """Ladder's percentile minus direct's (a difference of percentiles, not per request)."""
        return percentile(self.ladder.latencies_ms, q) - percentile(self.direct_latencies(), q)

    def direct_throughput(self) -> float:
        """Mean throughput of the bracketing direct runs."""
        return statistics.fmean(result.throughput for result in self.direct)

    def ratio(self) -> float:
        """Throughput through ladder over throughput direct."""
        return self.ladder.throughput / self.direct_throughput()

    def goal(self) -> str:
        """Which goals apply to the row and whether they were met."""
        ratio = "met" if self.ratio() >= GOAL_RATIO else "missed"
        if self.ladder.cell.config == "rag":
            return f"ratio ≥ {GOAL_RATIO}: {ratio}"
        p50 = "met" if self.added(50) <= GOAL_ADDED_P50_MS else "missed"
        return f"p50 ≤ {GOAL_ADDED_P50_MS:g} ms: {p50}; ratio ≥ {GOAL_RATIO}: {ratio}"


def build_rows(results: list[CellResult]) -> list[Row]:
    """Pairs each ladder cell with the direct cells of the same concurrency and mode."""
    rows = []
    for result in results:
        if result.cell.target != "ladder":
            continue
        key = (result.cell.concurrency, result.cell.stream)
        direct = [
            r
            for r in results
            if r.cell.target == "direct" and (r.cell.concurrency, r.cell.stream) == key
        ]
        rows.append(Row(result, direct))
    return rows


def _pair(values: list[float]) -> str:
    return " / ".join(f"{value:.2f}" for value in values)


def render_table(rows: list[Row]) -> list[str]:
    """The main table: latency and throughput, direct vs through ladder."""
    lines = [
        "| configuration | concurrency | stream | direct p50 / p99 ms | ladder p50 / p99 ms "
        "| added p50 / p99 ms | throughput direct / ladder req/s | ratio "
        "| requests direct / ladder | errors direct / ladder | goal |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cell, direct = row.ladder.cell, row.direct_latencies()
        lines.append(
            f"| {cell.config} | {cell.concurrency} | {'to last byte' if cell.stream else 'no'} "
            f"| {_pair([percentile(direct, 50), percentile(direct, 99)])} "
            f"| {_pair([percentile(row.ladder.latencies_ms, q) for q in (50, 99)])} "
            f"| {_pair([row.added(50), row.added(99)])} "
            f"| {row.direct_throughput():.0f} / {row.ladder.throughput:.0f} | {row.ratio():.2f} "
            f"| {len(direct)} / {len(row.ladder.latencies_ms)} "
            f"| {sum(len(r.errors) for r in row.direct)} / {len(row.ladder.errors)} "
            f"| {row.goal()} |"
        )
    return lines


def render_cpu(results: list[CellResult]) -> list[str]:
    """Every cell in run order, with the CPU each process spent per request."""
    lines = [
        "| # | cell | p50 ms | req/s | ladder CPU ms/req | upstream CPU ms/req "
        "| client CPU ms/req | other processes (cores busy) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for number, result in enumerate(results, start=1):
        cpu = result.cpu_ms_per_request
        lines.append(
            f"| {number} | `{result.cell.label}` | {percentile(result.latencies_ms, 50):.2f} "
            f"| {result.throughput:.0f} | {cpu['ladder']:.2f} | {cpu['upstream']:.2f} "
            f"| {cpu['client']:.2f} | {result.other_cores:.2f} |"
        )
    return lines


def _cpu(result: CellResult, *names: str) -> float:
    return sum(result.cpu_ms_per_request[name] for name in names)


def _direct_cpu(row: Row) -> float:
    return statistics.fmean(_cpu(result, "client", "upstream") for result in row.direct)


def render_reading(rows: list[Row], results: list[CellResult], cores: int) -> list[str]:
    """Sentences computed from this run's numbers (the prose around them is fixed)."""
    found = {
        (r.ladder.cell.config, r.ladder.cell.concurrency, r.ladder.cell.stream): r for r in rows
    }
    plain1, plain64, rag1, rag64 = (
        found[key]
        for key in (
            ("plain", 1, False),
            ("plain", 64, False),
            ("rag", 1, False),
            ("rag", 64, False),
        )
    )
    cpu1 = plain1.ladder.cpu_ms_per_request
    via_plain, via_rag = (_cpu(r.ladder, "client", "ladder", "upstream") for r in (plain64, rag64))
    others = [result.other_cores for result in results]
    return [
        f"At concurrency 1 without layers ladder added {plain1.added(50):.2f} ms at p50 (goal "
        f"{GOAL_ADDED_P50_MS:g} ms); its process spent {cpu1['ladder']:.2f} ms of CPU per request "
        f"(HTTP parsing, pydantic validation, planning and token counting, its own httpx call "
        f"upstream, response serialisation), against "
        f"{cpu1['upstream']:.2f} ms for the upstream and {cpu1['client']:.2f} ms for the client.",
        f"Under load the client, ladder and the upstream share {cores} cores, so throughput is "
        f"set by CPU per request: at concurrency 64 a direct request cost "
        f"{_direct_cpu(plain64):.2f} ms of CPU (client + upstream) and one through ladder "
        f"{via_plain:.2f} ms, which "
        f"predicts a ratio of {_direct_cpu(plain64) / via_plain:.2f} once the cores are "
        f"saturated; measured {plain64.ratio():.2f}. The ratio therefore measures ladder's CPU "
        f"cost relative to a near-free upstream, not queueing inside ladder.",
        f"RAG adds a query embedding (all-MiniLM-L6-v2, 1 torch thread, in a worker thread) and a "
        f"Chroma vector search (k=4): ladder's CPU per request rises to "
        f"{rag1.ladder.cpu_ms_per_request['ladder']:.2f} ms and its added p50 at concurrency 1 to "
        f"{rag1.added(50):.2f} ms; at concurrency 64 ladder served {rag64.ladder.throughput:.0f} "
        f"req/s with RAG (CPU {via_rag:.2f} ms per request in all three processes).",
        f"Other processes on this shared machine kept {statistics.fmean(others):.2f} cores busy on "
        f"average during the cells (at most {max(others):.2f}), which the direct runs bracketing "
        f"each ladder run are there to even out; treat differences under ~10% with caution.",
    ]


def machine_info() -> dict[str, str]:
    """What the numbers were measured on."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    versions = {
        name: _version(name) for name in ("fastapi", "uvicorn", "httpx", "uvloop", "httptools")
    }
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(len(os.sched_getaffinity(0))),
        "CPU": cpu,
        "Python": platform.python_version(),
        "packages": ", ".join(f"{name} {version}" for name, version in versions.items()),
        "load average at start": _loadavg(),
    }


def _version(name: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _loadavg() -> str:
    return ", ".join(Path("/proc/loadavg").read_text().split()[:3])


@dataclass
class Report:
    """Everything the section shows."""

    quick: bool
    machine: dict[str, str]
    sizes: Sizes
    uvicorn_options: list[str]
    ingest: dict[str, Any] = field(default_factory=dict)
    rss_mib: dict[str, float] = field(default_factory=dict)
    ladder_log: dict[str, Any] = field(default_factory=dict)
    results: list[CellResult] = field(default_factory=list)
    seconds: float = 0.0


def render_section(report: Report) -> str:
    """The whole Markdown section."""
    rows = build_rows(report.results)
    run = "quick smoke run (`--quick`)" if report.quick else "full run"
    sizes = report.sizes
    requests = ", ".join(f"{n} at c={c}" for c, n in sizes.requests.items())
    log = report.ladder_log
    lines = [
        SECTION_TITLE,
        "",
        f"`python bench/service_overhead.py`, {run}, {report.seconds / 60:.1f} min. "
        f"{report.machine['date']}; nproc {report.machine['nproc']} ({report.machine['CPU']}); "
        f"Python {report.machine['Python']}; {report.machine['packages']}; load average at start "
        f"{report.machine['load average at start']}, "
        f"at end {report.machine['load average at end']}.",
        "",
        "- **Upstream**: a raw ASGI callable in this script (fixed completion with usage; with "
        "`stream: true`, 8 content chunks, a finish chunk, a usage chunk and `[DONE]`, each its "
        f"own write) under uvicorn `{' '.join(report.uvicorn_options)} --no-access-log` "
        "on 127.0.0.1.",
        "- **ladder**: `python -m service.cli serve` (uvicorn defaults: uvloop and httptools when "
        "installed, access log off as `LADDER_ACCESS_LOG` defaults), `LADDER_ENGINE=vllm`, "
        "one worker, `LADDER_TORCH_THREADS=1`, "
        "configurations `plain: {}` and `rag: {retrieval: {collection: docs, k: 4}}` (vector "
        "search), collection `docs` ingested from `corpus/docs` "
        f"({report.ingest.get('added', '?')} "
        f"documents, {report.ingest.get('chunks', '?')} chunks) into a temporary "
        "`LADDER_DATA_DIR`; `LADDER_CACHE_DIR` points at the converted base model, so prompt "
        "tokens are counted with its tokenizer.",
        f"- **Client**: httpx `AsyncClient` (on uvloop), a fresh process per cell, one pooled "
        f"connection per concurrent worker; {sizes.warmup} warm-up requests, then {requests}, "
        f"stopped after {sizes.cell_seconds:.0f} s; one question of `corpus/qa.jsonl` per "
        "request in turn, `max_tokens` 32. Direct requests send the same body with model `base`.",
        f"- All three processes share the machine's {report.machine['nproc']} cores. Each ladder "
        "cell is bracketed by two direct cells of the same load, pooled into the direct columns. "
        "\"Added\" is ladder's percentile minus direct's.",
        "",
        *render_table(rows),
        "",
        *render_reading(rows, report.results, int(report.machine["nproc"])),
        "",
        f"ladder RSS: {report.rss_mib['ready']:.0f} MiB when ready, "
        f"{report.rss_mib['after']:.0f} MiB after all cells. ladder's log: "
        f"{log.get('warnings', 0)} warning and {log.get('errors', 0)} error lines"
        + (f" (first: `{log['first']}`)" if log.get("first") else "")
        + "; errors are non-200 responses and streams without `[DONE]` or with an error event.",
        "",
        "### Every cell, in run order, with CPU per request (warm-up included)",
        "",
        *render_cpu(report.results),
    ]
    return "\n".join(lines) + "\n"


# --- the run --------------------------------------------------------------------------------------


def bench_env(workdir: Path) -> dict[str, str]:
    """The environment of every process this benchmark starts."""
    return (
        os.environ
        | BENCH_ENV
        | {
            "LADDER_ENGINE": "vllm",
            "LADDER_VLLM_MODEL": "base",
            # The fast upstream has no LoRA endpoints; the guard is measured in bench/vllm_lora.py.
            "LADDER_VLLM_LEAK_GUARD": "false",
            "LADDER_CONFIG": str(workdir / "configurations.yaml"),
            "LADDER_DATA_DIR": str(workdir / "data"),
            "LADDER_CACHE_DIR": str(REPO / ".ladder" / "cache"),
            "LADDER_TORCH_THREADS": "1",
        }
    )


def ingest_docs(env: dict[str, str]) -> dict[str, Any]:
    """`ladder ingest corpus/docs --collection docs` into the temporary data folder."""
    command = [sys.executable, "-m", "service.cli", "ingest", "corpus/docs", "--collection", "docs"]
    done = subprocess.run(
        [*command, "--json"], cwd=REPO, env=env, capture_output=True, check=True, timeout=600
    )
    summary: dict[str, Any] = json.loads(done.stdout)
    return summary


def start_servers(workdir: Path, env: dict[str, str], options: list[str]) -> list[Servers]:
    """Starts the upstream, then ladder in front of it; returns them once both are ready."""
    up_port, ladder_port = free_port(), free_port()
    upstream_url, ladder_url = f"http://127.0.0.1:{up_port}", f"http://127.0.0.1:{ladder_port}"
    app = ["-m", "uvicorn", "service_overhead:upstream_app", "--app-dir", str(REPO / "bench")]
    flags = ["--host", "127.0.0.1", "--port", str(up_port), "--log-level", "warning"]
    upstream = start(
        [sys.executable, *app, *flags, *options, "--no-access-log"], env, workdir / "upstream.log"
    )
    servers: list[Servers] = []
    try:
        wait_until_200(f"{upstream_url}/health", upstream, workdir / "upstream.log", 30)
        ladder = start(
            [sys.executable, "-m", "service.cli", "serve", "--port", str(ladder_port)],
            env | {"LADDER_VLLM_URL": upstream_url},
            workdir / "ladder.log",
        )
        servers.append(Servers(upstream, upstream_url, ladder, ladder_url))
        wait_until_200(f"{ladder_url}/ready", ladder, workdir / "ladder.log", 180)
    except BaseException:
        for server in servers:
            stop(server.ladder)
        stop(upstream)
        raise
    return servers


def scan_log(log: Path) -> dict[str, Any]:
    """Counts ladder's warning and error lines (the access log is INFO)."""
    lines = log.read_text(errors="replace").splitlines()
    warnings = [line for line in lines if " WARNING " in line]
    errors = [line for line in lines if " ERROR " in line or "Traceback" in line]
    return {"warnings": len(warnings), "errors": len(errors), "first": (errors + warnings)[:1]}


def run_cells(report: Report, servers: Servers, env: dict[str, str]) -> None:
    """Every cell in order, printing progress."""
    cells = cell_order(tuple(report.sizes.requests))
    for number, cell in enumerate(cells, start=1):
        result = measure(cell, servers, report.sizes, env)
        report.results.append(result)
        print(
            f"[{number:2}/{len(cells)}] {cell.label}: {len(result.latencies_ms)} requests, "
            f"p50 {percentile(result.latencies_ms, 50):.2f} ms, p99 "
            f"{percentile(result.latencies_ms, 99):.2f} ms, {result.throughput:.0f} req/s, "
            f"{len(result.errors)} errors, ladder CPU {result.cpu_ms_per_request['ladder']:.2f} "
            f"ms/req, other load {result.other_cores:.2f} cores",
            flush=True,
        )
        for problem in result.errors[:3]:
            print(f"      error: {problem}", flush=True)


def run_benchmark(report: Report, workdir: Path) -> None:
    """Ingests, starts both servers, runs every cell, and stops the servers by PID."""
    env = bench_env(workdir)
    (workdir / "configurations.yaml").write_text(CONFIGURATIONS_YAML)
    print("ingesting corpus/docs", flush=True)
    report.ingest = ingest_docs(env)
    print(f"  {report.ingest['added']} documents, {report.ingest['chunks']} chunks", flush=True)
    (servers,) = start_servers(workdir, env, report.uvicorn_options)
    try:
        print(f"upstream pid {servers.upstream.pid}, ladder pid {servers.ladder.pid}", flush=True)
        seen = sanity_check(servers.ladder_url)
        print(f"  rag retrieved {len(seen['rag']['citations'])} passages", flush=True)
        report.rss_mib["ready"] = vm_rss_mib(servers.ladder.pid)
        run_cells(report, servers, env)
        report.rss_mib["after"] = vm_rss_mib(servers.ladder.pid)
    finally:
        stop(servers.ladder)
        stop(servers.upstream)
    report.ladder_log = scan_log(workdir / "ladder.log")


def main() -> None:
    """Runs the benchmark, prints the section and writes it to --out."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests, for a smoke run")
    parser.add_argument(
        "--out", type=Path, help=f"results file (default {DEFAULT_OUT}; none with --quick)"
    )
    parser.add_argument("--client", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client_main(ClientSpec(**json.loads(args.client)))
        return
    os.environ.update(BENCH_ENV)
    started = time.monotonic()
    report = Report(
        args.quick, machine_info(), QUICK if args.quick else FULL, fast_uvicorn_options()
    )
    with tempfile.TemporaryDirectory(prefix="ladder-overhead-") as workdir:
        run_benchmark(report, Path(workdir))
    report.machine["load average at end"] = _loadavg()
    report.seconds = time.monotonic() - started
    section = render_section(report)
    print(section)
    out = args.out or (None if args.quick else DEFAULT_OUT)
    if out is not None:
        write_section(out, SECTION_TITLE, section)
        print(f"written to {out}")


if __name__ == "__main__":
    main()
