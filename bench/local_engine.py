"""Times the local engine: time to first token and tokens/s, at 1 and 2 torch threads.

Run: HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/local_engine.py
Each thread count runs in its own process, so torch's process-wide thread setting applies cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from results_file import write_section  # noqa: E402

from adapters.base_model import prepare_base_model  # noqa: E402
from service.engines.base import ChatMessage, GenerationRequest, SamplingParams  # noqa: E402

if TYPE_CHECKING:
    from service.engines.local import LocalEngine

RESULTS = REPO_ROOT / "bench" / "RESULTS.md"
SECTION_TITLE = "## Local engine: SmolLM2-135M-Instruct, float32, CPU"
NEW_TOKENS = 64
PASSAGE = (
    "The lighthouse at the end of the northern pier was built in 1871 from granite quarried on "
    "the island. Its lamp first burned whale oil, then paraffin, and was electrified in 1936. "
    "Keepers lived in the cottage beside it with their families and logged every ship, every "
    "storm and every change of the wind. In 1962 a storm tore away the lantern room's glass, and "
    "the keeper kept the light burning with a hand lamp until morning. The station was automated "
    "in 1989; the last keeper moved to the village and became the harbour master. Today the "
    "cottage is a small museum with the logbooks, a fog horn and a model of the original lens. "
    "Visitors climb the 114 steps on summer weekends, and the light still flashes white every ten "
    "seconds, visible for eighteen nautical miles."
)
QUESTION = "Read this passage, then retell the history of the lighthouse in detail:\n\n"


@dataclass(frozen=True)
class ThreadResult:
    """Medians for one torch thread count."""

    threads: int
    prompt_tokens: int
    completion_tokens: list[int]
    ttft_s: float
    decode_tps: float
    total_s: float


def bench_request() -> GenerationRequest:
    """A prompt of about 200 tokens, answered greedily with up to NEW_TOKENS tokens."""
    return GenerationRequest(
        messages=(ChatMessage("user", QUESTION + PASSAGE),),
        sampling=SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS),
    )


async def measure(threads: int, runs: int, cache_dir: Path) -> ThreadResult:
    """Times runs generations after one warm-up, in this process."""
    from service.engines.local import LocalEngine

    engine = LocalEngine(prepare_base_model(cache_dir), threads=threads)
    await engine.wait_until_loaded()
    request = bench_request()
    samples = [await one_generation(engine, request) for _ in range(runs + 1)][1:]
    await engine.aclose()
    return ThreadResult(
        threads=threads,
        prompt_tokens=engine.count_tokens(request.messages),
        completion_tokens=[int(sample["tokens"]) for sample in samples],
        ttft_s=statistics.median(sample["ttft_s"] for sample in samples),
        decode_tps=statistics.median(sample["decode_tps"] for sample in samples),
        total_s=statistics.median(sample["total_s"] for sample in samples),
    )


async def one_generation(engine: LocalEngine, request: GenerationRequest) -> dict[str, float]:
    """Streams one answer; TTFT is the first non-empty text, decode speed what follows."""
    started = time.perf_counter()
    first: float | None = None
    tokens = 0
    async for delta in engine.stream(request):
        if first is None and delta.text:
            first = time.perf_counter()
        if delta.usage is not None:
            tokens = delta.usage.completion_tokens
    ended = time.perf_counter()
    first = first or ended
    return {
        "tokens": tokens,
        "ttft_s": first - started,
        "decode_tps": (tokens - 1) / (ended - first) if ended > first else 0.0,
        "total_s": ended - started,
    }


def run_in_subprocess(threads: int, runs: int, cache_dir: Path) -> ThreadResult:
    """Runs measure() in a fresh interpreter pinned to a thread count."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    env["OMP_NUM_THREADS"] = str(threads)
    command = [sys.executable, __file__, "--worker", "--threads", str(threads)]
    command += ["--runs", str(runs), "--cache-dir", str(cache_dir)]
    output = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    return ThreadResult(**json.loads(output.strip().splitlines()[-1]))


def machine_description() -> str:
    """nproc, CPU model, load and library versions, for the results header."""
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    import torch
    import transformers

    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return (
        f"- Date: {datetime.date.today().isoformat()}\n- nproc: {os.cpu_count()}\n"
        f"- CPU: {cpu}\n- Load average at start: {load}\n"
        f"- Python {platform.python_version()}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}\n"
    )


def markdown(results: list[ThreadResult], runs: int, machine: str) -> str:
    """The results section."""
    rows = [
        f"| {r.threads} | {r.ttft_s * 1000:.0f} | {r.decode_tps:.1f} | {r.total_s:.2f} "
        f"| {', '.join(map(str, r.completion_tokens))} |"
        for r in results
    ]
    return (
        f"{SECTION_TITLE}\n\n"
        f"{machine}- Prompt: {results[0].prompt_tokens} tokens (chat template included); "
        f"greedy, max {NEW_TOKENS} new tokens; {runs} runs after one warm-up, medians.\n\n"
        "| torch threads | time to first token (ms) | decode tokens/s | whole answer (s) "
        "| completion tokens per run |\n|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )


def main() -> None:
    """Parses arguments; the parent spawns one worker per thread count and writes the results."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cache-dir", type=Path, default=REPO_ROOT / ".ladder" / "cache")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(asdict(asyncio.run(measure(args.threads, args.runs, args.cache_dir)))))
        return
    prepare_base_model(args.cache_dir, print)
    machine = machine_description()
    results = [run_in_subprocess(threads, args.runs, args.cache_dir) for threads in (1, 2)]
    section = markdown(results, args.runs, machine)
    write_section(RESULTS, SECTION_TITLE, section)
    print(section)


if __name__ == "__main__":
    main()
