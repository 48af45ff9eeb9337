"""uvicorn's httptools protocol (llhttp, in C) with the bound on a request head that h11 gives.

httptools buffers a request line or header value of any size until it ends; h11 refuses a head
over `h11_max_incomplete_event_size` bytes. This protocol keeps h11's bound, read from the same
uvicorn option, so a head that never ends is refused, like h11 does it (400, connection closed),
once that many bytes of it have arrived, while parsing stays in C.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

DEFAULT_MAX_HEAD_BYTES = 16_384  # h11's own default


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """httptools, refusing a request head once more than the bound has arrived unfinished."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_head_bytes = self.config.h11_max_incomplete_event_size or DEFAULT_MAX_HEAD_BYTES
        self._in_head = True  # the next bytes belong to a request head (not to a body)
        self._head_bytes = 0  # bytes of the unfinished head seen so far
        self._heads_done = 0  # heads parsed on this connection

    def data_received(self, data: bytes) -> None:
        counting, heads = self._in_head, self._heads_done
        super().data_received(data)
        if not counting or self._heads_done != heads or self.transport.is_closing():
            return  # body bytes, or a head that ended: nothing unfinished to count
        self._head_bytes += len(data)
        if self._head_bytes > self.max_head_bytes:
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")

    def on_headers_complete(self) -> None:
        self._in_head, self._head_bytes = False, 0
        self._heads_done += 1
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True
