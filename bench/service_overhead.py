"""Service overhead: ladder, and the LiteLLM proxy as a peer, in front of a fast loopback upstream
vs that upstream called directly.

Run from the repository root: `python bench/service_overhead.py [--quick] [--out FILE]
[--configs plain,rag] [--no-litellm]`. Starts tests/support/fake_upstream.py (the upstream),
`ladder serve` (vllm engine) in front of it and, when `make bench-peers` installed it, the LiteLLM
proxy in front of it too; then drives them with the same httpx load, a fresh client process per
cell. Each concurrency's proxy cells sit between two direct cells, so drift of a shared machine
shows and averages out.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import harness
import httpx
from harness import ClientLoad, median, percentile

SECTION_TITLE = "## Service overhead"
CONFIGURATIONS = {"plain": "{}", "rag": "{retrieval: {collection: docs, k: 4}}"}
PIECES = 8  # content chunks per streamed answer
# Issue 17's goals for ladder without layers (`plain`), and for RAG at the highest concurrency.
GOAL_ADDED_P50_MS = 1.0  # at concurrency 1
GOAL_CPU_MS = 1.0  # ladder's CPU per request
GOAL_RATIO = 0.7  # throughput over direct's at concurrency 16
GOAL_RAG_RPS = 80.0  # RAG requests/s at concurrency 16
NOISY_CORES = 0.25  # other processes' load above which the reading calls the machine noisy
FULL = {"requests": {1: 400, 16: 2000, 64: 2000}, "warmup": 50, "seconds": 60.0}
QUICK = {"requests": {1: 100, 16: 300, 64: 300}, "warmup": 20, "seconds": 15.0}


@dataclass(frozen=True)
class Cell:
    """One measurement: direct to the upstream (`config` "-"), or through a proxy (`via`: ladder
    or litellm) with a configuration (LiteLLM serves `plain` only)."""

    config: str
    concurrency: int
    stream: bool = False
    via: str = "ladder"

    @property
    def target(self) -> str:
        """What the client talks to: direct, ladder or litellm."""
        return "direct" if self.config == "-" else self.via

    @property
    def label(self) -> str:
        """How progress lines and the CPU table name it."""
        mode = "stream" if self.stream else "json"
        return f"{self.target:7} {self.config:5} c={self.concurrency:<2} {mode}"


def cell_order(concurrencies: list[int], configs: list[str], peers: list[str]) -> list[Cell]:
    """Each concurrency's proxy cells between two direct cells (a peer right after ladder's
    `plain`); then streaming at 16 (or the highest concurrency) without layers."""

    def proxied(config: str, c: int, stream: bool = False) -> list[Cell]:
        peer_cells = [Cell(config, c, stream, p) for p in peers if config == "plain"]
        return [Cell(config, c, stream), *peer_cells]

    cells: list[Cell] = []
    for c in concurrencies:
        cells += [Cell("-", c), *(x for cfg in configs for x in proxied(cfg, c)), Cell("-", c)]
    if "plain" not in configs:
        return cells
    top = 16 if 16 in concurrencies else concurrencies[-1]
    return [*cells, Cell("-", top, True), *proxied("plain", top, True), Cell("-", top, True)]


@dataclass
class Targets:
    """Where each target answers, and every server process whose CPU is accounted."""

    urls: dict[str, str]
    pids: dict[str, int]
    ladder_log: Path


def measure(cell: Cell, targets: Targets, sizes: dict[str, Any]) -> ClientLoad:
    """One cell's load from its own client process, with the CPU every process spent."""
    lines = (harness.REPO / "corpus" / "qa.jsonl").read_text().splitlines()
    model = "base" if cell.target == "direct" else cell.config
    bodies = [harness.chat_body(model, json.loads(line)["question"], cell.stream) for line in lines]
    requests = sizes["requests"][cell.concurrency]
    return harness.client_process(
        targets.urls[cell.target],
        bodies,
        cell.concurrency,
        sizes["seconds"],
        requests,
        sizes["warmup"],
        targets.pids,
    )


