"""The one module that knows Chroma collections and the embedder: writes chunks, searches them."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np

from ingest.bm25 import BM25Index, reciprocal_rank_fusion
from ingest.embedder import Embedder, TextEmbedder, incompatibility
from ingest.index_types import CollectionNotFound as CollectionNotFound
from ingest.index_types import IndexLocation as IndexLocation
from ingest.index_types import IndexUnavailable as IndexUnavailable
from ingest.index_types import InvalidCollectionName as InvalidCollectionName
from ingest.index_types import StoredVector as StoredVector
from ingest.index_types import WriteRefused as WriteRefused
from ingest.index_types import validate_collection_name as validate_collection_name
from ingest.passage import MetadataValue, RetrievedPassage

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection

SearchMode = Literal["vector", "hybrid"]
T = TypeVar("T")
_PAGE = 5000


@contextmanager
def _refusals() -> Iterator[None]:
    """Translates Chroma's refusal of the data (checked before anything is written)."""
    from chromadb.errors import InvalidArgumentError

    try:
        yield
    except (InvalidArgumentError, ValueError, TypeError) as error:
        raise WriteRefused(f"Chroma refused the chunks: {error}") from error


@contextmanager
def _chroma_errors(collection: str | None = None) -> Iterator[None]:
    """Translates chromadb and transport errors into the index's own."""
    import httpx
    from chromadb.errors import ChromaError, NotFoundError

    try:
        yield
    except NotFoundError as error:
        raise CollectionNotFound(f"collection {collection!r} does not exist") from error
    except (httpx.HTTPError, ConnectionError, TimeoutError) as error:
        raise IndexUnavailable(f"Chroma cannot be reached: {error}") from error
    except ChromaError as error:
        if "does not exist" in str(error):
            raise CollectionNotFound(f"collection {collection!r} does not exist") from error
        raise IndexUnavailable(f"Chroma failed: {error}") from error


def _connect(location: IndexLocation) -> ClientAPI:
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    with _chroma_errors():
        if location.url is None:
            location.path.mkdir(parents=True, exist_ok=True)
            return chromadb.PersistentClient(path=str(location.path), settings=chroma_settings)
        from urllib.parse import urlparse

        parsed = urlparse(location.url)
        return chromadb.HttpClient(
            host=parsed.hostname or "127.0.0.1",
            port=parsed.port or (443 if parsed.scheme == "https" else 8000),
            ssl=parsed.scheme == "https",
            settings=chroma_settings,
        )


def _where(filters: Mapping[str, MetadataValue] | None) -> dict[str, Any] | None:
    if not filters:
        return None
    clauses = [{key: {"$eq": value}} for key, value in filters.items()]
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


@dataclass
class _LexicalCache:
    key: tuple[str, int]
    ids: list[str]
    texts: list[str]
    metadatas: list[Mapping[str, MetadataValue]]
    bm25: BM25Index


