"""The index's value types and errors, free of Chroma: where it lives, what it raises, which
collection names are valid, a stored vector."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_COLLECTION_NAME = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9._-]{1,510})[a-zA-Z0-9]$")


class IndexUnavailable(Exception):
    """The Chroma database or server cannot be used right now."""


class CollectionNotFound(Exception):
    """The named collection does not exist."""


class InvalidCollectionName(ValueError):
    """A collection name Chroma would refuse."""


class WriteRefused(Exception):
    """Chroma refused the chunks themselves (not the connection): the document is at fault."""


@dataclass(frozen=True)
class IndexLocation:
    """Where the index lives: a Chroma server when url is set, else the embedded database."""

    path: Path
    url: str | None = None


@dataclass(frozen=True)
class StoredVector:
    """A stored chunk's vector and text, for reuse when only its id or metadata changes."""

    embedding: np.ndarray
    text: str


def validate_collection_name(name: str) -> str:
    """Returns the name, or raises InvalidCollectionName saying what Chroma requires."""
    if not _COLLECTION_NAME.match(name) or ".." in name:
        raise InvalidCollectionName(
            f"invalid collection name {name!r}: use 3-512 characters from [a-zA-Z0-9._-],"
            " starting and ending with a letter or digit"
        )
    return name
