"""ASGI middleware, outermost first: the request gate (Host, header limits, security headers),
client admission on /v1 (key and rate limit, before any body is read) and the body size limit."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.concurrency import run_in_threadpool

from service.api.errors import error_response
from service.errors import HeadersTooLarge, LadderError, PayloadTooLarge, UnknownHost

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Every response: never framed (clickjacking), never content-sniffed, no referrer leaves.
SECURITY_HEADERS = (
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


async def _refuse(error: LadderError, scope: Scope, receive: Receive, send: Send) -> None:
    await error_response(error)(scope, receive, send)


def host_name(host: str) -> str:
    """The name of a Host header value, without its port or IPv6 brackets, lower-cased."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if ":" in host else host


def host_allowed(patterns: frozenset[str], host: str) -> bool:
    """Whether a Host header value is served: loopback names always, `*` any, `*.x` subdomains."""
    name = host_name(host)
    if name in LOOPBACK_NAMES or name in patterns or "*" in patterns:
        return True
    return any(p.startswith("*.") and name.endswith(p[1:]) for p in patterns)


class RequestGate:
    """Refuses a Host LADDER_ALLOWED_HOSTS does not name and a head over the header limits
    (which the server bounds first, see `ladder serve`); adds the security headers."""

    def __init__(
        self, app: ASGIApp, allowed_hosts: str | None, max_headers: int, max_header_bytes: int
    ) -> None:
        self.app = app
        names = (allowed_hosts or "").split(",")
        self.hosts = frozenset(n.strip().lower() for n in names if n.strip()) or None
        self.max_headers = max_headers
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                given = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(n, v) for n, v in SECURITY_HEADERS if n not in given]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        error = self._refusal(scope.get("headers") or [])
        if error is not None:
            await _refuse(error, scope, receive, secured)
            return
        await self.app(scope, receive, secured)

    def _refusal(self, headers: list[tuple[bytes, bytes]]) -> LadderError | None:
        if len(headers) > self.max_headers:
            return HeadersTooLarge(f"the request has over {self.max_headers} headers")
        if sum(len(name) + len(value) + 4 for name, value in headers) > self.max_header_bytes:
            return HeadersTooLarge(f"the request headers are over {self.max_header_bytes} bytes")
        if self.hosts is not None:
            host = next((v.decode("latin-1") for n, v in headers if n == b"host"), "")
            if not host_allowed(self.hosts, host):
                return UnknownHost("this server does not serve that Host", param="host")
        return None


class ClientAdmission:
    """Authenticates and rate-limits callers of /v1 before anything reads or parses the body;
    routes find the admitted caller in the request state."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == "/v1" or path.startswith("/v1/")):
            await self.app(scope, receive, send)
            return
        guard = scope["app"].state.ladder.guard
        authorization = next(
            (v.decode("latin-1") for n, v in scope.get("headers") or [] if n == b"authorization"),
            None,
        )
        address = scope["client"][0] if scope.get("client") else "unknown"
        try:
            if guard.blocking:  # the Redis rate limit waits on the network
                caller = await run_in_threadpool(guard.admit, authorization, address)
            else:
                caller = guard.admit(authorization, address)
        except LadderError as error:
            await _refuse(error, scope, receive, send)
            return
        scope.setdefault("state", {})["caller"] = caller
        await self.app(scope, receive, send)


class BodySizeLimit:
    """Reads the whole body before the app (413 over the limit, declared size or chunked), so
    an oversized body never reaches the body parser."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _refuse(self._error(), scope, receive, send)
            return
        chunks: list[bytes] = []
        size, message = 0, await receive()
        while message["type"] == "http.request":
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await _refuse(self._error(), scope, receive, send)
                return
            if not message.get("more_body", False):
                message = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
                break
            message = await receive()
        pending = [message]

        async def replay() -> Message:
            return pending.pop() if pending else await receive()

        await self.app(scope, replay, send)

    def _error(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"the request body is over {self.max_bytes} bytes")
