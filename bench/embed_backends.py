"""Embedding backends side by side: query latency, batch rate, agreement with torch, quality.

Run from the repository root: `python bench/embed_backends.py [--quick] [--out FILE]`. Every
backend runs on one thread in the same process; query timings interleave the backends, so each
sees the same load. The `remote` row is LADDER_EMBEDDINGS_URL's client against
tests/support/embeddings_server.py (the fp32 ONNX export on one thread, another process on
127.0.0.1): what the HTTP round trip and JSON cost over in-process `onnx`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import harness
import numpy as np
from harness import percentile
from ingest_retrieval import BATCH, MODES, QualityRow, load_qa, measure_quality, timed, warm_up

from ingest.embedder import (
    EMBED_BACKENDS,
    EMBEDDER_NAME,
    EmbedBackend,
    Embedder,
    TextEmbedder,
    bundled_embedder_path,
)
from ingest.index import Index, IndexLocation
from ingest.onnx_embedder import exported_model
from ingest.pipeline import IngestJob, IngestOptions
from ingest.remote_embedder import EndpointOptions, RemoteEmbedder
from tests.support.paths import CORPUS_DOCS, REPO
from tests.support.processes import free_port, spawn, stop_process, wait_for_http

SECTION_TITLE = "## Embedding backends"
GOAL_P50_MS = 6.0


@dataclass
class BackendRow:
    """What one backend measured."""

    backend: str
    first_load_s: float
    cached_load_s: float
    query_ms: list[float] = field(default_factory=list)
    chunks_per_s: float = 0.0
    cosine_min: float = 1.0
    cosine_mean: float = 1.0
    quality: list[QualityRow] = field(default_factory=list)


def load(backend: EmbedBackend, cache: Path) -> tuple[Embedder, float, float]:
    """The embedder, the first load's seconds (the ONNX export included) and a cached reload's."""
    _, first = timed(Embedder, threads=1, backend=backend, cache_dir=cache)
    embedder, cached = timed(Embedder, threads=1, backend=backend, cache_dir=cache)
    return embedder, first, cached


@contextmanager
def remote_embedder(cache: Path) -> Iterator[tuple[RemoteEmbedder, float, float]]:
    """The test embeddings server over the fp32 export in cache (started, then stopped by PID),
    its client, the seconds until the server answered and the client's construction seconds."""
    port = free_port()
    server = REPO / "tests" / "support" / "embeddings_server.py"
    onnx = exported_model(bundled_embedder_path(), cache, quantized=False)
    command = [sys.executable, str(server), "--port", str(port), "--onnx", str(onnx)]
    command += ["--model-dir", str(bundled_embedder_path()), "--served-name", EMBEDDER_NAME]
    process: subprocess.Popen[bytes] | None = None
    try:
        process, started = timed(spawn, command, cache / "embeddings-server.log")
        _, waited = timed(wait_for_http, f"http://127.0.0.1:{port}/health", 60, process)
        url = f"http://127.0.0.1:{port}"
        options = EndpointOptions(url=url, model=EMBEDDER_NAME, batch_size=BATCH)
        client, built = timed(RemoteEmbedder, options)
        yield client, started + waited, built
    finally:
        if process is not None:
            stop_process(process)


def interleaved_queries(
    embedders: dict[str, TextEmbedder], rows: dict[str, BackendRow], count: int
) -> None:
    """Each short question embedded by every backend in turn, one text per call."""
    questions = [item["question"] for item in load_qa()]
    for n in range(count):
        for backend, embedder in embedders.items():
            _, seconds = timed(embedder.embed, [questions[n % len(questions)]])
            rows[backend].query_ms.append(seconds * 1000)


def measure_backend(
    row: BackendRow, embedder: TextEmbedder, reference: np.ndarray, texts: list[str], work: Path
) -> None:
    """Batch rate and agreement with torch on the corpus chunks, then quality on qa.jsonl."""
    vectors, seconds = timed(embedder.embed, texts, batch_size=BATCH)
    row.chunks_per_s = len(texts) / seconds
    cosines = np.sum(vectors * reference, axis=1)
    row.cosine_min, row.cosine_mean = float(cosines.min()), float(cosines.mean())
    index = Index(IndexLocation(work / f"chroma-{row.backend}"), embedder)
    IngestJob(index, IngestOptions(embed_batch_size=BATCH)).run(CORPUS_DOCS, "corpus")
    row.quality = [measure_quality(index, "corpus", mode) for mode in MODES]


def corpus_texts(embedder: TextEmbedder, work: Path) -> list[str]:
    """The real corpus's chunk texts, as ingestion cuts them."""
    index = Index(IndexLocation(work / "chroma-texts"), embedder)
    IngestJob(index, IngestOptions(embed_batch_size=BATCH)).run(CORPUS_DOCS, "corpus")
    return [
        stored.text
        for stored in index.vectors("corpus", sorted(index.chunk_metadata("corpus"))).values()
    ]


