"""Service overhead: ladder in front of a fast loopback upstream vs that upstream called directly.

Run from the repository root: `python bench/service_overhead.py [--quick] [--out FILE]`.
Starts tests/support/fake_upstream.py (the peer) and `ladder serve` (vllm engine) in front of it,
then drives both with the same httpx load, a fresh client process per cell; direct cells bracket
ladder cells, so drift of a shared machine shows and averages out.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import harness
import httpx
from harness import ClientLoad, median, percentile

SECTION_TITLE = "## Service overhead"
CONFIGURATIONS = "configurations:\n  plain: {}\n  rag:\n    retrieval: {collection: docs, k: 4}\n"
PIECES = 8  # content chunks per streamed answer
GOAL_ADDED_P50_MS = 2.0
GOAL_RATIO = 0.9
NOISY_CORES = 0.25  # other processes' load above which the reading calls the machine noisy
FULL = {"requests": {1: 400, 16: 2000, 64: 2000}, "warmup": 50, "seconds": 60.0}
QUICK = {"requests": {1: 100, 16: 300, 64: 300}, "warmup": 20, "seconds": 15.0}


@dataclass(frozen=True)
class Cell:
    """One measurement: direct to the peer (`config` "-"), or through a ladder configuration."""

    config: str
    concurrency: int
    stream: bool = False

    @property
    def label(self) -> str:
        """How progress lines and the CPU table name it."""
        target = "direct" if self.config == "-" else "ladder"
        mode = "stream" if self.stream else "json"
        return f"{target} {self.config:5} c={self.concurrency:<2} {mode}"


def cell_order(concurrencies: list[int]) -> list[Cell]:
    """Each concurrency's ladder cells between two direct cells; then streaming at 16."""
    cells: list[Cell] = []
    for c in concurrencies:
        cells += [Cell("-", c), Cell("plain", c), Cell("rag", c), Cell("-", c)]
    return [*cells, Cell("-", 16, True), Cell("plain", 16, True), Cell("-", 16, True)]


def measure(cell: Cell, stack: harness.LadderStack, sizes: dict[str, Any]) -> ClientLoad:
    """One cell's load from its own client process, with the CPU every process spent."""
    direct = cell.config == "-"
    lines = (harness.REPO / "corpus" / "qa.jsonl").read_text().splitlines()
    model = "base" if direct else cell.config
    bodies = [harness.chat_body(model, json.loads(line)["question"], cell.stream) for line in lines]
    url = stack.upstream.url if direct else stack.ladder.base
    requests = sizes["requests"][cell.concurrency]
    return harness.client_process(
        url, bodies, cell.concurrency, sizes["seconds"], requests, sizes["warmup"], stack.pids
    )


@dataclass
class Row:
    """A ladder cell beside the two direct cells (the peer) around it, with the goals."""

    cell: Cell
    ladder: ClientLoad
    peer: list[ClientLoad]

    @property
    def peer_ms(self) -> list[float]:
        """The peer cells' latencies, pooled."""
        return [ms for result in self.peer for ms in result.load.latencies_ms]

    def added(self, q: int) -> float:
        """Ladder's percentile minus the peer's (a difference of percentiles, not per request)."""
        return percentile(self.ladder.load.latencies_ms, q) - percentile(self.peer_ms, q)

    @property
    def peer_throughput(self) -> float:
        """The peer cells' mean throughput."""
        return sum(r.load.throughput for r in self.peer) / len(self.peer)

    @property
    def ratio(self) -> float:
        """Throughput through ladder over the peer's."""
        return self.ladder.load.throughput / self.peer_throughput

    def goals(self) -> str:
        """The goals that apply to this row, met or missed."""
        mark = {True: "met", False: "**missed**"}
        goals = f"ratio ≥ {GOAL_RATIO}: {mark[self.ratio >= GOAL_RATIO]}"
        if self.cell == Cell("plain", self.cell.concurrency):
            p50 = mark[self.added(50) <= GOAL_ADDED_P50_MS]
            goals = f"added p50 ≤ {GOAL_ADDED_P50_MS:g} ms: {p50}; {goals}"
        return goals


def rows_of(results: list[tuple[Cell, ClientLoad]]) -> dict[Cell, Row]:
    """Each ladder cell with the direct cells of its concurrency and mode."""
    return {
        cell: Row(cell, r, [p for c, p in results if c == Cell("-", cell.concurrency, cell.stream)])
        for cell, r in results
        if cell.config != "-"
    }


@dataclass
class Report:
    """Everything the section shows."""

    quick: bool
    sizes: dict[str, Any]
    machine: dict[str, str]
    ingest: dict[str, Any] = field(default_factory=dict)
    rss_mib: dict[str, float] = field(default_factory=dict)
    log: dict[str, Any] = field(default_factory=dict)
    results: list[tuple[Cell, ClientLoad]] = field(default_factory=list)


