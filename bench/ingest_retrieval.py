"""Ingestion and retrieval benchmark: ingest rate, re-ingest cost, search latency at scale, quality.

Run from the repository root:
`python bench/ingest_retrieval.py [--quick] [--backend B] [--out FILE]`.
The job, the raw embedder it is compared with and the queries all use one embedder, of the backend
LADDER_EMBED_BACKEND names (default onnx) unless --backend says otherwise; queries are not cached.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast

import harness
import numpy as np
from harness import percentile

from ingest.embedder import EMBED_BACKENDS, EmbedBackend, Embedder, TextEmbedder
from ingest.index import CollectionNotFound, Index, IndexLocation, MetadataValue, SearchMode
from ingest.pipeline import IngestJob, IngestOptions, discover
from ingest.readers import ParsedDocument, read_document
from service.settings import Settings
from tests.support.paths import CORPUS_DOCS, QA_FILE

SECTION_TITLE = "## Ingestion and retrieval"
BATCH = 64
UPSERT_BATCH = 5000
MODES: tuple[SearchMode, ...] = ("vector", "hybrid")
GOALS = {"ratio": 0.85, "reingest": 0.05, "vector_p95_ms": 15.0}
Metadata = dict[str, MetadataValue]
T = TypeVar("T")


@dataclass(frozen=True)
class BenchSizes:
    """How big each measurement is."""

    copies: int
    scales: tuple[int, ...]
    queries: int


FULL = BenchSizes(copies=6, scales=(20_000, 100_000), queries=212)
QUICK = BenchSizes(copies=1, scales=(2_000, 5_000), queries=40)


@dataclass
class StoredChunks:
    """A collection read back in full."""

    ids: list[str]
    texts: list[str]
    metadatas: list[Metadata]
    embeddings: np.ndarray

    def embed_texts(self) -> list[str]:
        """The texts the pipeline embedded (Chunk.embed_text), rebuilt from the metadata."""
        return [
            f"{meta['heading_path']}\n{text}" if meta.get("heading_path") else text
            for text, meta in zip(self.texts, self.metadatas, strict=True)
        ]


@dataclass(frozen=True)
class LatencyRow:
    """Search latency over one collection size and mode."""

    size: int
    mode: str
    first_ms: float
    p50_ms: float
    p95_ms: float
    queries: int


@dataclass(frozen=True)
class QualityRow:
    """Retrieval quality of one mode on qa.jsonl."""

    mode: str
    hit1: float
    hit5: float
    mrr: float
    questions: int


@dataclass
class Report:
    """Everything one run measured."""

    quick: bool
    machine: dict[str, str]
    backend: EmbedBackend
    ingest: dict[str, float] = field(default_factory=dict)
    upserts: list[tuple[int, float]] = field(default_factory=list)
    latency: list[LatencyRow] = field(default_factory=list)
    quality: list[QualityRow] = field(default_factory=list)
    rss_mib: dict[str, float] = field(default_factory=dict)


def timed(action: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T, float]:
    """The action's result and its wall time in seconds."""
    started = time.perf_counter()
    result = action(*args, **kwargs)
    return result, time.perf_counter() - started


def render_edition(document: ParsedDocument, edition: int) -> str:
    """The document as Markdown with every body line prefixed, so editions share no chunk text."""
    lines: list[str] = []
    previous: tuple[str, ...] = ()
    for section in document.sections:
        path = section.heading_path
        shared = 0
        while shared < min(len(previous), len(path)) and previous[shared] == path[shared]:
            shared += 1
        for depth in range(shared, len(path)):
            lines += ["", f"{'#' * (depth + 1)} {path[depth]}", ""]
        lines += [
            f"Edition {edition}: {line}" if line.strip() else line
            for line in section.text.split("\n")
        ]
        previous = path
    return "\n".join(lines).strip() + "\n"


