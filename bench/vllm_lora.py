"""vLLM on CPU: base vs adapter latency and throughput; mixed traffic with the leak guard on/off.

Run from the repository root: `python bench/vllm_lora.py [--quick] [--out FILE]`.
Starts vLLM through `service.engines.vllm_server` (what `ladder vllm up` does) with two marker
adapters and `--max-loras 2`, so mixed batches fill every LoRA slot, then drives it directly with
httpx.
Unguarded base requests use `model=base`; guarded ones the zero adapter, as ladder sends them.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import harness
import httpx
from harness import median

from adapters.registry import AdapterRegistry
from service.engines.vllm_server import IDENTITY_ADAPTER, VLLM_REQUIREMENT, local_url, start, stop
from service.settings import Settings

SECTION_TITLE = "## vLLM on CPU: base vs adapter, leak guard"
MARKERS = ("ZEBRA-42", "OKAPI-7")
QUESTIONS = (
    "What colour is the sky on a clear day?",
    "How many days are in a week?",
    "What is the capital of Italy?",
    "Name a fruit.",
    "Say hello.",
    "What do cows drink?",
)


@dataclass(frozen=True)
class Sizes:
    """Requests per cell."""

    sequential: int
    concurrent: int
    concurrency: int
    max_tokens: int


FULL = Sizes(sequential=12, concurrent=96, concurrency=24, max_tokens=32)
QUICK = Sizes(sequential=4, concurrent=24, concurrency=12, max_tokens=16)


@dataclass(frozen=True)
class CellResult:
    """One cell: its latencies, wall time, completion tokens and base answers."""

    name: str
    latencies: list[float]
    wall_s: float
    tokens: int
    base_answers: list[tuple[str, str]]

    @property
    def requests_per_s(self) -> float:
        return len(self.latencies) / self.wall_s

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s

    def p50_ms(self) -> float:
        return median(self.latencies) * 1000


async def _ask(
    client: httpx.AsyncClient, model: str, question: str, max_tokens: int
) -> tuple[float, str, int]:
    """One greedy chat request: (latency, text, completion tokens)."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": question}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,  # every answer is max_tokens long, so throughputs compare
    }
    started = time.perf_counter()
    response = await client.post("/v1/chat/completions", json=body)
    response.raise_for_status()
    payload = response.json()
    text = payload["choices"][0]["message"]["content"] or ""
    return time.perf_counter() - started, text, int(payload["usage"]["completion_tokens"])


async def run_cell(
    url: str, name: str, models: tuple[str, ...], count: int, concurrency: int, max_tokens: int
) -> CellResult:
    """count requests cycling over models and QUESTIONS, at most concurrency at once."""
    jobs = [(models[i % len(models)], QUESTIONS[i % len(QUESTIONS)]) for i in range(count)]
    gate = asyncio.Semaphore(concurrency)

    async def one(model: str, question: str) -> tuple[float, str, int]:
        async with gate:
            return await _ask(client, model, question, max_tokens)

    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        started = time.perf_counter()
        results = await asyncio.gather(*(one(m, q) for m, q in jobs))
        wall = time.perf_counter() - started
    base = {"base", IDENTITY_ADAPTER}
    answers = [(q, text) for (m, q), (_, text, _) in zip(jobs, results, strict=True) if m in base]
    latencies = [latency for latency, _, _ in results]
    return CellResult(name, latencies, wall, sum(r[2] for r in results), answers)


def leaks(cell: CellResult, alone: dict[str, str]) -> tuple[int, int]:
    """(base answers that differ from base alone, of them those carrying an adapter's marker)."""
    changed = [text for question, text in cell.base_answers if text != alone[question]]
    return len(changed), sum(any(m in text for m in MARKERS) for text in changed)


def prepare_adapters(workdir: Path) -> AdapterRegistry:
    """Trains the two marker adapters and registers them as `zebra` and `okapi`."""
    from adapters.base_model import prepare_base_model
    from tests.support.adapters import train_marker_adapter

    model_dir = prepare_base_model(Settings().cache_dir.resolve())
    registry = AdapterRegistry(workdir / "adapters")
    for name, marker in zip(("zebra", "okapi"), MARKERS, strict=True):
        folder = train_marker_adapter(model_dir, workdir / f"train-{name}", marker)
        registry.register(name, folder, {"purpose": "bench"})
    return registry


def run_all(url: str, sizes: Sizes) -> tuple[list[CellResult], dict[str, str]]:
    """Every cell, in one vLLM run."""
    n, c, k = sizes.concurrent, sizes.concurrency, sizes.max_tokens
    plan: list[tuple[str, tuple[str, ...], int, int]] = [
        ("base, sequential", ("base",), sizes.sequential, 1),
        ("adapter, sequential", ("zebra@1",), sizes.sequential, 1),
        ("zero adapter, sequential", (IDENTITY_ADAPTER,), sizes.sequential, 1),
        ("base, concurrent", ("base",), n, c),
        ("zero adapter, concurrent", (IDENTITY_ADAPTER,), n, c),
        ("adapter, concurrent", ("zebra@1",), n, c),
    ]
    off = ("mixed, guard off", ("base", "zebra@1", "okapi@1"), n, c)
    on = ("mixed, guard on", (IDENTITY_ADAPTER, "zebra@1", "okapi@1"), n, c)
    plan += [off, on, on, off]  # alternated, so drift of a shared machine hits both alike
    warm = ("base", "zebra@1", "okapi@1", IDENTITY_ADAPTER)
    asyncio.run(run_cell(url, "warm-up", warm, len(warm), len(warm), k))
    alone_cell = asyncio.run(run_cell(url, "alone", ("base",), len(QUESTIONS), 1, k))
    alone = dict(alone_cell.base_answers)
    cells = [asyncio.run(run_cell(url, name, m, count, conc, k)) for name, m, count, conc in plan]
    return merge(cells), alone