@dataclass
class Row:
    """A proxy cell beside the two direct cells around it, with the goals."""

    cell: Cell
    proxy: ClientLoad
    direct: list[ClientLoad]

    @property
    def direct_ms(self) -> list[float]:
        """The direct cells' latencies, pooled."""
        return [ms for result in self.direct for ms in result.load.latencies_ms]

    def added(self, q: int) -> float:
        """The proxy's percentile minus direct's (a difference of percentiles, not per request)."""
        return percentile(self.proxy.load.latencies_ms, q) - percentile(self.direct_ms, q)

    @property
    def direct_throughput(self) -> float:
        """The direct cells' mean throughput."""
        return sum(r.load.throughput for r in self.direct) / len(self.direct)

    @property
    def ratio(self) -> float:
        """Throughput through the proxy over direct's."""
        return self.proxy.load.throughput / self.direct_throughput

    @property
    def cpu_ms(self) -> float:
        """The proxy process's CPU per request."""
        return self.proxy.cpu_ms[self.cell.via]

    def goals(self) -> str:
        """Issue 17's goals that apply to this row (ladder's cells only), met or missed."""
        mark = {True: "met", False: "**missed**"}
        cell, goals = self.cell, []
        if cell.via != "ladder":
            return "—"
        if cell.config == "plain" and not cell.stream:
            goals.append(f"CPU ≤ {GOAL_CPU_MS:g} ms: {mark[self.cpu_ms <= GOAL_CPU_MS]}")
            if cell.concurrency == 1:
                met = self.added(50) <= GOAL_ADDED_P50_MS
                goals.append(f"added p50 ≤ {GOAL_ADDED_P50_MS:g} ms: {mark[met]}")
            if cell.concurrency == 16:
                goals.append(f"ratio ≥ {GOAL_RATIO:g}: {mark[self.ratio >= GOAL_RATIO]}")
        if cell.config == "rag" and cell.concurrency == 16:
            met = self.proxy.load.throughput >= GOAL_RAG_RPS
            goals.append(f"≥ {GOAL_RAG_RPS:g} req/s: {mark[met]}")
        return "; ".join(goals) or "—"


def rows_of(results: list[tuple[Cell, ClientLoad]]) -> dict[Cell, Row]:
    """Each proxy cell with the direct cells of its concurrency and mode."""
    return {
        cell: Row(cell, r, [d for c, d in results if c == Cell("-", cell.concurrency, cell.stream)])
        for cell, r in results
        if cell.target != "direct"
    }


@dataclass
class Report:
    """Everything the section shows."""

    quick: bool
    sizes: dict[str, Any]
    machine: dict[str, str]
    configs: list[str]
    peers: dict[str, str] = field(default_factory=dict)  # name: version, or why it did not run
    ingest: dict[str, Any] = field(default_factory=dict)
    rss_mib: dict[str, float] = field(default_factory=dict)
    log: dict[str, Any] = field(default_factory=dict)
    results: list[tuple[Cell, ClientLoad]] = field(default_factory=list)