def build_editions(source: Path, target: Path, copies: int) -> int:
    """Writes `copies` distinct editions of every corpus document; returns the document count."""
    files, _ = discover(source)
    for relative, path in files:
        document = read_document(path, path.read_bytes())
        for edition in range(1, copies + 1):
            out = target / f"edition-{edition}" / f"{relative}.md"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(render_edition(document, edition), encoding="utf-8")
    return len(files) * copies


def read_collection(index: Index, name: str) -> StoredChunks:
    """Every chunk of a collection with its text, metadata and vector."""
    collection = index.collection(name)
    chunks = StoredChunks([], [], [], np.zeros((0, index.embedder.dimension), dtype=np.float32))
    vectors: list[Any] = []
    while True:
        page = collection.get(
            include=["documents", "metadatas", "embeddings"],
            limit=UPSERT_BATCH,
            offset=len(chunks.ids),
        )
        chunks.ids.extend(page["ids"])
        chunks.texts.extend(text or "" for text in page["documents"] or [])
        chunks.metadatas.extend(cast(Metadata, dict(meta)) for meta in page["metadatas"] or [])
        vectors.extend(page["embeddings"] if page["embeddings"] is not None else [])
        if len(page["ids"]) < UPSERT_BATCH:
            break
    if vectors:
        chunks.embeddings = np.asarray(vectors, dtype=np.float32)
    return chunks


def warm_up(embedder: TextEmbedder) -> None:
    """Loads kernels and allocators, so the first timed batch is not a cold one."""
    questions = [item["question"] for item in load_qa()]
    embedder.embed(questions, batch_size=BATCH)
    embedder.embed(["a warm-up passage about kettles and hubs " * 25] * BATCH, batch_size=BATCH)


def pipeline_calls(folder: Path, chunks: StoredChunks, flush: int) -> list[list[str]]:
    """The texts of each embed call IngestJob makes: documents in order, flushed at >= flush."""
    by_document: dict[str, list[tuple[int, str]]] = {}
    for text, meta in zip(chunks.embed_texts(), chunks.metadatas, strict=True):
        by_document.setdefault(str(meta["doc_id"]), []).append((int(meta["chunk_index"]), text))
    calls: list[list[str]] = [[]]
    for relative, _ in discover(folder)[0]:
        if len(calls[-1]) >= flush:
            calls.append([])
        calls[-1].extend(text for _, text in sorted(by_document.get(relative, [])))
    return calls


def embed_seconds(embedder: TextEmbedder, calls: Sequence[Sequence[str]]) -> float:
    """Wall time of one Embedder.embed call per group of texts."""
    started = time.perf_counter()
    for texts in calls:
        embedder.embed(texts, batch_size=BATCH)
    return time.perf_counter() - started


def measure_ingest(index: Index, folder: Path, documents: int) -> dict[str, float]:
    """Full ingest vs raw embedding of the same chunk texts, then an unchanged re-ingest."""
    options = IngestOptions(embed_batch_size=BATCH)
    full = IngestJob(index, options).run(folder, "editions")
    again = IngestJob(index, options).run(folder, "editions")
    stored = read_collection(index, "editions")
    texts = stored.embed_texts()
    raw_seconds = embed_seconds(index.embedder, [texts])
    calls = pipeline_calls(folder, stored, options.flush_chunks)
    grouped_seconds = embed_seconds(index.embedder, calls)
    ingest_rate = full.embedded / full.seconds
    raw_rate = len(texts) / raw_seconds
    return {
        "documents": documents,
        "added": full.added,
        "chunks": full.chunks,
        "embedded": full.embedded,
        "ingest_seconds": full.seconds,
        "ingest_rate": ingest_rate,
        "raw_texts": len(texts),
        "raw_seconds": raw_seconds,
        "raw_rate": raw_rate,
        "ratio": ingest_rate / raw_rate,
        "grouped_seconds": grouped_seconds,
        "grouped_rate": len(texts) / grouped_seconds,
        "flush_chunks": options.flush_chunks,
        "embed_calls": len(calls),
        "reingest_seconds": again.seconds,
        "reingest_unchanged": again.unchanged,
        "reingest_embedded": again.embedded,
        "reingest_fraction": again.seconds / full.seconds,
    }


