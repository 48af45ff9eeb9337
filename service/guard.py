"""Who may call /v1 and how much: API keys kept only as SHA-256 digests, a token bucket per
caller (key digest, or client address when keys are off), and concurrent streams per caller."""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from service.errors import AuthenticationError, RateLimited

DIGEST_PREFIX = "sha256:"
_MAX_TRACKED = 100_000


def key_digest(key: str) -> str:
    """The hex SHA-256 of a key: what ladder keeps and compares instead of the key."""
    return hashlib.sha256(key.encode()).hexdigest()


def same_secret(offered: str, expected: str) -> bool:
    """Constant-time equality that leaks neither content nor length (both are hashed first)."""
    return hmac.compare_digest(key_digest(offered), key_digest(expected))


def digest_setting(value: str) -> str:
    """A LADDER_API_KEYS value with every plain key replaced by `sha256:<hex>`; ValueError when
    a digest is malformed."""
    entries = [entry.strip() for entry in value.split(",") if entry.strip()]
    digests = []
    for entry in entries:
        if entry.startswith(DIGEST_PREFIX):
            hexdigest = entry.removeprefix(DIGEST_PREFIX).lower()
            if len(hexdigest) != 64 or any(c not in "0123456789abcdef" for c in hexdigest):
                raise ValueError("a sha256: entry needs 64 hex digits")
            digests.append(DIGEST_PREFIX + hexdigest)
        else:
            digests.append(DIGEST_PREFIX + key_digest(entry))
    return ",".join(digests)


class ApiKeys:
    """The accepted keys, as digests only."""

    def __init__(self, setting: str) -> None:
        self._digests = tuple(
            entry.removeprefix(DIGEST_PREFIX) for entry in digest_setting(setting).split(",")
        )

    def identify(self, offered: str) -> str | None:
        """The digest of the offered key when it is accepted; every digest is compared."""
        digest = key_digest(offered)
        matched = False
        for known in self._digests:
            matched |= hmac.compare_digest(digest, known)
        return digest if matched else None


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class TokenBuckets:
    """A token bucket per caller: `per_minute` tokens, refilled continuously, burst included."""

    per_minute: int
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def take(self, caller: str) -> float | None:
        """Takes one token; None when granted, else the seconds until one is free."""
        now, rate = self.clock(), self.per_minute / 60.0
        bucket = self._buckets.get(caller)
        if bucket is None:
            if len(self._buckets) >= _MAX_TRACKED:
                self._buckets.clear()  # a flood of addresses must not grow memory without end
            bucket = self._buckets[caller] = _Bucket(float(self.per_minute), now)
        bucket.tokens = min(self.per_minute, bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return (1.0 - bucket.tokens) / rate


@dataclass
class StreamSlots:
    """Counts a caller's open streams; refuses one over the limit."""

    limit: int
    _open: dict[str, int] = field(default_factory=dict)

    def open(self, caller: str) -> Callable[[], None]:
        """Takes a slot (RateLimited when none is free); returns its idempotent release."""
        if self._open.get(caller, 0) >= self.limit:
            raise RateLimited(f"at most {self.limit} concurrent streams per caller", retry_after=1)
        self._open[caller] = self._open.get(caller, 0) + 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                left = self._open.get(caller, 1) - 1
                if left > 0:
                    self._open[caller] = left
                else:
                    self._open.pop(caller, None)

        return release

    def count(self, caller: str) -> int:
        """The caller's open streams."""
        return self._open.get(caller, 0)


class ClientGuard:
    """Authenticates and meters callers of /v1; each part is off when its setting is unset."""

    def __init__(
        self,
        keys: ApiKeys | None,
        limiter: TokenBuckets | None,
        streams: StreamSlots | None,
    ) -> None:
        self.keys = keys
        self.limiter = limiter
        self.streams = streams

    def admit(self, authorization: str | None, address: str) -> str:
        """The caller's identity (key digest, or `ip:<address>` when keys are off)."""
        caller = f"ip:{address}"
        if self.keys is not None:
            scheme, _, offered = (authorization or "").partition(" ")
            digest = self.keys.identify(offered.strip()) if scheme.lower() == "bearer" else None
            if digest is None:
                raise AuthenticationError("a valid API key is required (Authorization: Bearer)")
            caller = f"key:{digest}"
        if self.limiter is not None:
            wait = self.limiter.take(caller)
            if wait is not None:
                raise RateLimited(
                    f"over {self.limiter.per_minute} requests per minute",
                    retry_after=math.ceil(wait),
                )
        return caller

    def stream_slot(self, caller: str) -> Callable[[], None]:
        """Takes one of the caller's stream slots (RateLimited when none is free); its release."""
        return self.streams.open(caller) if self.streams is not None else _nothing

    @classmethod
    def off(cls) -> ClientGuard:
        """A guard that admits everyone (no keys, no limits)."""
        return cls(None, None, None)


def _nothing() -> None:
    return None


async def held(events: AsyncIterator[str], release: Callable[[], None]) -> AsyncIterator[str]:
    """The events, releasing a stream slot when they end or the client goes away."""
    try:
        async for event in events:
            yield event
    finally:
        release()
