"""Who may call /v1 and how much: API keys kept only as SHA-256 digests, a token bucket per
caller (key digest, or client address when keys are off), in process or shared by every replica
through Redis, failed authentications per address, and concurrent streams per caller."""

from __future__ import annotations

import hmac
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from service.errors import AuthenticationError, RateLimited
from service.settings import DIGEST_PREFIX, Settings, digest_setting, key_digest

_MAX_TRACKED = 100_000
log = logging.getLogger("ladder.guard")


def same_secret(offered: str, expected: str) -> bool:
    """Constant-time equality that leaks neither content nor length (both are hashed first)."""
    return hmac.compare_digest(key_digest(offered), key_digest(expected))


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
    """A token bucket per caller: `per_minute` tokens, refilled continuously, burst included.

    At most `max_tracked` callers are kept; a new one evicts the least recently seen, so a flood
    of addresses neither grows memory without end nor frees the callers being limited.
    """

    per_minute: int
    clock: Callable[[], float] = time.monotonic
    max_tracked: int = _MAX_TRACKED
    blocking: ClassVar[bool] = False
    _buckets: OrderedDict[str, _Bucket] = field(default_factory=OrderedDict)
    # Worker threads call in too when the guard's other limiter waits on Redis.
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, caller: str) -> float | None:
        """Takes one token; None when granted, else the seconds until one is free."""
        return self._step(caller, take=True)

    def wait(self, caller: str) -> float | None:
        """Takes nothing; None when the caller has a token now, else the seconds until one."""
        return self._step(caller, take=False)

    def _step(self, caller: str, *, take: bool) -> float | None:
        with self._lock:
            bucket = self._refilled(caller)
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0 if take else 0.0
                return None
            return (1.0 - bucket.tokens) * 60.0 / self.per_minute

    def _refilled(self, caller: str) -> _Bucket:
        now = self.clock()
        bucket = self._buckets.get(caller)
        if bucket is None:
            bucket = self._buckets[caller] = _Bucket(float(self.per_minute), now)
            if len(self._buckets) > self.max_tracked:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(caller)
        refill = (now - bucket.updated) * self.per_minute / 60.0
        bucket.tokens = min(self.per_minute, bucket.tokens + refill)
        bucket.updated = now
        return bucket

    def __len__(self) -> int:
        return len(self._buckets)


class RateLimiter(Protocol):
    """Takes one request's token for a caller."""

    per_minute: int

    @property
    def blocking(self) -> bool:
        """Whether take() waits on the network."""
        ...

    def take(self, caller: str) -> float | None:
        """None when granted, else the seconds until a token is free."""
        ...


# One atomic step of a token bucket kept in a Redis hash; Redis's clock is the one every replica
# shares. The wait comes back as a string: Lua numbers become integers on the way out.
_TAKE_SCRIPT = """
local capacity, rate = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens = tonumber(state[1]) or capacity
local updated = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - updated) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000) + 1000)
return tostring(wait)
"""


class RedisTokenBuckets:
    """The same token bucket, shared by every replica through Redis.

    When Redis cannot be reached within its timeout the request is admitted (fail open: a rate
    limit must not take the chat API down with it) and a warning is logged, at most every 30 s.
    """

    blocking = True

    def __init__(
        self, per_minute: int, url: str, timeout_s: float = 0.5, prefix: str = "ladder:rl:"
    ) -> None:
        import redis

        self.per_minute = per_minute
        self.prefix = prefix
        self._client: Any = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._take = self._client.register_script(_TAKE_SCRIPT)
        self._errors: tuple[type[Exception], ...] = (redis.RedisError, OSError)
        self._warned_at = -math.inf

    def take(self, caller: str) -> float | None:
        """Takes one token; None when granted (or Redis is away), else the seconds to wait."""
        try:
            wait = float(
                self._take(
                    keys=[self.prefix + caller], args=[self.per_minute, self.per_minute / 60]
                )
            )
        except self._errors as error:
            now = time.monotonic()
            if now - self._warned_at > 30:
                self._warned_at = now
                log.warning("rate limit not applied, Redis unavailable: %s", error)
            return None
        return wait if wait > 0 else None

    def close(self) -> None:
        """Closes the connection pool."""
        self._client.close()


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


