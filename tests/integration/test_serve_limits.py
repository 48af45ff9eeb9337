"""What `ladder serve` itself enforces, on a real process: X-Forwarded-For believed only from
LADDER_TRUSTED_PROXIES, request heads bounded before they are buffered, and no keyless /v1 on a
non-loopback address without LADDER_ALLOW_OPEN."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.experiments import CONFIG, live_server
from tests.support.ladder_process import LadderProcess, fake_upstream, ladder_serve, vllm_engine_env
from tests.support.processes import free_port, spawn, stop_process, wait_for_http

pytestmark = [pytest.mark.server, pytest.mark.slow]


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with live_server(fake_upstream()) as base:
        yield base


def _env(workdir: Path, upstream: str, **variables: str) -> dict[str, str]:
    workdir.mkdir(parents=True, exist_ok=True)
    env = vllm_engine_env(workdir, upstream, CONFIG)
    for name in ("LADDER_API_KEYS", "LADDER_ADMIN_TOKEN", "LADDER_TRUSTED_PROXIES"):
        env.pop(name, None)
    return env | variables


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory, upstream: str) -> Iterator[LadderProcess]:
    """`ladder serve` on loopback, no keys, 3 requests per minute per address."""
    workdir = tmp_path_factory.mktemp("limited")
    env = _env(workdir, upstream, LADDER_RATE_LIMIT_RPM="3")
    with ladder_serve(env, workdir / "ladder.log") as ladder:
        yield ladder


def _raw_status(base: str, head: bytes) -> int:
    """Sends a raw request head; the status the server answers with (0 if it just closes)."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        # Refused while still sending: the answer may be waiting anyway.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            connection.sendall(head)
        try:
            answer = connection.recv(4096)
        except ConnectionResetError:
            return 0
    return int(answer.split(b" ")[1]) if answer.startswith(b"HTTP/1.1") else 0


def _get_models(*headers: bytes) -> bytes:
    return b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"".join(headers) + b"\r\n"


def test_rotating_x_forwarded_for_does_not_escape_the_per_address_limit(
    limited: LadderProcess,
) -> None:
    statuses = [
        _raw_status(limited.base, _get_models(f"X-Forwarded-For: 203.0.113.{n}\r\n".encode()))
        for n in range(10)
    ]
    assert statuses == [200, 200, 200] + [429] * 7


def test_x_forwarded_for_is_believed_from_a_trusted_proxy(tmp_path: Path, upstream: str) -> None:
    env = _env(tmp_path, upstream, LADDER_RATE_LIMIT_RPM="1", LADDER_TRUSTED_PROXIES="127.0.0.1")
    with ladder_serve(env, tmp_path / "ladder.log") as ladder:
        statuses = [
            _raw_status(ladder.base, _get_models(f"X-Forwarded-For: 198.51.100.{n}\r\n".encode()))
            for n in (1, 2, 2)
        ]
    assert statuses == [200, 200, 429], "each forwarded address has its own bucket"


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([b"X-Big: " + b"a" * 10_000_000 + b"\r\n"], id="one-10MB-header"),
        pytest.param([b"X-N%d: 1\r\n" % n for n in range(20_000)], id="20000-headers"),
    ],
)
def test_huge_request_heads_are_refused(limited: LadderProcess, headers: list[bytes]) -> None:
    status = _raw_status(limited.base, _get_models(*headers))
    assert status in (0, 400, 431), f"a {status} for a head the server must refuse"
    assert _raw_status(limited.base, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n") == 200


def test_keyless_serving_beyond_loopback_needs_allow_open(tmp_path: Path, upstream: str) -> None:
    ladder = Path(sys.executable).parent / "ladder"
    command = [str(ladder), "serve", "--host", "0.0.0.0", "--port", str(free_port())]
    log = tmp_path / "refused.log"
    process = spawn(command, log, env=_env(tmp_path, upstream))
    try:
        code = process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        stop_process(process)
    assert code == 2, f"it served instead of refusing:\n{log.read_text()[-2000:]}"
    assert "LADDER_ALLOW_OPEN" in log.read_text()

    port = free_port()
    command = [str(ladder), "serve", "--host", "0.0.0.0", "--port", str(port)]
    log = tmp_path / "open.log"
    process = spawn(command, log, env=_env(tmp_path, upstream, LADDER_ALLOW_OPEN="true"))
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", 240, process, log)
    finally:
        stop_process(process)
    warned = [line for line in log.read_text().splitlines() if "WARNING" in line]
    assert any("without API keys" in line for line in warned), log.read_text()[-2000:]