def render_tables(rows: dict[Cell, Row], results: list[tuple[Cell, ClientLoad]]) -> list[str]:
    """Every proxy beside direct with the goals; then every cell with its CPU per request."""
    lines = [
        "| target | configuration | concurrency | stream | direct p50 / p99 ms "
        "| proxy p50 / p99 ms | added p50 / p99 ms | proxy CPU ms/req | direct / proxy req/s "
        "| ratio | errors direct / proxy | goals (issue 17) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cell, row in rows.items():
        direct, ours = row.direct_ms, row.proxy.load.latencies_ms
        lines.append(
            f"| {cell.via} | {cell.config} | {cell.concurrency} "
            f"| {'to last byte' if cell.stream else 'no'} "
            f"| {median(direct):.2f} / {percentile(direct, 99):.2f} "
            f"| {median(ours):.2f} / {percentile(ours, 99):.2f} "
            f"| {row.added(50):.2f} / {row.added(99):.2f} | {row.cpu_ms:.2f} "
            f"| {row.direct_throughput:.0f} / {row.proxy.load.throughput:.0f} | {row.ratio:.2f} "
            f"| {sum(len(r.load.errors) for r in row.direct)} / {len(row.proxy.load.errors)} "
            f"| {row.goals()} |"
        )
    servers = [name for name in results[0][1].cpu_ms if name != "client"] if results else []
    lines += [
        "",
        "Every cell in run order; CPU ms per request of each process, warm-up included:",
        "",
        f"| # | cell | p50 ms | req/s | {' | '.join(servers)} | client | other processes (cores) |",
        "|---|---|---|---|" + "---|" * len(servers) + "---|---|",
    ]
    for number, (cell, r) in enumerate(results, start=1):
        cpu = " | ".join(f"{r.cpu_ms[name]:.2f}" for name in servers)
        lines.append(
            f"| {number} | `{cell.label}` | {median(r.load.latencies_ms):.2f} "
            f"| {r.load.throughput:.0f} | {cpu} | {r.cpu_ms['client']:.2f} "
            f"| {r.other_cores:.2f} |"
        )
    return lines


def _cpu_sentence(top: Row, nproc: int) -> str:
    """Whether CPU per request explains the throughput ratio at the highest concurrency."""
    direct = sum(r.cpu_ms["client"] + r.cpu_ms["upstream"] for r in top.direct) / len(top.direct)
    spent = top.proxy.cpu_ms
    via = spent["client"] + spent["upstream"] + spent[top.cell.via]
    busy = top.proxy.load.throughput * via / 1000
    sentence = (
        f"- **CPU per request** at c={top.cell.concurrency}: {direct:.2f} ms direct (client "
        f"and upstream), {via:.2f} ms through {top.cell.via} (client, proxy, upstream), keeping "
        f"{busy:.1f} of {nproc} cores busy. "
    )
    if busy < 0.8 * nproc:
        return sentence + "The cores were not saturated, so CPU alone does not set the ratio."
    apart = abs(top.ratio / (direct / via) - 1)
    return sentence + (
        f"On saturated cores that predicts a ratio of {direct / via:.2f}; measured "
        f"{top.ratio:.2f}, {apart:.0%} apart: "
        + ("the proxy's CPU per request sets the ratio." if apart <= 0.2 else "more than CPU does.")
    )


def _side_by_side(rows: dict[Cell, Row], concurrencies: list[int]) -> list[str]:
    """Ladder against each peer, cell by cell without layers: ratios from this one run."""
    lines = []
    for peer in sorted({cell.via for cell in rows} - {"ladder"}):
        parts = []
        for c in concurrencies:
            ours, theirs = rows.get(Cell("plain", c)), rows.get(Cell("plain", c, via=peer))
            if ours is None or theirs is None:
                continue
            parts.append(
                f"at c={c} ladder added {ours.added(50):.2f} ms at p50 against {peer}'s "
                f"{theirs.added(50):.2f}, spent {ours.cpu_ms:.2f} ms of CPU per request against "
                f"{theirs.cpu_ms:.2f} ({theirs.cpu_ms / ours.cpu_ms:.1f}x), and served "
                f"{ours.proxy.load.throughput:.0f} req/s against {theirs.proxy.load.throughput:.0f}"
            )
        if parts:
            lines.append(f"- **Beside {peer}**, no layers: " + "; ".join(parts) + ".")
    return lines


def render_reading(rows: dict[Cell, Row], report: Report) -> list[str]:
    """Sentences whose every claim follows from this run's numbers."""
    concurrencies = list(report.sizes["requests"])
    others = [r.other_cores for _, r in report.results]
    errors = sum(len(r.load.errors) for _, r in report.results)
    lines = [f"- **{errors} requests failed**; the figures count them." if errors else ""]
    if "plain" in report.configs:
        plain = [rows[Cell("plain", c)] for c in concurrencies]
        one, cpu = plain[0], plain[0].proxy.cpu_ms
        lines += [
            f"- **Added latency.** At concurrency 1 without layers ladder added "
            f"{one.added(50):.2f} ms at p50 ({median(one.direct_ms):.2f} ms direct, "
            f"{median(one.proxy.load.latencies_ms):.2f} ms through ladder). Per request ladder "
            f"spent {cpu['ladder']:.2f} ms of CPU, the upstream {cpu['upstream']:.2f} ms, the "
            f"client {cpu['client']:.2f} ms.",
            "- **Throughput without layers**, ladder over direct: "
            + ", ".join(f"{r.ratio:.2f} at c={r.cell.concurrency}" for r in plain)
            + ".",
            _cpu_sentence(plain[-1], int(report.machine["nproc"])),
            *_side_by_side(rows, concurrencies),
        ]
    if "rag" in report.configs:
        rag1, rag_top = rows[Cell("rag", concurrencies[0])], rows[Cell("rag", concurrencies[-1])]
        lines.append(
            f"- **RAG** (query embedding, Chroma vector search, k=4) added "
            f"{rag1.added(50):.2f} ms at p50 at concurrency 1, ladder's CPU "
            f"{rag1.proxy.cpu_ms['ladder']:.2f} ms per request; at c={concurrencies[-1]} ladder "
            f"served {rag_top.proxy.load.throughput:.0f} req/s with RAG "
            f"(ratio {rag_top.ratio:.2f})."
        )
    lines.append(
        f"- **Noise.** Other processes kept {sum(others) / len(others):.2f} cores busy on average "
        f"and at most {max(others):.2f}, {'below' if max(others) < NOISY_CORES else '**above**'} "
        f"the {NOISY_CORES} this reading calls quiet."
    )
    if report.quick:
        lines.append("- **Quick run**: too few requests for p99s or ratios to be relied on.")
    return [line for line in lines if line]


def _command(report: Report) -> str:
    options = " --quick" if report.quick else ""
    if report.configs != list(CONFIGURATIONS):
        options += f" --configs {','.join(report.configs)}"
    return f"`python bench/service_overhead.py{options}`"


def _peer_lines(report: Report) -> list[str]:
    if "litellm" not in report.peers:
        return []
    if report.peers["litellm"].startswith("not measured"):
        return [f"- **LiteLLM**: {report.peers['litellm']}."]
    return [
        f"- **LiteLLM proxy {report.peers['litellm']}** (`make bench-peers`, its own venv): "
        "`litellm --config bench/peers/litellm.yaml --num_workers 1`, model `plain` mapped to "
        "the same upstream as an OpenAI-compatible provider; no database, no callbacks, "
        "errors-only logging, no master key (loopback, as ladder here has no API keys)."
    ]


def render_section(report: Report, minutes: float) -> str:
    """The whole Markdown section."""
    rows, log, rss, sizes = rows_of(report.results), report.log, report.rss_mib, report.sizes
    requests = ", ".join(f"{n} at c={c}" for c, n in sizes["requests"].items())
    described = ", ".join(f"`{name}: {CONFIGURATIONS[name]}`" for name in report.configs)
    ingest = (
        f", `docs` ingested from corpus/docs ({report.ingest['added']} documents, "
        f"{report.ingest['chunks']} chunks)"
        if report.ingest
        else ""
    )
    lines = [
        SECTION_TITLE,
        "",
        f"{_command(report)}, {minutes:.1f} min; {harness.machine_line(report.machine)}.",
        "",
        "- **Upstream**: tests/support/fake_upstream.py (FastAPI on uvicorn, uvloop and httptools "
        f"when installed, no access log): a fixed completion, or {PIECES} content chunks, a "
        "finish chunk, a usage chunk and `[DONE]`, each its own write.",
        "- **ladder**: `ladder serve`, vllm engine pointed at the upstream, one worker, one torch "
        f"thread; configurations {described}{ingest}.",
        *_peer_lines(report),
        "- **Client**: httpx on uvloop, a process per cell, a connection per worker; "
        f"{sizes['warmup']} warm-up requests, then {requests}, each cell capped at "
        f"{sizes['seconds']:.0f} s; corpus/qa.jsonl's questions in turn, `max_tokens` 32. Client, "
        "upstream and proxies share the cores. \"Added\" is the proxy's percentile minus direct's "
        "(the two direct cells around it, pooled). Errors are non-200s and broken streams.",
        "",
        *render_tables(rows, report.results),
        "",
        *render_reading(rows, report),
        "",
        f"ladder RSS {rss['ready']:.0f} MiB when ready, {rss['after']:.0f} MiB after every cell; "
        f"its log: {log['warnings']} warning and {log['errors']} error lines"
        + (f" (first: `{log['first']}`)." if log["first"] else "."),
    ]
    return "\n".join(lines) + "\n"


def sanity_check(urls: dict[str, str], configs: list[str]) -> None:
    """Each proxy and configuration returns the upstream's answer, and RAG really retrieves."""
    from tests.support.fake_upstream import answer

    peers = [(target, "plain") for target in urls if target not in ("direct", "ladder")]
    for target, config in [*(("ladder", c) for c in configs), *peers]:
        body = {"model": config, "messages": [{"role": "user", "content": "What does K3 cost?"}]}
        reply = httpx.post(f"{urls[target]}/v1/chat/completions", json=body, timeout=30)
        reply.raise_for_status()
        content = reply.json()["choices"][0]["message"]["content"]
        if content != answer(PIECES) or (
            config == "rag" and not reply.json()["ladder"]["citations"]
        ):
            raise RuntimeError(f"{target} {config}: unexpected answer {reply.text}")


@contextmanager
def running(report: Report, workdir: Path, litellm: bool) -> Iterator[Targets]:
    """The upstream and ladder (ingesting corpus/docs for rag), and the LiteLLM peer when asked
    for and installed; all stopped by PID afterwards."""
    configurations = "configurations:\n" + "".join(
        f"  {name}: {CONFIGURATIONS[name]}\n" for name in report.configs
    )
    ingest = ("corpus/docs", "--collection", "docs") if "rag" in report.configs else ()
    with ExitStack() as stack:
        ladder = stack.enter_context(harness.ladder_stack(workdir, configurations, PIECES, ingest))
        report.ingest = ladder.ingested
        urls = {"direct": ladder.upstream.url, "ladder": ladder.ladder.base}
        targets = Targets(urls, dict(ladder.pids), ladder.log)
        missing = harness.litellm_missing() if litellm else "not asked for (--no-litellm)"
        if missing is None:
            peer = stack.enter_context(harness.litellm_proxy(workdir, ladder.upstream.url))
            urls["litellm"], targets.pids["litellm"] = peer.base, peer.process.pid
            report.peers["litellm"] = peer.version
        else:
            print(f"LiteLLM is not measured: {missing}", flush=True)
            report.peers["litellm"] = f"not measured: {missing}"
        yield targets


def run(report: Report, workdir: Path, litellm: bool) -> None:
    """Starts the servers, runs every cell, stops them by PID."""
    with running(report, workdir, litellm) as targets:
        sanity_check(targets.urls, report.configs)
        report.rss_mib["ready"] = harness.rss_mib(targets.pids["ladder"])
        peers = [name for name in targets.urls if name not in ("direct", "ladder")]
        cells = cell_order(list(report.sizes["requests"]), report.configs, peers)
        for number, cell in enumerate(cells, start=1):
            result = measure(cell, targets, report.sizes)
            report.results.append((cell, result))
            proxy = "" if cell.target == "direct" else f", {cell.via} CPU "
            proxy += f"{result.cpu_ms[cell.via]:.2f} ms/req" if proxy else ""
            print(
                f"[{number:2}/{len(cells)}] {cell.label}: "
                f"p50 {median(result.load.latencies_ms):.2f} ms, "
                f"{result.load.throughput:.0f} req/s, {len(result.load.errors)} errors{proxy}",
                *result.load.errors[:3],
                sep="\n      ",
                flush=True,
            )
        report.rss_mib["after"] = harness.rss_mib(targets.pids["ladder"])
    report.log = harness.log_problems(targets.ladder_log)


def main() -> None:
    """Runs the benchmark, prints the section and writes it to --out."""
    parser = harness.run_options(__doc__.splitlines()[0])
    parser.add_argument(
        "--configs",
        default=",".join(CONFIGURATIONS),
        help="ladder configurations to measure, of plain and rag (default both)",
    )
    parser.add_argument(
        "--no-litellm", action="store_true", help="leave the LiteLLM peer out even if installed"
    )
    args = parser.parse_args()
    configs = [name for name in CONFIGURATIONS if name in args.configs.split(",")]
    if not configs:
        parser.error(f"--configs names none of {', '.join(CONFIGURATIONS)}")
    os.environ.update(harness.BENCH_ENV)
    packages = ("fastapi", "uvicorn", "httpx", "uvloop", "httptools", "orjson")
    sizes = QUICK if args.quick else FULL
    report = Report(args.quick, sizes, harness.machine_info(packages), configs)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ladder-overhead-") as workdir:
        run(report, Path(workdir), not args.no_litellm)
    report.machine["load average at end"] = harness.load_average()
    section = render_section(report, (time.monotonic() - started) / 60)
    harness.publish(section, SECTION_TITLE, args)


if __name__ == "__main__":
    main()