def render_tables(rows: dict[Cell, Row], results: list[tuple[Cell, ClientLoad]]) -> list[str]:
    """Ladder beside the peer with the goals; then every cell with its CPU per request."""
    lines = [
        "| configuration | concurrency | stream | peer p50 / p99 ms | ladder p50 / p99 ms "
        "| added p50 / p99 ms | peer / ladder req/s | ratio | errors peer / ladder | goals |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cell, row in rows.items():
        peer, ours = row.peer_ms, row.ladder.load.latencies_ms
        lines.append(
            f"| {cell.config} | {cell.concurrency} | {'to last byte' if cell.stream else 'no'} "
            f"| {median(peer):.2f} / {percentile(peer, 99):.2f} "
            f"| {median(ours):.2f} / {percentile(ours, 99):.2f} "
            f"| {row.added(50):.2f} / {row.added(99):.2f} "
            f"| {row.peer_throughput:.0f} / {row.ladder.load.throughput:.0f} | {row.ratio:.2f} "
            f"| {sum(len(r.load.errors) for r in row.peer)} / {len(row.ladder.load.errors)} "
            f"| {row.goals()} |"
        )
    lines += [
        "",
        "Every cell in run order; CPU ms per request, warm-up included:",
        "",
        "| # | cell | p50 ms | req/s | ladder | upstream | client | other processes (cores) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for number, (cell, r) in enumerate(results, start=1):
        cpu = r.cpu_ms
        lines.append(
            f"| {number} | `{cell.label}` | {median(r.load.latencies_ms):.2f} "
            f"| {r.load.throughput:.0f} | {cpu['ladder']:.2f} | {cpu['upstream']:.2f} "
            f"| {cpu['client']:.2f} | {r.other_cores:.2f} |"
        )
    return lines


def _cpu_sentence(top: Row, nproc: int) -> str:
    """Whether CPU per request explains the throughput ratio at the highest concurrency."""
    peer = sum(r.cpu_ms["client"] + r.cpu_ms["upstream"] for r in top.peer) / len(top.peer)
    via = sum(top.ladder.cpu_ms.values())
    busy = top.ladder.load.throughput * via / 1000
    sentence = (
        f"- **CPU per request** at c={top.cell.concurrency}: {peer:.2f} ms direct (client "
        f"and upstream), {via:.2f} ms through ladder (client, ladder, upstream), keeping {busy:.1f}"
        f" of {nproc} cores busy. "
    )
    if busy < 0.8 * nproc:
        return sentence + "The cores were not saturated, so CPU alone does not set the ratio."
    apart = abs(top.ratio / (peer / via) - 1)
    return sentence + (
        f"On saturated cores that predicts a ratio of {peer / via:.2f}; measured "
        f"{top.ratio:.2f}, {apart:.0%} apart: "
        + ("ladder's CPU per request sets the ratio." if apart <= 0.2 else "more than CPU does.")
    )


def render_reading(rows: dict[Cell, Row], report: Report) -> list[str]:
    """Sentences whose every claim follows from this run's numbers."""
    concurrencies = list(report.sizes["requests"])
    plain = [rows[Cell("plain", c)] for c in concurrencies]
    rag1, rag_top = rows[Cell("rag", concurrencies[0])], rows[Cell("rag", concurrencies[-1])]
    one, cpu = plain[0], plain[0].ladder.cpu_ms
    others = [r.other_cores for _, r in report.results]
    errors = sum(len(r.load.errors) for _, r in report.results)
    lines = [f"- **{errors} requests failed**; the figures count them." if errors else ""]
    lines += [
        f"- **Added latency.** At concurrency 1 without RAG ladder added {one.added(50):.2f} ms "
        f"at p50 ({median(one.peer_ms):.2f} ms direct, {median(one.ladder.load.latencies_ms):.2f} "
        f"ms through ladder), which {'meets' if one.added(50) <= GOAL_ADDED_P50_MS else 'misses'} "
        f"the ≤ {GOAL_ADDED_P50_MS:g} ms goal. Per request ladder spent {cpu['ladder']:.2f} ms "
        f"of CPU, the upstream {cpu['upstream']:.2f} ms, the client {cpu['client']:.2f} ms.",
        "- **Throughput without RAG**, ladder over the peer: "
        + ", ".join(f"{r.ratio:.2f} at c={r.cell.concurrency}" for r in plain)
        + f"; the ≥ {GOAL_RATIO} goal is met at {sum(r.ratio >= GOAL_RATIO for r in plain)} of "
        f"{len(plain)} concurrencies.",
        _cpu_sentence(plain[-1], int(report.machine["nproc"])),
        f"- **RAG** (query embedding on one torch thread, Chroma vector search, k=4) added "
        f"{rag1.added(50):.2f} ms at p50 at concurrency 1, ladder's CPU "
        f"{rag1.ladder.cpu_ms['ladder']:.2f} ms per request; at c={concurrencies[-1]} ladder "
        f"served {rag_top.ladder.load.throughput:.0f} req/s with RAG (ratio {rag_top.ratio:.2f}).",
        f"- **Noise.** Other processes kept {sum(others) / len(others):.2f} cores busy on average "
        f"and at most {max(others):.2f}, {'below' if max(others) < NOISY_CORES else '**above**'} "
        f"the {NOISY_CORES} this reading calls quiet.",
    ]
    if report.quick:
        lines.append("- **Quick run**: too few requests for p99s or ratios to be relied on.")
    return [line for line in lines if line]


def render_section(report: Report, minutes: float) -> str:
    """The whole Markdown section."""
    rows, log, rss, sizes = rows_of(report.results), report.log, report.rss_mib, report.sizes
    requests = ", ".join(f"{n} at c={c}" for c, n in sizes["requests"].items())
    lines = [
        SECTION_TITLE,
        "",
        f"`python bench/service_overhead.py{' --quick' if report.quick else ''}`, "
        f"{minutes:.1f} min; {harness.machine_line(report.machine)}.",
        "",
        "- **Peer**: tests/support/fake_upstream.py (FastAPI on uvicorn, uvloop and httptools "
        f"when installed, no access log): a fixed completion, or {PIECES} content chunks, a "
        "finish chunk, a usage chunk and `[DONE]`, each its own write.",
        "- **ladder**: `ladder serve`, vllm engine pointed at the peer, one worker, one torch "
        "thread; configurations `plain: {}` and `rag: {retrieval: {collection: docs, k: 4}}`, "
        f"`docs` ingested from corpus/docs ({report.ingest['added']} documents, "
        f"{report.ingest['chunks']} chunks).",
        "- **Client**: httpx on uvloop, a process per cell, a connection per worker; "
        f"{sizes['warmup']} warm-up requests, then {requests}, each cell capped at "
        f"{sizes['seconds']:.0f} s; corpus/qa.jsonl's questions in turn, `max_tokens` 32. Client, "
        "peer and ladder share the cores. \"Added\" is ladder's percentile minus the peer's "
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


def sanity_check(ladder_url: str) -> None:
    """Each configuration returns the peer's answer, and RAG really retrieves."""
    from tests.support.fake_upstream import answer

    for config in ("plain", "rag"):
        body = {"model": config, "messages": [{"role": "user", "content": "What does K3 cost?"}]}
        reply = httpx.post(f"{ladder_url}/v1/chat/completions", json=body, timeout=30)
        reply.raise_for_status()
        content = reply.json()["choices"][0]["message"]["content"]
        if content != answer(PIECES) or (
            config == "rag" and not reply.json()["ladder"]["citations"]
        ):
            raise RuntimeError(f"{config}: unexpected answer {reply.text}")


def run(report: Report, workdir: Path) -> None:
    """Starts the peer, ingests corpus/docs, starts ladder, runs every cell, stops both by PID."""
    ingest = ("corpus/docs", "--collection", "docs")
    with harness.ladder_stack(workdir, CONFIGURATIONS, PIECES, ingest) as stack:
        report.ingest = stack.ingested
        sanity_check(stack.ladder.base)
        report.rss_mib["ready"] = harness.rss_mib(stack.pids["ladder"])
        cells = cell_order(list(report.sizes["requests"]))
        for number, cell in enumerate(cells, start=1):
            result = measure(cell, stack, report.sizes)
            report.results.append((cell, result))
            print(
                f"[{number:2}/{len(cells)}] {cell.label}: "
                f"p50 {median(result.load.latencies_ms):.2f} ms, "
                f"{result.load.throughput:.0f} req/s, {len(result.load.errors)} errors, "
                f"ladder CPU {result.cpu_ms['ladder']:.2f} ms/req",
                *result.load.errors[:3],
                sep="\n      ",
                flush=True,
            )
        report.rss_mib["after"] = harness.rss_mib(stack.pids["ladder"])
    report.log = harness.log_problems(stack.log)


def main() -> None:
    """Runs the benchmark, prints the section and writes it to --out."""
    args = harness.run_options(__doc__.splitlines()[0]).parse_args()
    os.environ.update(harness.BENCH_ENV)
    packages = ("fastapi", "uvicorn", "httpx", "uvloop", "httptools")
    report = Report(args.quick, QUICK if args.quick else FULL, harness.machine_info(packages))
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ladder-overhead-") as workdir:
        run(report, Path(workdir))
    report.machine["load average at end"] = harness.load_average()
    section = render_section(report, (time.monotonic() - started) / 60)
    harness.publish(section, SECTION_TITLE, args)


if __name__ == "__main__":
    main()
