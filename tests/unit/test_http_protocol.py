"""The httptools protocol keeps h11's bound on a request head and serves bodies of any size."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from service.cli.http_protocol import BoundedHttpToolsProtocol
from tests.support.processes import free_port

BOUND = 4096


async def body_length(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with the length of the request body it read."""
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(size).encode()})


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    config = uvicorn.Config(
        body_length,
        host="127.0.0.1",
        port=free_port(),
        http=BoundedHttpToolsProtocol,
        h11_max_incomplete_event_size=BOUND,
        lifespan="off",
        log_level="error",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield config.port
    server.should_exit = True
    thread.join(10)


def _answers(port: int, *sends: bytes) -> list[bytes]:
    """Sends each part in turn on one connection; every response head's status line."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for part in sends:
            try:
                sock.sendall(part)
            except OSError:
                break  # the server closed the connection on us
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except (TimeoutError, ConnectionResetError):
            pass  # a server that closes with our bytes unread resets: what came before stands
    return [line for line in received.split(b"\r\n") if line.startswith(b"HTTP/1.1 ")]


def _post(body: bytes, close: bool = False) -> bytes:
    connection = b"Connection: close\r\n" if close else b""
    head = f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n".encode()
    return head + connection + b"\r\n" + body


def test_a_head_that_never_ends_is_refused_once_over_the_bound(port: int) -> None:
    start = b"GET / HTTP/1.1\r\nHost: x\r\nX-Filler: "
    parts = [start] + [b"a" * 1024] * (2 * BOUND // 1024)
    assert _answers(port, *parts) == [b"HTTP/1.1 400 Bad Request"]


def test_a_large_body_arriving_with_its_head_is_served(port: int) -> None:
    assert _answers(port, _post(b"x" * 20 * BOUND, close=True)) == [b"HTTP/1.1 200 OK"]


def test_each_head_on_a_kept_alive_connection_gets_the_whole_bound(port: int) -> None:
    filler = b"X-Filler: " + b"a" * (BOUND - 200) + b"\r\n"
    near_bound = b"GET / HTTP/1.1\r\nHost: x\r\n" + filler + b"\r\n"
    last = near_bound.replace(b"Host: x\r\n", b"Host: x\r\nConnection: close\r\n")
    assert _answers(port, near_bound, near_bound, last) == [b"HTTP/1.1 200 OK"] * 3