def render(rows: list[BackendRow], machine: dict[str, str], queries: int) -> str:
    """The section for RESULTS.md."""
    torch_row = rows[0]
    lines = [
        SECTION_TITLE,
        "",
        "`python bench/embed_backends.py`: all-MiniLM-L6-v2, one thread per backend, in one"
        f" process; {queries} short qa.jsonl questions per backend, one text per call, the backends"
        " interleaved query by query. The ONNX exports are built into a fresh temporary cache."
        " `remote`: LADDER_EMBEDDINGS_URL's client and tests/support/embeddings_server.py (the"
        " fp32 export, one thread, another process on 127.0.0.1); its first load is the server's"
        " start until /health answers, its cached load the client's construction.",
        "",
        "| machine | |",
        "|---|---|",
        *(f"| {key} | {value} |" for key, value in machine.items()),
        "",
        "| backend | first load s (export) | cached load s | query p50 ms | query p95 ms"
        f" | goal p50 ≤ {GOAL_P50_MS:g} ms | chunks/s (batch {BATCH})"
        " | cosine to torch min / mean |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        p50 = percentile(row.query_ms, 50)
        goal = "met" if p50 <= GOAL_P50_MS else "**missed**"
        lines.append(
            f"| {row.backend} | {row.first_load_s:.1f} | {row.cached_load_s:.1f} | {p50:.2f}"
            f" | {percentile(row.query_ms, 95):.2f} | {goal}"
            f" | {row.chunks_per_s:.1f} | {row.cosine_min:.4f} / {row.cosine_mean:.4f} |"
        )
    lines += [
        "",
        "Retrieval quality, 106 questions of qa.jsonl, each backend's own index of the real corpus"
        " (the gate in tests/integration/test_embed_backends.py: within 0.01 of torch):",
        "",
        "| backend | mode | hit@1 | hit@5 | MRR@5 | MRR@5 vs torch |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        for quality, reference in zip(row.quality, torch_row.quality, strict=True):
            lines.append(
                f"| {row.backend} | {quality.mode} | {quality.hit1:.3f} | {quality.hit5:.3f}"
                f" | {quality.mrr:.3f} | {quality.mrr - reference.mrr:+.3f} |"
            )
    return "\n".join([*lines, "", *render_reading(rows)]) + "\n"


def render_reading(rows: list[BackendRow]) -> list[str]:
    """What the table means for the default backend."""
    by_backend = {row.backend: row for row in rows}
    torch_p50 = percentile(by_backend["torch"].query_ms, 50)
    onnx, int8, remote = by_backend["onnx"], by_backend["onnx-int8"], by_backend["remote"]
    round_trip_ms = percentile(remote.query_ms, 50) - percentile(onnx.query_ms, 50)
    return [
        "### Reading",
        "",
        f"- **Default `onnx`.** Its vectors are torch's (cosine min {onnx.cosine_min:.4f}), so"
        " collections built by torch, or before backends existed, stay valid; a query costs"
        f" {torch_p50 / percentile(onnx.query_ms, 50):.1f}x less than with torch.",
        f"- **`onnx-int8`** is {torch_p50 / percentile(int8.query_ms, 50):.1f}x faster than torch"
        f" per query and {int8.chunks_per_s / by_backend['torch'].chunks_per_s:.1f}x per ingested"
        " chunk, and holds quality on qa.jsonl, but its vectors move (cosine min"
        f" {int8.cosine_min:.3f}): it needs its own collections, so it is opt-in"
        " (`LADDER_EMBED_BACKEND=onnx-int8`, then re-ingest).",
        "- **Where fp32 ONNX time goes** (measured apart from this script): nearly all in ONNX"
        " Runtime's `session.run`; tokenising a question takes about 0.04 ms and pooling plus"
        " normalisation under 0.1 ms. ONNX Runtime's transformer optimizer (SkipLayerNorm and"
        " BiasGelu fused; attention not fused for this export) saved about 5%, so it is not"
        " applied.",
        f"- **`remote`** runs the same fp32 export as `onnx` in another process, so the"
        f" difference is the HTTP round trip, JSON and a second process to schedule:"
        f" {round_trip_ms:+.2f} ms per query at p50,"
        f" {remote.chunks_per_s / onnx.chunks_per_s:.2f}x `onnx`'s batch rate; its vectors are"
        f" torch's (cosine min {remote.cosine_min:.4f}).",
    ]


def main() -> None:
    """Runs every backend, prints the section and writes it to --out."""
    args = harness.run_options(__doc__.splitlines()[0]).parse_args()
    os.environ.update(harness.BENCH_ENV)
    queries = 60 if args.quick else 400
    machine = harness.machine_info(("torch", "onnxruntime", "sentence-transformers"))
    with tempfile.TemporaryDirectory(prefix="ladder-bench-") as folder:
        work = Path(folder)
        embedders: dict[str, TextEmbedder] = {}
        rows: dict[str, BackendRow] = {}
        for backend in EMBED_BACKENDS:
            print(f"loading {backend}", flush=True)
            local, first, cached = load(backend, work / "cache")
            embedders[backend], rows[backend] = local, BackendRow(backend, first, cached)
            warm_up(local)
        with remote_embedder(work / "cache") as (remote, first, cached):
            embedders["remote"], rows["remote"] = remote, BackendRow("remote", first, cached)
            warm_up(remote)
            interleaved_queries(embedders, rows, queries)
            texts = corpus_texts(embedders["torch"], work)
            reference = embedders["torch"].embed(texts, batch_size=BATCH)
            for name, embedder in embedders.items():
                print(f"measuring {name}", flush=True)
                measure_backend(rows[name], embedder, reference, texts, work)
    machine["load average at end"] = harness.load_average()
    harness.publish(render(list(rows.values()), machine, queries), SECTION_TITLE, args)


if __name__ == "__main__":
    main()
