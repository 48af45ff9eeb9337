"""Stages of a job run in threads joined by bounded queues, so each works on the next item while
the stage after it works on this one.

The first error in any stage reaches the caller (through every later stage, in order) and stops
the others; leaving the `with` block, for any reason, stops and joins every thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

T = TypeVar("T")

# How often a stage waiting on a full or empty queue looks whether the run has stopped.
_POLL_S = 0.05


class StagesStopped(Exception):
    """The run stopped while a stage was waiting: another stage failed, or the caller left."""


class _End:
    """Put after a stage's last item."""


@dataclass(frozen=True)
class _Failed:
    """Put instead of the next item when a stage raised."""

    error: BaseException


class Stages:
    """Threads that each iterate one stage; use as a context manager."""

    def __init__(self) -> None:
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> Stages:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stopped.set()
        for thread in self._threads:
            thread.join()

    def ahead(self, items: Iterable[T], depth: int, name: str) -> Iterator[T]:
        """Iterates `items` in a thread of its own, at most `depth` items ahead of the consumer."""
        channel: queue.Queue[T | _End | _Failed] = queue.Queue(maxsize=max(1, depth))
        thread = threading.Thread(
            target=self._produce, args=(items, channel), name=f"ingest-{name}", daemon=True
        )
        self._threads.append(thread)
        thread.start()
        return self._consume(channel)

    def _produce(self, items: Iterable[T], channel: queue.Queue[T | _End | _Failed]) -> None:
        try:
            for item in items:
                self._put(channel, item)
            self._put(channel, _End())
        except StagesStopped:
            return
        except BaseException as error:  # handed to the consumer, which raises it
            try:
                self._put(channel, _Failed(error))
            except StagesStopped:
                return

    def _put(self, channel: queue.Queue[T | _End | _Failed], item: T | _End | _Failed) -> None:
        while True:
            if self._stopped.is_set():
                raise StagesStopped
            try:
                channel.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def _consume(self, channel: queue.Queue[T | _End | _Failed]) -> Iterator[T]:
        while True:
            if self._stopped.is_set():
                raise StagesStopped
            try:
                item = channel.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if isinstance(item, _End):
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