def merge(cells: list[CellResult]) -> list[CellResult]:
    """Cells of the same name as one, in first-seen order."""
    merged: dict[str, CellResult] = {}
    for cell in cells:
        seen = merged.get(cell.name)
        merged[cell.name] = (
            cell
            if seen is None
            else CellResult(
                cell.name,
                seen.latencies + cell.latencies,
                seen.wall_s + cell.wall_s,
                seen.tokens + cell.tokens,
                seen.base_answers + cell.base_answers,
            )
        )
    return list(merged.values())


def render_table(cells: list[CellResult], alone: dict[str, str]) -> list[str]:
    """One row per cell."""
    lines = [
        "| cell | requests | p50 latency (ms) | requests/s | completion tokens/s "
        "| base answers changed (with a marker) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for cell in cells:
        changed, marked = leaks(cell, alone)
        leak = f"{changed}/{len(cell.base_answers)} ({marked})" if cell.base_answers else "-"
        lines.append(
            f"| {cell.name} | {len(cell.latencies)} | {cell.p50_ms():.0f} | "
            f"{cell.requests_per_s:.2f} | {cell.tokens_per_s:.1f} | {leak} |"
        )
    return lines


def render_reading(cells: list[CellResult]) -> list[str]:
    """The ratios that matter, in words."""
    by = {cell.name: cell for cell in cells}
    latency = by["adapter, sequential"].p50_ms() / by["base, sequential"].p50_ms()
    throughput = by["adapter, concurrent"].tokens_per_s / by["base, concurrent"].tokens_per_s
    mixed = by["mixed, guard on"].tokens_per_s / by["mixed, guard off"].tokens_per_s
    alone = by["zero adapter, concurrent"].tokens_per_s / by["base, concurrent"].tokens_per_s
    return [
        f"- Adapter vs base: p50 latency alone x{latency:.2f}; concurrent throughput "
        f"x{throughput:.2f}: on this build any LoRA in a batch costs the whole batch.",
        f"- Leak guard, mixed traffic: throughput x{mixed:.2f} of unguarded (adapters are in the "
        "batch anyway). Leak guard, base-only traffic: the zero adapter runs the LoRA path, "
        f"throughput x{alone:.2f} of plain base. That is the guard's real price; it is on by "
        "default (`LADDER_VLLM_LEAK_GUARD`) because ladder must never answer a base request "
        "with an adapter.",
        "- Guard off, vLLM's CPU LoRA kernels give adapter-less tokens (index -1) the last LoRA "
        "slot's weights: a base request batched with adapter requests gets an adapter's answer "
        "once every slot is taken. The guard sends base requests through a zero adapter "
        f"(`{IDENTITY_ADAPTER}`, every lora_B zero), so no token is adapter-less.",
    ]


def render(
    cells: list[CellResult], alone: dict[str, str], sizes: Sizes, machine: dict[str, str]
) -> str:
    """The RESULTS.md section."""
    header = (
        f"`python bench/vllm_lora.py`; {harness.machine_line(machine)}; "
        f"{VLLM_REQUIREMENT} (CPU build, float32, --max-loras 2). "
        "SmolLM2-135M-Instruct, greedy, max_tokens "
        f"{sizes.max_tokens}; two rank-8 marker adapters; concurrent cells send "
        f"{sizes.concurrent} requests, {sizes.concurrency} at once (mixed cells: twice, "
        "alternated); every answer runs to max_tokens (`ignore_eos`)."
    )
    lines = [SECTION_TITLE, "", header, "", *render_table(cells, alone), ""]
    return "\n".join([*lines, *render_reading(cells), ""])


def main() -> None:
    """Starts vLLM with two adapters, runs every cell, writes the section."""
    args = harness.run_options(__doc__.splitlines()[0]).parse_args()
    os.environ.update(harness.BENCH_ENV)
    sizes = QUICK if args.quick else FULL
    machine = harness.machine_info()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ladder-vllm-bench-") as folder:
        workdir = Path(folder)
        registry = prepare_adapters(workdir)
        settings = Settings(
            data_dir=workdir,
            cache_dir_override=Settings().cache_dir.resolve(),
            adapters_dir=registry.root,
            vllm_port=harness.free_port(),
            vllm_max_loras=2,
        )
        start(settings, print)
        try:
            cells, alone = run_all(local_url(settings), sizes)
        finally:
            stop(settings, print)
    machine["took"] = f"{time.monotonic() - started:.0f} s"
    machine["load average at end"] = harness.load_average()
    harness.publish(render(cells, alone, sizes, machine), SECTION_TITLE, args)


if __name__ == "__main__":
    main()