@dataclass
class FailedLogins:
    """Failed authentications per client address (API key or admin token): an address over the
    limit gets 429 before its credentials are looked at, so keys cannot be guessed at speed."""

    buckets: TokenBuckets

    def check(self, address: str) -> None:
        """RateLimited while the address has no failed attempt left."""
        wait = self.buckets.wait(address)
        if wait is not None:
            raise RateLimited(
                f"over {self.buckets.per_minute} failed authentications per minute from this"
                " address",
                retry_after=math.ceil(wait),
            )

    def failed(self, address: str) -> None:
        """Counts one failed attempt of the address."""
        self.buckets.take(address)


class ClientGuard:
    """Authenticates and meters callers of /v1; each part is off when its setting is unset."""

    def __init__(
        self,
        keys: ApiKeys | None,
        limiter: RateLimiter | None,
        streams: StreamSlots | None,
        failures: FailedLogins | None = None,
    ) -> None:
        self.keys = keys
        self.limiter = limiter
        self.streams = streams
        self.failures = failures

    def authenticated(self, address: str, identify: Callable[[], str | None], refusal: str) -> str:
        """What identify() finds; AuthenticationError (counted against the address) when it
        finds nothing, RateLimited without calling it while the address is over its failures."""
        if self.failures is not None:
            self.failures.check(address)
        identity = identify()
        if identity is None:
            if self.failures is not None:
                self.failures.failed(address)
            raise AuthenticationError(refusal)
        return identity

    def admit(self, authorization: str | None, address: str) -> str:
        """The caller's identity (key digest, or `ip:<address>` when keys are off)."""
        caller = f"ip:{address}"
        keys = self.keys
        if keys is not None:
            scheme, _, offered = (authorization or "").partition(" ")

            def identify() -> str | None:
                return keys.identify(offered.strip()) if scheme.lower() == "bearer" else None

            refusal = "a valid API key is required (Authorization: Bearer)"
            caller = f"key:{self.authenticated(address, identify, refusal)}"
        if self.limiter is not None:
            wait = self.limiter.take(caller)
            if wait is not None:
                raise RateLimited(
                    f"over {self.limiter.per_minute} requests per minute",
                    retry_after=math.ceil(wait),
                )
        return caller

    @property
    def blocking(self) -> bool:
        """Whether admit() waits on the network (the Redis rate limit)."""
        return self.limiter is not None and self.limiter.blocking

    def stream_slot(self, caller: str) -> Callable[[], None]:
        """Takes one of the caller's stream slots (RateLimited when none is free); its release."""
        return self.streams.open(caller) if self.streams is not None else _nothing

    def close(self) -> None:
        """Releases the limiter's connections, if it holds any."""
        close = getattr(self.limiter, "close", None)
        if close is not None:
            close()

    @classmethod
    def off(cls) -> ClientGuard:
        """A guard that admits everyone (no keys, no limits)."""
        return cls(None, None, None)


def client_guard(settings: Settings) -> ClientGuard:
    """API keys, the per-caller rate limit and stream slots, each off when unset."""
    limiter: RateLimiter | None = None
    if settings.rate_limit_rpm and settings.redis_url:
        limiter = RedisTokenBuckets(
            settings.rate_limit_rpm, settings.redis_url, settings.redis_timeout_s
        )
    elif settings.rate_limit_rpm:
        limiter = TokenBuckets(settings.rate_limit_rpm)
    return ClientGuard(
        ApiKeys(settings.api_keys) if settings.api_keys else None,
        limiter,
        StreamSlots(settings.max_streams_per_key) if settings.max_streams_per_key else None,
        FailedLogins(TokenBuckets(settings.auth_failures_per_minute)),
    )


def _nothing() -> None:
    return None


async def held(events: AsyncIterator[str], release: Callable[[], None]) -> AsyncIterator[str]:
    """The events, releasing a stream slot when they end or the client goes away."""
    try:
        async for event in events:
            yield event
    finally:
        release()
