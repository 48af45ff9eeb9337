"""An httpx transport on aiohttp's connection pool and C HTTP parser, for the hot path upstream.

httpx stays the engines' client (its API, its exceptions, `MockTransport` as the seam in tests);
only the wire under it changes: httpcore's pure-Python pool, anyio streams and h11 cost several
times aiohttp's CPU per request. aiohttp's errors are raised as the httpx ones they mean:

    aiohttp.ClientError
     ├── ConnectionTimeoutError ....... httpx.ConnectTimeout
     ├── SocketTimeoutError ........... httpx.ReadTimeout
     ├── ClientConnectorError ......... httpx.ConnectError
     ├── ServerDisconnectedError ...... httpx.RemoteProtocolError
     ├── ClientPayloadError ........... httpx.RemoteProtocolError
     └── any other .................... httpx.ReadError
    TimeoutError (no pool slot in time) httpx.PoolTimeout
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from functools import lru_cache

import aiohttp
import httpx
import yarl

# Framing is aiohttp's to write from the body it is given; the rest of httpx's headers pass.
_FRAMING = frozenset({"content-length", "transfer-encoding"})


@contextmanager
def _httpx_errors(request: httpx.Request) -> Iterator[None]:
    """Raises an aiohttp failure as the httpx exception it means."""
    try:
        yield
    except aiohttp.ConnectionTimeoutError as error:
        raise httpx.ConnectTimeout(str(error) or "connect timed out", request=request) from error
    except aiohttp.ServerTimeoutError as error:
        raise httpx.ReadTimeout(str(error) or "read timed out", request=request) from error
    except aiohttp.ClientConnectorError as error:
        raise httpx.ConnectError(str(error), request=request) from error
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as error:
        raise httpx.RemoteProtocolError(str(error), request=request) from error
    except aiohttp.ClientError as error:
        raise httpx.ReadError(str(error) or type(error).__name__, request=request) from error
    except TimeoutError as error:  # a pool slot not free in time
        raise httpx.PoolTimeout(
            str(error) or "no connection free in time", request=request
        ) from error


# An engine asks a handful of URLs with one or two timeouts: each is built once, not per request.
@lru_cache(maxsize=256)
def _url(url: str) -> yarl.URL:
    return yarl.URL(url, encoded=True)  # httpx has encoded it already


@lru_cache(maxsize=64)
def _timeout(
    pool: float | None, connect: float | None, read: float | None
) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=None, connect=pool, sock_connect=connect, sock_read=read)


class _Body(httpx.AsyncByteStream):
    """An aiohttp response body as httpx reads it: raw bytes (httpx decodes), released on close."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors(self._request):
            async for chunk in self._response.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        self._response.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Pooled HTTP/1.1 through aiohttp; the session is opened on first use, inside the loop."""

    def __init__(self, max_connections: int, keepalive_expiry_s: float = 5.0) -> None:
        self._max_connections = max_connections
        self._keepalive_expiry_s = keepalive_expiry_s
        self._session: aiohttp.ClientSession | None = None

    def _opened(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, keepalive_timeout=self._keepalive_expiry_s
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),  # httpx keeps the cookies
                auto_decompress=False,  # httpx decodes by Content-Encoding
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"),
                timeout=aiohttp.ClientTimeout(total=None),
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Sends the request with httpx's timeouts (connect, read, pool) as aiohttp's."""
        given = request.extensions.get("timeout", {})
        timeout = _timeout(given.get("pool"), given.get("connect"), given.get("read"))
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in request.headers.raw
            if name.lower().decode("latin-1") not in _FRAMING
        ]
        with _httpx_errors(request):
            response = await self._opened().request(
                request.method,
                _url(str(request.url)),
                headers=headers,
                data=await request.aread() or None,
                timeout=timeout,
                allow_redirects=False,
            )
        return httpx.Response(
            response.status,
            headers=response.raw_headers,
            stream=_Body(response, request),
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