class Index:
    """Chroma collections of embedded chunks: the writes ingestion needs and the search."""

    def __init__(self, location: IndexLocation, embedder: TextEmbedder | None = None) -> None:
        self.location = location
        self._client = _connect(location)
        self._embedder = embedder
        self._lexical: dict[str, _LexicalCache] = {}
        self._lexical_lock = threading.Lock()
        self._max_batch_size: int | None = None
        self._searched: dict[str, Collection] = {}

    @property
    def embedder(self) -> TextEmbedder:
        """The embedder, loaded on first use."""
        if self._embedder is None:
            self._embedder = Embedder()
        return self._embedder

    def heartbeat(self) -> bool:
        """Tells whether Chroma answers."""
        try:
            with _chroma_errors():
                self._client.heartbeat()
        except IndexUnavailable:
            return False
        return True

    def collection_names(self) -> list[str]:
        """The names of every collection."""
        with _chroma_errors():
            return sorted(collection.name for collection in self._client.list_collections())

    def collection(self, name: str, *, create: bool = False) -> Collection:
        """A collection that never embeds by itself: vectors are always passed in."""
        validate_collection_name(name)
        with _chroma_errors(name):
            if not create:
                found = self._client.get_collection(name, embedding_function=None)
            else:
                found = self._client.get_or_create_collection(
                    name,
                    configuration={"hnsw": {"space": "cosine"}},
                    metadata={
                        "embedder": self.embedder.name,
                        "embed_backend": self.embedder.backend,
                    },
                    embedding_function=None,
                )
        refused = incompatibility(found.metadata or {}, self._embedder)
        if refused is not None:
            raise IndexUnavailable(f"collection {name!r} {refused}")
        return found

    def max_batch_size(self) -> int:
        """The most records Chroma takes in one write (embedded: SQLite's variable limit)."""
        if self._max_batch_size is None:
            with _chroma_errors():
                self._max_batch_size = max(1, int(self._client.get_max_batch_size()))
        return self._max_batch_size

    def _batches(self, count: int) -> Iterator[slice]:
        step = self.max_batch_size()
        return (slice(start, start + step) for start in range(0, count, step))

    def count(self, name: str) -> int:
        """How many chunks the collection holds."""
        with _chroma_errors(name):
            return int(self.collection(name).count())

    def chunk_metadata(self, name: str) -> dict[str, Mapping[str, MetadataValue]]:
        """Every chunk id of the collection with its metadata."""
        collection = self.collection(name)
        found: dict[str, Mapping[str, MetadataValue]] = {}
        with _chroma_errors(name):
            while True:
                page = collection.get(include=["metadatas"], limit=_PAGE, offset=len(found))
                found.update(zip(page["ids"], _metadatas(page), strict=True))
                if len(page["ids"]) < _PAGE:
                    return found

    def vectors(self, name: str, ids: Sequence[str]) -> dict[str, StoredVector]:
        """Stored vectors and texts of these chunks (missing ids are left out)."""
        if not ids:
            return {}
        with _chroma_errors(name):
            page = self.collection(name).get(ids=list(ids), include=["embeddings", "documents"])
        embeddings = page["embeddings"] if page["embeddings"] is not None else []
        return {
            chunk: StoredVector(np.asarray(vector, dtype=np.float32), text)
            for chunk, vector, text in zip(
                page["ids"], embeddings, page["documents"] or [], strict=True
            )
        }

    def upsert(
        self,
        name: str,
        ids: Sequence[str],
        embeddings: np.ndarray,
        texts: Sequence[str],
        metadatas: Sequence[Mapping[str, MetadataValue]],
    ) -> None:
        """Writes chunks with their vectors, in batches Chroma accepts; an existing id is
        overwritten. Raises WriteRefused when Chroma refuses the chunks themselves."""
        if not ids:
            return
        collection = self.collection(name, create=True)
        for batch in self._batches(len(ids)):
            with _chroma_errors(name), _refusals():
                collection.upsert(
                    ids=list(ids[batch]),
                    embeddings=embeddings[batch],
                    documents=list(texts[batch]),
                    metadatas=[dict(metadata) for metadata in metadatas[batch]],
                )

    def delete(self, name: str, ids: Sequence[str]) -> None:
        """Deletes chunks by id, in batches Chroma accepts."""
        if not ids:
            return
        collection = self.collection(name)
        for batch in self._batches(len(ids)):
            with _chroma_errors(name):
                collection.delete(ids=list(ids[batch]))

    def search(
        self,
        query: str,
        collection: str,
        k: int = 5,
        filters: Mapping[str, MetadataValue] | None = None,
        mode: SearchMode = "vector",
    ) -> list[RetrievedPassage]:
        """The k passages closest to the query; hybrid fuses BM25 and vector ranks (RRF)."""
        vector = self.embedder.embed([query])[0]
        if mode == "vector":
            return self._vector_search(vector, collection, k, filters)
        pool = max(4 * k, 20)
        dense = self._vector_search(vector, collection, pool, filters)
        lexical_ids = self._lexical_search(query, collection, pool, filters)
        fused = reciprocal_rank_fusion([[p.chunk_id for p in dense], lexical_ids])
        best = sorted(fused, key=lambda chunk: -fused[chunk])[:k]
        known = {passage.chunk_id: passage for passage in dense}
        missing = [chunk for chunk in best if chunk not in known]
        known.update(self._passages_by_id(vector, collection, missing))
        return [known[chunk] for chunk in best if chunk in known]

    def _vector_search(
        self,
        vector: np.ndarray,
        collection: str,
        k: int,
        filters: Mapping[str, MetadataValue] | None,
    ) -> list[RetrievedPassage]:
        result = self._read(
            collection,
            lambda handle: handle.query(
                query_embeddings=vector[None, :],
                n_results=k,
                where=_where(filters),
                include=["documents", "metadatas", "distances"],
            ),
        )
        rows = zip(
            result["ids"][0],
            (result["documents"] or [[]])[0],
            (result["metadatas"] or [[]])[0],
            (result["distances"] or [[]])[0],
            strict=True,
        )
        return [_passage(chunk, text, meta, 1.0 - distance) for chunk, text, meta, distance in rows]

    def _passages_by_id(
        self, vector: np.ndarray, collection: str, ids: Sequence[str]
    ) -> dict[str, RetrievedPassage]:
        if not ids:
            return {}
        page = self._read(
            collection,
            lambda handle: handle.get(
                ids=list(ids), include=["documents", "metadatas", "embeddings"]
            ),
        )
        rows = zip(
            page["ids"],
            page["documents"] or [],
            _metadatas(page),
            page["embeddings"] if page["embeddings"] is not None else [],
            strict=True,
        )
        return {
            chunk: _passage(chunk, text, meta, float(np.dot(vector, np.asarray(stored))))
            for chunk, text, meta, stored in rows
        }

    def _read(self, name: str, operation: Callable[[Collection], T]) -> T:
        """Runs a search's read on the collection's handle, kept between searches (looking it
        up cost a Chroma round trip per query); a stale one (the collection was dropped or
        re-created) is looked up again, with the embedder check."""
        handle = self._searched.get(name)
        if handle is not None:
            try:
                with _chroma_errors(name):
                    return operation(handle)
            except CollectionNotFound:
                self._searched.pop(name, None)
        handle = self._searched[name] = self.collection(name)
        with _chroma_errors(name):
            return operation(handle)

    def _lexical_search(
        self, query: str, collection: str, k: int, filters: Mapping[str, MetadataValue] | None
    ) -> list[str]:
        cache = self._lexical_cache(collection)
        allowed = None
        if filters:
            allowed = np.array(
                [
                    all(meta.get(key) == value for key, value in filters.items())
                    for meta in cache.metadatas
                ],
                dtype=bool,
            )
        return [cache.ids[position] for position, _ in cache.bm25.top(query, k, allowed)]

    def _lexical_cache(self, collection: str) -> _LexicalCache:
        """BM25 over the collection, rebuilt when its revision or size changes."""
        handle = self.collection(collection)
        with _chroma_errors(collection):
            key = (str((handle.metadata or {}).get("revision", "")), int(handle.count()))
        with self._lexical_lock:
            cached = self._lexical.get(collection)
            if cached is not None and cached.key == key:
                return cached
            ids: list[str] = []
            texts: list[str] = []
            metadatas: list[Mapping[str, MetadataValue]] = []
            with _chroma_errors(collection):
                while True:
                    page = handle.get(
                        include=["documents", "metadatas"], limit=_PAGE, offset=len(ids)
                    )
                    ids.extend(page["ids"])
                    metadatas.extend(_metadatas(page))
                    for text, meta in zip(page["documents"] or [], _metadatas(page), strict=True):
                        texts.append(
                            f"{meta.get('title', '')} {meta.get('heading_path', '')} {text}"
                        )
                    if len(page["ids"]) < _PAGE:
                        break
            cached = _LexicalCache(key, ids, texts, metadatas, BM25Index(texts))
            self._lexical[collection] = cached
            return cached

    def mark_revision(self, name: str, revision: str) -> None:
        """Records a new revision on the collection, so lexical caches elsewhere rebuild."""
        collection = self.collection(name, create=True)
        with _chroma_errors(name):
            collection.modify(metadata={**(collection.metadata or {}), "revision": revision})


def _metadatas(page: Any) -> list[Mapping[str, MetadataValue]]:
    """A Chroma page's metadatas; ladder writes scalar values only."""
    return list(page["metadatas"] or [])


def _passage(
    chunk: str, text: str | None, metadata: Mapping[str, Any] | None, score: float
) -> RetrievedPassage:
    meta = dict(metadata or {})
    return RetrievedPassage(
        text=text or "",
        source=str(meta.get("source", "")),
        chunk_id=chunk,
        score=max(-1.0, min(1.0, float(score))),
        title=str(meta.get("title", "")),
        heading_path=str(meta.get("heading_path", "")),
        metadata=meta,
    )
