"""What a search returns: a retrieved passage and the metadata values a chunk may carry."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

MetadataValue = str | int | float | bool


@dataclass(frozen=True)
class RetrievedPassage:
    """A chunk found for a query; score is its cosine similarity to the query, in [-1, 1]."""

    text: str
    source: str
    chunk_id: str
    score: float
    title: str = ""
    heading_path: str = ""
    metadata: Mapping[str, MetadataValue] = field(default_factory=dict)
