"""Searches keep the collection's handle instead of looking the collection up in Chroma per query,
and a handle gone stale (the collection dropped and re-created) is looked up again."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.embedder import Embedder
from ingest.index import CollectionNotFound, Index, IndexLocation
from ingest.pipeline import IngestJob


def write_docs(root: Path, documents: dict[str, str]) -> Path:
    root.mkdir(exist_ok=True)
    for old in root.iterdir():
        old.unlink()
    for name, text in documents.items():
        (root / name).write_text(text)
    return root


@pytest.fixture()
def index(tmp_path: Path, embedder: Embedder) -> Index:
    index = Index(IndexLocation(tmp_path / "chroma"), embedder)
    docs = write_docs(tmp_path / "docs", {"kettle.md": "# Kettle\n\nThe K3 kettle boils water.\n"})
    IngestJob(index).run(docs, "docs")
    return index


def test_repeated_searches_look_the_collection_up_once(
    index: Index, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups: list[str] = []
    client = index._client
    real = client.get_collection

    def counted(name: str, **kwargs: object) -> object:
        lookups.append(name)
        return real(name, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(client, "get_collection", counted)
    for mode in ("vector", "hybrid", "vector", "vector"):
        assert index.search("How do I boil water?", "docs", k=1, mode=mode)[0].source == (
            "kettle.md"
        )
    vector_lookups = len(lookups) - 1  # the hybrid search reads the revision afresh
    assert vector_lookups <= 1


def test_a_re_created_collection_is_found_again(index: Index, tmp_path: Path) -> None:
    assert index.search("boil water", "docs", k=1)[0].source == "kettle.md"
    index._client.delete_collection("docs")
    toaster = {"toaster.md": "# Toaster\n\nThe T2 toaster browns bread.\n"}
    IngestJob(index).run(write_docs(tmp_path / "docs", toaster), "docs")
    assert index.search("brown bread", "docs", k=1)[0].source == "toaster.md"
    index._client.delete_collection("docs")
    with pytest.raises(CollectionNotFound):
        index.search("brown bread", "docs", k=1)
