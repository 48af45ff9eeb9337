"""The vllm engine over several replicas, each a fake upstream on its own host behind one transport:
a replica that fails before anything was streamed costs the request nothing (it is tried once on
another and routed around), one that fails mid-stream ends that stream, a lone replica is tried
again as soon as it is back, an adapter a replica lost unseen is loaded again, and a replica list
that names no URL is refused at start-up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest
from pydantic import ValidationError

from service.engines.base import ChatMessage, GenerationRequest
from service.engines.vllm import VllmEngine
from service.errors import EngineUnavailable
from service.settings import Settings
from tests.support.fake_upstream import answer, fake_upstream

REQUEST = GenerationRequest((ChatMessage("user", "hi"),))
TONE = GenerationRequest((ChatMessage("user", "hi"),), adapter="tone")
T = TypeVar("T")


class Hosts(httpx.AsyncBaseTransport):
    """Replicas by host name: an upstream's transport, or the error connecting to it raises."""

    def __init__(self, **hosts: httpx.AsyncBaseTransport | Exception) -> None:
        self.hosts = hosts
        self.chats: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        target = self.hosts[request.url.host]
        if request.url.path == "/v1/chat/completions":
            self.chats.append(request.url.host)
        if isinstance(target, Exception):
            raise target
        return await target.handle_async_request(request)


class BreakingBody(httpx.AsyncByteStream):
    """A stream that sends one piece of text, then loses its connection."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b'data: {"choices": [{"index": 0, "delta": {"content": "Lad"}}]}\n\n'
        raise httpx.ReadError("connection reset by peer")


class BreaksMidStream(httpx.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        headers = {"content-type": "text/event-stream"}
        return httpx.Response(200, headers=headers, stream=BreakingBody())


def healthy() -> httpx.AsyncBaseTransport:
    return httpx.ASGITransport(app=fake_upstream())


def refused() -> Exception:
    return httpx.ConnectError("[Errno 111] Connection refused")


def run(hosts: Hosts, action: Callable[[VllmEngine], Awaitable[T]], **options: Any) -> T:
    async def main() -> T:
        urls = [f"http://{host}:8000" for host in hosts.hosts]
        engine = VllmEngine(urls, "base", transport=hosts, **options)
        try:
            return await action(engine)
        finally:
            await engine.aclose()

    return asyncio.run(main())


async def streamed(engine: VllmEngine, request: GenerationRequest = REQUEST) -> str:
    return "".join([delta.text async for delta in engine.stream(request)])


async def completed(engine: VllmEngine, request: GenerationRequest = REQUEST) -> str:
    return (await engine.complete(request)).text


@pytest.mark.parametrize("send", [completed, streamed], ids=["complete", "stream"])
def test_a_replica_refusing_connections_costs_no_request(
    send: Callable[[VllmEngine], Awaitable[str]],
) -> None:
    hosts = Hosts(a=refused(), b=healthy())

    async def three_requests(engine: VllmEngine) -> list[str]:
        texts = [await send(engine) for _ in range(3)]
        assert [r["routed"] for r in engine.replica_report()] == [False, True]
        return texts

    assert run(hosts, three_requests) == [answer(3)] * 3
    assert hosts.chats == ["a", "b", "b", "b"]


def test_a_stream_that_already_sent_text_is_not_retried() -> None:
    hosts = Hosts(a=BreaksMidStream(), b=healthy())
    received: list[str] = []

    async def consume(engine: VllmEngine) -> None:
        async for delta in engine.stream(REQUEST):
            received.append(delta.text)

    with pytest.raises(EngineUnavailable):
        run(hosts, consume)
    assert received == ["Lad"]
    assert hosts.chats == ["a"]


def test_a_lone_replica_is_tried_again_as_soon_as_it_is_back() -> None:
    hosts = Hosts(a=refused())

    async def down_then_back(engine: VllmEngine) -> str:
        with pytest.raises(EngineUnavailable):
            await completed(engine)
        hosts.hosts["a"] = healthy()
        return await completed(engine)

    assert run(hosts, down_then_back) == answer(3)


@pytest.mark.parametrize("send", [completed, streamed], ids=["complete", "stream"])
def test_an_adapter_its_replica_lost_unseen_is_loaded_again(
    send: Callable[[VllmEngine, GenerationRequest], Awaitable[str]],
) -> None:
    hosts = Hosts(a=httpx.ASGITransport(app=fake_upstream(lora=True)))
    restarted = fake_upstream(lora=True)

    async def restart_between(engine: VllmEngine) -> list[str]:
        first = await send(engine, TONE)
        hosts.hosts["a"] = httpx.ASGITransport(app=restarted)  # no request saw it go
        second = await send(engine, TONE)
        async with httpx.AsyncClient(transport=hosts.hosts["a"], base_url="http://a") as client:
            assert (await client.get("/stats")).json()["loads"] == ["tone@1"]
        return [first, second]

    resolver = {"resolver": lambda ref: ("tone@1", "/adapters/tone/1")}
    assert run(hosts, restart_between, **resolver) == [answer(3)] * 2
    assert hosts.chats == ["a", "a", "a"]


@pytest.mark.parametrize("urls", [" , ", "ftp://vllm:8000", "http://a:8000,vllm:8000"])
def test_a_replica_list_without_http_urls_is_refused(urls: str) -> None:
    with pytest.raises(ValidationError, match="vllm_urls"):
        Settings(vllm_urls=urls)


def test_the_replica_list_replaces_the_single_url() -> None:
    settings = Settings(vllm_url="http://one:8000", vllm_urls=" http://a:8000 ,http://b:8000,")

    assert settings.vllm_replica_urls == ["http://a:8000", "http://b:8000"]
    assert Settings(vllm_url="http://one:8000").vllm_replica_urls == ["http://one:8000"]
