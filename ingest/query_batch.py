"""Concurrent one-text embeddings gathered into batches, with no waiting window.

While one batch embeds, texts that arrive queue; when it is done, the first queued caller takes
over and embeds everything queued (up to `max_batch`) in one call. A lone caller embeds at once,
so a query at concurrency 1 pays nothing; under load one model call serves many queries.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence

import numpy as np


class _Request:
    """One caller's text and, once its batch ran, its vector or the batch's error."""

    __slots__ = ("error", "leads", "ready", "text", "vector")

    def __init__(self, text: str) -> None:
        self.text = text
        self.ready = threading.Event()
        self.leads = False
        self.vector: np.ndarray | None = None
        self.error: BaseException | None = None

    def result(self) -> np.ndarray:
        if self.error is not None:
            raise self.error
        assert self.vector is not None
        return self.vector


class QueryBatcher:
    """Embeds one text per call, batching the calls that overlap (thread-safe)."""

    def __init__(self, embed: Callable[[Sequence[str]], np.ndarray], max_batch: int) -> None:
        self._embed = embed
        self.max_batch = max(1, max_batch)
        self._queued: deque[_Request] = deque()
        self._busy = False
        self._lock = threading.Lock()

    @property
    def queued(self) -> int:
        """How many calls wait for the batch that runs now."""
        with self._lock:
            return len(self._queued)

    def vector(self, text: str) -> np.ndarray:
        """text's vector, embedded alone or in a batch with texts that arrived meanwhile."""
        request = _Request(text)
        with self._lock:
            if self._busy:
                self._queued.append(request)
            else:
                self._busy = True
                request.leads = True
        if not request.leads:
            request.ready.wait()
        if request.leads:
            self._run(request)
        return request.result()

    def _run(self, leader: _Request) -> None:
        """Embeds leader's text with the queued ones, then hands the queue to its next caller."""
        with self._lock:
            batch = [leader]
            while self._queued and len(batch) < self.max_batch:
                batch.append(self._queued.popleft())
        try:
            vectors = self._embed([request.text for request in batch])
            for request, vector in zip(batch, vectors, strict=True):
                request.vector = vector
        except BaseException as error:  # every caller in the batch sees it, then the next runs
            for request in batch:
                request.error = error
        finally:
            with self._lock:
                following = self._queued.popleft() if self._queued else None
                self._busy = following is not None
            if following is not None:
                following.leads = True
                following.ready.set()
            for request in batch[1:]:
                request.ready.set()
