"""Times the local engine: time to first token and tokens/s, at 1 and 2 torch threads.

Run from the repository root: `python bench/local_engine.py [--quick] [--runs 5] [--out FILE]`.
Each thread count runs in its own process, so torch's process-wide thread setting applies cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import harness
from harness import median

from adapters.base_model import prepare_base_model
from service.engines.base import ChatMessage, GenerationRequest, SamplingParams

if TYPE_CHECKING:
    from service.engines.local import LocalEngine

SECTION_TITLE = "## Local engine: SmolLM2-135M-Instruct, float32, CPU"
FULL = {"runs": 5, "new_tokens": 64}
QUICK = {"runs": 1, "new_tokens": 16}
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


def bench_request(new_tokens: int) -> GenerationRequest:
    """A prompt of about 200 tokens, answered greedily with up to `new_tokens` tokens."""
    return GenerationRequest(
        messages=(ChatMessage("user", QUESTION + PASSAGE),),
        sampling=SamplingParams(temperature=0.0, max_tokens=new_tokens),
    )


async def measure(threads: int, sizes: dict[str, int], cache_dir: Path) -> ThreadResult:
    """Times `runs` generations after one warm-up, in this process."""
    from service.engines.local import LocalEngine

    engine = LocalEngine(prepare_base_model(cache_dir), threads=threads)
    await engine.wait_until_loaded()
    request = bench_request(sizes["new_tokens"])
    runs = sizes["runs"]
    samples = [await one_generation(engine, request) for _ in range(runs + 1)][1:]
    await engine.aclose()
    return ThreadResult(
        threads=threads,
        prompt_tokens=engine.count_tokens(request.messages),
        completion_tokens=[int(sample["tokens"]) for sample in samples],
        ttft_s=median([sample["ttft_s"] for sample in samples]),
        decode_tps=median([sample["decode_tps"] for sample in samples]),
        total_s=median([sample["total_s"] for sample in samples]),
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


def run_in_subprocess(threads: int, sizes: dict[str, int], cache_dir: Path) -> ThreadResult:
    """Runs measure() in a fresh interpreter pinned to a thread count."""
    env = os.environ | harness.BENCH_ENV | {"OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, __file__, "--worker", "--threads", str(threads)]
    command += ["--sizes", json.dumps(sizes), "--cache-dir", str(cache_dir)]
    output = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    return ThreadResult(**json.loads(output.strip().splitlines()[-1]))


def markdown(results: list[ThreadResult], sizes: dict[str, int], machine: dict[str, str]) -> str:
    """The results section."""
    rows = [
        f"| {r.threads} | {r.ttft_s * 1000:.0f} | {r.decode_tps:.1f} | {r.total_s:.2f} "
        f"| {', '.join(map(str, r.completion_tokens))} |"
        for r in results
    ]
    return (
        f"{SECTION_TITLE}\n\n"
        f"`python bench/local_engine.py`; {harness.machine_line(machine)}.\n\n"
        f"Prompt: {results[0].prompt_tokens} tokens (chat template included); greedy, max "
        f"{sizes['new_tokens']} new tokens; {sizes['runs']} runs after one warm-up, medians.\n\n"
        "| torch threads | time to first token (ms) | decode tokens/s | whole answer (s) "
        "| completion tokens per run |\n|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )


def main() -> None:
    """Parses arguments; the parent spawns one worker per thread count and writes the results."""
    parser = harness.run_options(__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, help=f"default {FULL['runs']}; {QUICK['runs']} quick")
    parser.add_argument("--cache-dir", type=Path, default=harness.REPO / ".ladder" / "cache")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--sizes", type=json.loads, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = asyncio.run(measure(args.threads, args.sizes, args.cache_dir))
        print(json.dumps(asdict(result)))
        return
    sizes = (QUICK if args.quick else FULL) | ({"runs": args.runs} if args.runs else {})
    prepare_base_model(args.cache_dir, print)
    machine = harness.machine_info(("torch", "transformers"))
    results = [run_in_subprocess(threads, sizes, args.cache_dir) for threads in (1, 2)]
    machine["load average at end"] = harness.load_average()
    harness.publish(markdown(results, sizes, machine), SECTION_TITLE, args)


if __name__ == "__main__":
    main()