def filler_batch(
    rng: np.random.Generator, vocabulary: np.ndarray, start: int, count: int, words: int
) -> tuple[list[str], np.ndarray, list[str], list[Metadata]]:
    """Filler chunks: random unit vectors and random corpus words (not semantically real)."""
    vectors = rng.standard_normal((count, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    picks = rng.integers(0, len(vocabulary), size=(count, words))
    texts = [" ".join(vocabulary[row]) for row in picks]
    numbers = range(start, start + count)
    ids = [f"filler/{n}.md#0@filler" for n in numbers]
    metadatas: list[Metadata] = [
        {
            "source": f"filler/{n}.md",
            "doc_id": f"filler/{n}.md",
            "title": "",
            "heading_path": "",
            "chunk_index": 0,
            "chunk_count": 1,
        }
        for n in numbers
    ]
    return ids, vectors, texts, metadatas


def grow_collection(
    index: Index, name: str, corpus: StoredChunks, target: int, rng: np.random.Generator
) -> float:
    """Upserts the real corpus chunks, then filler up to `target` chunks; returns upsert seconds."""
    try:
        current = index.count(name)
    except CollectionNotFound:
        current = 0
    seconds = 0.0
    if current == 0:
        args = (corpus.ids, corpus.embeddings, corpus.texts, corpus.metadatas)
        seconds += timed(index.upsert, name, *args)[1]
        current = len(corpus.ids)
    vocabulary = np.array(sorted({w for t in corpus.texts for w in re.findall(r"[A-Za-z]+", t)}))
    words = round(float(np.mean([len(text.split()) for text in corpus.texts])))
    while current < target:
        count = min(UPSERT_BATCH, target - current)
        batch = filler_batch(rng, vocabulary, current - len(corpus.ids), count, words)
        _, elapsed = timed(index.upsert, name, *batch)
        seconds += elapsed
        current += count
        print(
            f"  {name}: {current:,}/{target:,} chunks, batch {count / elapsed:,.0f} chunks/s",
            flush=True,
        )
    return seconds


def load_qa() -> list[dict[str, str]]:
    """The questions with their gold source document."""
    return [json.loads(line) for line in QA_FILE.read_text().splitlines() if line.strip()]


def measure_latency(
    size: int, mode: str, query: Callable[[str], object], questions: Sequence[str], count: int
) -> LatencyRow:
    """Per-query wall time; the first query (cold segment, BM25 build) is kept apart."""
    _, first = timed(query, questions[0])
    samples = [timed(query, questions[n % len(questions)])[1] * 1000 for n in range(count)]
    return LatencyRow(
        size, mode, first * 1000, percentile(samples, 50), percentile(samples, 95), count
    )


def measure_scale(
    index: Index, name: str, questions: Sequence[str], count: int
) -> list[LatencyRow]:
    """Embed + top-5 search latency of both modes over the collection as it is now."""
    size = index.count(name)
    return [
        measure_latency(
            size, mode, partial(index.search, collection=name, k=5, mode=mode), questions, count
        )
        for mode in MODES
    ]


def measure_quality(index: Index, name: str, mode: SearchMode) -> QualityRow:
    """hit@1, hit@5 and MRR@5 by gold source document over all of qa.jsonl."""
    ranks: list[int | None] = []
    qa = load_qa()
    for item in qa:
        sources = [p.source for p in index.search(item["question"], name, k=5, mode=mode)]
        ranks.append(sources.index(item["source"]) + 1 if item["source"] in sources else None)
    return QualityRow(
        mode,
        hit1=sum(rank == 1 for rank in ranks) / len(ranks),
        hit5=sum(rank is not None for rank in ranks) / len(ranks),
        mrr=sum(1 / rank for rank in ranks if rank) / len(ranks),
        questions=len(qa),
    )


def verdict(met: bool) -> str:
    """A goal cell's mark."""
    return "met" if met else "**missed**"


def render_machine(report: Report) -> list[str]:
    """The machine table."""
    rows = [f"| {key} | {value} |" for key, value in report.machine.items()]
    return ["| machine | |", "|---|---|", *rows]


def render_ingest(figures: dict[str, float], copies: int) -> list[str]:
    """Tables for measurements 1 and 2."""
    ratio, fraction = figures["ratio"], figures["reingest_fraction"]
    return [
        "### 1. Ingestion rate vs raw embedder (same chunk texts, batch 64)",
        "",
        "| measure | value | goal |",
        "|---|---|---|",
        f"| documents ({figures['documents'] / copies:.0f} corpus docs x {copies} editions) "
        f"| {figures['documents']:.0f} ({figures['added']:.0f} added) | |",
        f"| chunks in collection / embedded by the job | {figures['chunks']:.0f} / "
        f"{figures['embedded']:.0f} | |",
        f"| IngestJob.run (read + chunk, embed, upsert: overlapping stages) "
        f"| {figures['ingest_rate']:.1f} chunks/s "
        f"({figures['ingest_seconds']:.1f} s) | |",
        f"| Embedder.embed on the same {figures['raw_texts']:.0f} texts | "
        f"{figures['raw_rate']:.1f} chunks/s ({figures['raw_seconds']:.1f} s) | |",
        f"| Embedder.embed on the same texts in the job's {figures['embed_calls']:.0f} calls "
        f"(flushed at {figures['flush_chunks']:.0f} chunks) "
        f"| {figures['grouped_rate']:.1f} chunks/s ({figures['grouped_seconds']:.1f} s) | |",
        f"| ratio ingest / raw | {ratio:.3f} | ≥ {GOALS['ratio']} "
        f"({verdict(ratio >= GOALS['ratio'])}) |",
        "",
        "### 2. Unchanged re-ingest",
        "",
        "| measure | value | goal |",
        "|---|---|---|",
        f"| full ingest | {figures['ingest_seconds']:.2f} s | |",
        f"| unchanged re-ingest ({figures['reingest_unchanged']:.0f} docs unchanged, "
        f"{figures['reingest_embedded']:.0f} chunks embedded) "
        f"| {figures['reingest_seconds']:.2f} s | |",
        f"| re-ingest / full | {fraction:.1%} | ≤ {GOALS['reingest']:.0%} "
        f"({verdict(fraction <= GOALS['reingest'])}) |",
    ]


def render_latency(report: Report, corpus_chunks: int) -> list[str]:
    """Table for measurement 3."""
    goal = GOALS["vector_p95_ms"]
    largest = max(row.size for row in report.latency)
    rows = []
    for row in report.latency:
        mark = ""
        if row.mode == "vector" and row.size == largest:
            mark = f"p95 ≤ {goal:.0f} ms ({verdict(row.p95_ms <= goal)})"
        chunks = f"{row.size:,}" if row.size else "-"
        rows.append(
            f"| {chunks} | {row.mode} | {row.first_ms:,.0f} | {row.p50_ms:.1f} | "
            f"{row.p95_ms:.1f} | {mark} |"
        )
    builds = ", ".join(
        f"to {size:,}: {seconds:.1f} s ({added / seconds:,.0f} chunks/s)"
        for (size, seconds), added in zip(report.upserts, upsert_increments(report), strict=True)
    )
    return [
        "### 3. Retrieval latency (embed query + top-5), "
        f"{report.latency[0].queries} queries per row",
        "",
        f"Each collection holds the {corpus_chunks} real corpus chunks plus **filler chunks that "
        "carry random unit vectors** (seeded, dim 384) and random corpus words; only the real "
        "chunks are meaningful. The first query is kept out of the percentiles: it opens the "
        "segment and, for hybrid, builds the BM25 cache over every chunk. "
        f"Collections grown by upserts of {UPSERT_BATCH:,} ({builds}).",
        "",
        "| chunks | mode | first query ms (hybrid: BM25 build) | p50 ms | p95 ms | goal |",
        "|---|---|---|---|---|---|",
        *rows,
    ]


def upsert_increments(report: Report) -> list[int]:
    """How many chunks each growth step added."""
    sizes = [size for size, _ in report.upserts]
    return [size - previous for size, previous in zip(sizes, [0, *sizes[:-1]], strict=True)]


def render_quality(report: Report) -> list[str]:
    """Table for measurement 4."""
    rows = [f"| {r.mode} | {r.hit1:.3f} | {r.hit5:.3f} | {r.mrr:.3f} |" for r in report.quality]
    questions = report.quality[0].questions
    return [
        f"### 4. Retrieval quality, {questions} questions of qa.jsonl, real corpus only",
        "",
        "A hit is a passage whose `source` is the question's gold document; MRR is over the top 5.",
        "",
        "| mode | hit@1 | hit@5 | MRR@5 |",
        "|---|---|---|---|",
        *rows,
    ]


def render_section(report: Report, sizes: BenchSizes, corpus_chunks: int) -> str:
    """The whole Markdown section."""
    run = "quick smoke run (`--quick`)" if report.quick else "full run"
    memory = [f"| {phase} | {mib:,.0f} MiB |" for phase, mib in report.rss_mib.items()]
    lines = [
        SECTION_TITLE,
        "",
        f"`python bench/ingest_retrieval.py`, {run}, embedded Chroma in a temporary folder, "
        f"all-MiniLM-L6-v2 on CPU, one thread, embedding backend `{report.backend}` for the job, "
        "the raw embedder and the queries alike (no query cache).",
        "",
        *render_machine(report),
        "",
        *render_ingest(report.ingest, sizes.copies),
        "",
        *render_latency(report, corpus_chunks),
        "",
        *render_quality(report),
        "",
        "### 5. Memory (peak RSS of the process, `VmHWM`)",
        "",
        "| after | peak RSS |",
        "|---|---|",
        *memory,
        "",
        *render_reading(report),
    ]
    return "\n".join(lines) + "\n"


def render_reading(report: Report) -> list[str]:
    """What the figures say, computed from them (so a re-run cannot leave stale prose)."""
    figures = report.ingest
    embedding = figures["grouped_seconds"] / figures["ingest_seconds"]
    grouped = (
        f"Embedding the same texts in the job's own calls, timed alone afterwards, takes "
        f"{embedding:.0%} of the job's time."
        if embedding <= 1
        else f"Timed alone afterwards, the job's own embed calls took {embedding:.0%} of the "
        "job's time: the machine was busier then, so that row is not comparable."
    )
    by_key = {(row.size, row.mode): row for row in report.latency}
    largest = max(row.size for row in report.latency)
    query_only = by_key.get((0, "query embedding only"))
    vector = by_key[(largest, "vector")]
    one_call = (
        "The single call over every text is faster still because the embedder sorts "
        "one call's texts by length and pads less; the job flushes every "
        f"{figures['flush_chunks']:.0f} chunks (`LADDER_INGEST_FLUSH_CHUNKS`) for that reason."
        if figures["raw_rate"] > figures["grouped_rate"]
        else "Here one call over every text was not faster than the job's own calls "
        f"({figures['embed_calls']:.0f})."
    )
    lines = [
        "### Reading",
        "",
        f"- **Ingest ratio {figures['ratio']:.3f}.** {grouped} Reading and chunking, embedding "
        "and upserts run as overlapping stages: what the job spends beyond its embed calls is "
        "what they could not overlap (the first flush's reading, the last flush's upserts) "
        f"and contention for the cores. {one_call}",
    ]
    if query_only is not None:
        lines.append(
            f"- **Vector p95 at {largest:,}: {vector.p95_ms:.1f} ms.** Embedding the query "
            f"alone takes p50 {query_only.p50_ms:.1f} ms on one thread ({report.backend}); the "
            "Chroma query "
            f"and result assembly add about {vector.p50_ms - query_only.p50_ms:.1f} ms at p50."
        )
    hybrid = by_key.get((largest, "hybrid"))
    if hybrid is not None:
        lines.append(
            f"- **Hybrid.** The first hybrid query after a change rebuilds the in-process BM25 "
            f"cache ({hybrid.first_ms / 1000:.1f} s at {largest:,} chunks); steady state p95 "
            f"{hybrid.p95_ms:.1f} ms. The filler text is drawn from the corpus vocabulary, so "
            "postings lists are long: pessimistic."
        )
    return lines


def run_benchmark(report: Report, sizes: BenchSizes, workdir: Path) -> int:
    """Runs measurements 1-5 into the report; returns the real corpus chunk count."""
    settings = Settings()
    embedder = Embedder(threads=1, backend=report.backend, cache_dir=settings.cache_dir)
    index = Index(IndexLocation(workdir / "chroma"), embedder)
    warm_up(index.embedder)
    documents = build_editions(CORPUS_DOCS, workdir / "editions", sizes.copies)
    print(f"1-2. ingesting {documents} documents", flush=True)
    report.ingest = measure_ingest(index, workdir / "editions", documents)
    report.rss_mib["ingest"] = harness.rss_mib(peak=True)
    print("4. quality on the real corpus", flush=True)
    IngestJob(index, IngestOptions(embed_batch_size=BATCH)).run(CORPUS_DOCS, "corpus")
    report.quality = [measure_quality(index, "corpus", mode) for mode in MODES]
    corpus = read_collection(index, "corpus")
    questions = [item["question"] for item in load_qa()]
    rng = np.random.default_rng(20240601)
    embed_query = lambda q: index.embedder.embed([q])  # noqa: E731
    report.latency.append(
        measure_latency(0, "query embedding only", embed_query, questions, sizes.queries)
    )
    for size in sizes.scales:
        print(f"3. growing the latency collection to {size:,} chunks", flush=True)
        report.upserts.append((size, grow_collection(index, "scale", corpus, size, rng)))
        report.latency += measure_scale(index, "scale", questions, sizes.queries)
        print(*(f"  {row}" for row in report.latency[-len(MODES) :]), sep="\n", flush=True)
        report.rss_mib[f"{size:,} chunks searched"] = harness.rss_mib(peak=True)
    report.machine["load average at end"] = harness.load_average()
    return len(corpus.ids)


def main() -> None:
    """Runs the benchmark, prints the section and writes it to --out."""
    parser = harness.run_options(__doc__.splitlines()[0])
    parser.add_argument(
        "--backend",
        choices=EMBED_BACKENDS,
        default=Settings().embed_backend,
        help="embedding backend (default: LADDER_EMBED_BACKEND, else onnx)",
    )
    args = parser.parse_args()
    os.environ.update(harness.BENCH_ENV)
    sizes = QUICK if args.quick else FULL
    packages = ("torch", "onnxruntime", "chromadb", "sentence-transformers")
    report = Report(args.quick, harness.machine_info(packages), args.backend)
    report.machine["embedding backend"] = args.backend
    with tempfile.TemporaryDirectory(prefix="ladder-bench-") as workdir:
        corpus_chunks = run_benchmark(report, sizes, Path(workdir))
    report.rss_mib["end of run"] = harness.rss_mib(peak=True)
    section = render_section(report, sizes, corpus_chunks)
    harness.publish(section, SECTION_TITLE, args)


if __name__ == "__main__":
    main()
