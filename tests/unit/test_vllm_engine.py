"""VllmEngine against a scripted upstream: wire format, streaming, every fault it translates."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from fastapi.testclient import TestClient

from ingest.index import Index
from service.api.app import create_app
from service.engines.base import (
    Answer,
    ChatMessage,
    Completion,
    FinishReason,
    GenerationRequest,
    SamplingParams,
    TextDelta,
    Usage,
)
from service.engines.vllm import ExpectedModel, VllmEngine
from service.errors import (
    EngineError,
    EngineOverloaded,
    EngineTimeout,
    EngineUnavailable,
    InvalidRequest,
    LadderError,
)
from service.settings import Settings
from tests.support.fake_upstream import fake_upstream

BASE_URL = "http://vllm.test:8000"
BASE_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
MESSAGES = (
    ChatMessage("system", "Answer from the passages."),
    ChatMessage("user", "What is ladder?"),
)
REQUEST = GenerationRequest(MESSAGES)

Handler = Callable[[httpx.Request], httpx.Response]
T = TypeVar("T")


def run_engine(
    upstream: Handler | httpx.AsyncBaseTransport,
    action: Callable[[VllmEngine], Awaitable[T]],
    model: str = BASE_MODEL,
    **options: Any,
) -> T:
    """Runs action on an engine whose upstream is a handler or a transport, then closes it."""
    if not isinstance(upstream, httpx.AsyncBaseTransport):
        upstream = httpx.MockTransport(upstream)

    async def main() -> T:
        engine = VllmEngine(BASE_URL, model, transport=upstream, **options)
        try:
            return await action(engine)
        finally:
            await engine.aclose()

    return asyncio.run(main())


def complete(handler: Handler, request: GenerationRequest = REQUEST) -> Completion:
    return run_engine(handler, lambda engine: engine.complete(request))


def stream(
    handler: Handler, request: GenerationRequest = REQUEST, received: list[TextDelta] | None = None
) -> list[TextDelta]:
    """Every delta of one stream; received also keeps those yielded before a failure."""
    deltas = [] if received is None else received

    async def consume(engine: VllmEngine) -> list[TextDelta]:
        async for delta in engine.stream(request):
            deltas.append(delta)
        return deltas

    return run_engine(handler, consume)


def recording(response: httpx.Response, requests: list[httpx.Request]) -> Handler:
    """An upstream that answers response and keeps every request it was sent."""

    def handle(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return response

    return handle


def failing(error: Exception) -> Handler:
    def handle(request: httpx.Request) -> httpx.Response:
        raise error

    return handle


def chat_completion(text: str, finish_reason: str, prompt: int, completion: int) -> dict[str, Any]:
    return {
        "id": "chatcmpl-7f3a",
        "object": "chat.completion",
        "created": 1718000000,
        "model": BASE_MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "tool_calls": []},
                "logprobs": None,
                "finish_reason": finish_reason,
                "stop_reason": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "total_tokens": prompt + completion,
            "completion_tokens": completion,
        },
    }


def chunk(delta: dict[str, str], finish_reason: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-7f3a",
        "object": "chat.completion.chunk",
        "created": 1718000000,
        "model": BASE_MODEL,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }


def usage_chunk(prompt: int, completion: int) -> dict[str, Any]:
    usage = {"prompt_tokens": prompt, "total_tokens": prompt + completion}
    return {**chunk({}), "choices": [], "usage": {**usage, "completion_tokens": completion}}


def sse(*events: dict[str, Any] | str) -> bytes:
    """An SSE body as vLLM writes it: one `data:` line per event, blank-line separated."""
    lines = [f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n" for e in events]
    return "".join(lines).encode()


def sse_response(body: bytes | httpx.AsyncByteStream) -> httpx.Response:
    headers = {"content-type": "text/event-stream; charset=utf-8"}
    if isinstance(body, bytes):
        return httpx.Response(200, headers=headers, content=body)
    return httpx.Response(200, headers=headers, stream=body)


FULL_STREAM = sse(
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Ladder "}),
    chunk({"content": "serves "}),
    chunk({"content": "answers."}),
    chunk({"content": ""}, finish_reason="stop"),
    usage_chunk(prompt=31, completion=4),
    "[DONE]",
)


def test_request_without_adapter_asks_for_the_base_model_with_its_sampling() -> None:
    sent: list[httpx.Request] = []
    sampling = SamplingParams(temperature=0.7, top_p=0.9, max_tokens=64, stop=("\n\n",), seed=7)
    answer = httpx.Response(200, json=chat_completion("Hi.", "stop", 31, 2))

    complete(recording(answer, sent), GenerationRequest(MESSAGES, sampling=sampling))

    assert [request.url.path for request in sent] == ["/v1/chat/completions"]
    assert json.loads(sent[0].content) == {
        "model": BASE_MODEL,
        "messages": [
            {"role": "system", "content": "Answer from the passages."},
            {"role": "user", "content": "What is ladder?"},
        ],
        "temperature": 0.7,
        "top_p": 0.9,
        "max_tokens": 64,
        "stop": ["\n\n"],
        "seed": 7,
        "stream": False,
    }


def test_request_with_adapter_asks_for_the_adapter_by_name() -> None:
    sent: list[httpx.Request] = []
    answer = httpx.Response(200, json=chat_completion("Hi.", "stop", 31, 2))

    complete(recording(answer, sent), GenerationRequest(MESSAGES, adapter="support-v1.2"))

    assert json.loads(sent[0].content)["model"] == "support-v1.2"


def test_request_without_stop_or_seed_leaves_them_to_vllm() -> None:
    sent: list[httpx.Request] = []
    answer = httpx.Response(200, json=chat_completion("Hi.", "stop", 31, 2))

    complete(recording(answer, sent))

    body = json.loads(sent[0].content)
    assert "stop" not in body
    assert "seed" not in body


@pytest.mark.parametrize("finish_reason", ["stop", "length"])
def test_completion_carries_text_finish_reason_and_usage(finish_reason: FinishReason) -> None:
    answer = httpx.Response(200, json=chat_completion("Ladder serves.", finish_reason, 31, 3))

    completion = complete(recording(answer, []))

    assert completion == Completion((Answer("Ladder serves.", finish_reason),), Usage(31, 3))


def test_stream_yields_text_then_a_final_delta_with_finish_reason_and_usage() -> None:
    deltas = stream(recording(sse_response(FULL_STREAM), []))

    assert deltas == [
        TextDelta("Ladder "),
        TextDelta("serves "),
        TextDelta("answers."),
        TextDelta("", "stop", Usage(31, 4)),
    ]


def test_stream_cut_by_max_tokens_finishes_with_length() -> None:
    body = sse(chunk({"content": "Ladder"}, "length"), usage_chunk(31, 1), "[DONE]")

    deltas = stream(recording(sse_response(body), []))

    assert deltas[-1] == TextDelta("", "length", Usage(31, 1))


def test_stream_asks_vllm_to_stream_and_to_report_usage() -> None:
    sent: list[httpx.Request] = []

    stream(recording(sse_response(FULL_STREAM), sent), GenerationRequest(MESSAGES, "support-v1.2"))

    body = json.loads(sent[0].content)
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["model"] == "support-v1.2"


STATUS_CASES = [
    pytest.param(400, "openai", "max_tokens must be at least 1", InvalidRequest, 400, id="400"),
    pytest.param(400, "vllm", "maximum context length is 2048", InvalidRequest, 400, id="400-vllm"),
    pytest.param(404, "vllm", "The model `support-v9` does not exist.", EngineError, 502, id="404"),
    pytest.param(429, "openai", "Too many requests queued", EngineOverloaded, 503, id="429"),
    pytest.param(500, "vllm", "EngineCore died", EngineError, 502, id="500"),
    pytest.param(503, "openai", "Server is sleeping", EngineUnavailable, 503, id="503"),
    pytest.param(500, "text", "Internal Server Error: worker", EngineError, 502, id="500-text"),
]


def upstream_error(status: int, style: str, message: str) -> httpx.Response:
    """An error answer in OpenAI's body, vLLM's own body, or plain text."""
    if style == "text":
        return httpx.Response(status, text=message)
    if style == "vllm":
        body = {"object": "error", "message": message, "type": "BadRequestError", "code": status}
        return httpx.Response(status, json=body)
    return httpx.Response(status, json={"error": {"message": message, "type": "Error"}})


def raised_by(handler: Handler, streaming: bool) -> LadderError:
    """The ladder error a completion or a stream raises against handler."""
    with pytest.raises(LadderError) as caught:
        if streaming:
            stream(handler)
        else:
            complete(handler)
    return caught.value


@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize(("status", "style", "message", "expected", "http_status"), STATUS_CASES)
def test_upstream_error_status_becomes_ladder_error_keeping_its_message(
    streaming: bool,
    status: int,
    style: str,
    message: str,
    expected: type[LadderError],
    http_status: int,
) -> None:
    error = raised_by(recording(upstream_error(status, style, message), []), streaming)

    assert type(error) is expected
    assert error.status_code == http_status
    assert message in error.message


TRANSPORT_CASES = [
    pytest.param(
        httpx.ConnectError("[Errno 111] Connection refused"),
        EngineUnavailable,
        503,
        "Connection refused",
        id="connect-error",
    ),
    pytest.param(
        httpx.ReadTimeout("timed out"), EngineTimeout, 504, "ReadTimeout", id="read-timeout"
    ),
    pytest.param(
        httpx.ConnectTimeout("timed out"),
        EngineTimeout,
        504,
        "ConnectTimeout",
        id="connect-timeout",
    ),
]


@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize(("fault", "expected", "http_status", "message"), TRANSPORT_CASES)
def test_transport_fault_becomes_ladder_error(
    streaming: bool,
    fault: Exception,
    expected: type[LadderError],
    http_status: int,
    message: str,
) -> None:
    error = raised_by(failing(fault), streaming)

    assert type(error) is expected
    assert error.status_code == http_status
    assert message in error.message


def test_unreadable_completion_body_is_an_engine_error() -> None:
    error = raised_by(recording(httpx.Response(200, json={"choices": []}), []), streaming=False)

    assert type(error) is EngineError


def test_stream_closed_before_finishing_is_an_engine_error_after_the_text_sent() -> None:
    received: list[TextDelta] = []
    body = sse(chunk({"content": "Ladder "}), chunk({"content": "ser"}))

    with pytest.raises(EngineError) as caught:
        stream(recording(sse_response(body), []), received=received)

    assert type(caught.value) is EngineError
    assert "before it finished" in caught.value.message
    assert received == [TextDelta("Ladder "), TextDelta("ser")]


def test_error_event_mid_stream_is_an_engine_error_with_its_message() -> None:
    failure = {"error": {"message": "CUDA out of memory", "type": "InternalServerError"}}
    body = sse(chunk({"content": "Ladder "}), failure)

    with pytest.raises(EngineError) as caught:
        stream(recording(sse_response(body), []))

    assert type(caught.value) is EngineError
    assert "CUDA out of memory" in caught.value.message


def test_vllm_style_error_event_mid_stream_is_an_engine_error_with_its_message() -> None:
    body = sse(chunk({"content": "Ladder "}), {"object": "error", "message": "Aborted request"})

    with pytest.raises(EngineError) as caught:
        stream(recording(sse_response(body), []))

    assert "Aborted request" in caught.value.message


@pytest.mark.parametrize("event", ['{"id": "chatcmpl-7f3a", "choices": [', "[1, 2]"])
def test_unreadable_stream_event_is_an_engine_error_not_a_json_error(event: str) -> None:
    body = sse(chunk({"content": "Ladder "}), event, "[DONE]")

    with pytest.raises(LadderError) as caught:
        stream(recording(sse_response(body), []))

    assert type(caught.value) is EngineError
    assert "unreadable stream event" in caught.value.message


class StallingBody(httpx.AsyncByteStream):
    """A stream body that sends its head, then times out like a hung vLLM."""

    def __init__(self, head: bytes) -> None:
        self.head = head

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.head
        raise httpx.ReadTimeout("timed out while reading the stream")


def test_read_timeout_mid_stream_is_an_engine_timeout_after_the_text_sent() -> None:
    received: list[TextDelta] = []
    body = StallingBody(sse(chunk({"content": "Ladder "})))

    with pytest.raises(EngineTimeout) as caught:
        stream(recording(sse_response(body), []), received=received)

    assert caught.value.status_code == 504
    assert received == [TextDelta("Ladder ")]


@pytest.mark.parametrize(
    ("handler", "expected"),
    [
        pytest.param(recording(httpx.Response(200), []), True, id="200"),
        pytest.param(recording(httpx.Response(500, text="loading"), []), False, id="500"),
        pytest.param(failing(httpx.ConnectError("Connection refused")), False, id="connect-error"),
    ],
)
def test_ready_reports_whether_health_answers_200(handler: Handler, expected: bool) -> None:
    assert run_engine(handler, lambda engine: engine.ready()) is expected


def test_ready_asks_vllm_health_endpoint() -> None:
    sent: list[httpx.Request] = []

    run_engine(recording(httpx.Response(200), sent), lambda engine: engine.ready())

    assert [str(request.url) for request in sent] == [f"{BASE_URL}/health"]


FOLDER = "/models/qwen2-tiny"
EXPECTED = ExpectedModel(source=FOLDER, folder=FOLDER, window=1024)


class ServingVllm:
    """A vLLM serving `root` with `max_model_len` as `name`, and one adapter, listed as vLLM's
    /v1/models lists them; `healthy` can be turned off; `asked` keeps every path asked."""

    def __init__(self, root: str = FOLDER, max_model_len: int = 1024, name: str = "base") -> None:
        self.root, self.max_model_len, self.name, self.healthy = root, max_model_len, name, True
        self.asked: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.asked.append(request.url.path)
        if request.url.path == "/health":
            return httpx.Response(200 if self.healthy else 503)
        common = {"object": "model", "created": 1718000000, "owned_by": "vllm", "permission": []}
        base = {"id": self.name, "root": self.root, "parent": None}
        adapter = {"id": "marker@1", "root": "/adapters/marker/1", "parent": self.name}
        models = [
            common | base | {"max_model_len": self.max_model_len},
            common | adapter | {"max_model_len": None},
        ]
        return httpx.Response(200, json={"object": "list", "data": models})


def unready_reason(
    upstream: Handler | httpx.AsyncBaseTransport,
    expected: ExpectedModel = EXPECTED,
    model: str = "base",
) -> str | None:
    return run_engine(upstream, lambda e: e.unready_reason(), model, expected_model=expected)


def test_vllm_serving_another_model_is_not_ready_and_both_are_named() -> None:
    reason = unready_reason(ServingVllm(root="Qwen/Qwen2.5-7B-Instruct"))

    assert reason == (
        "vLLM serves Qwen/Qwen2.5-7B-Instruct with max_model_len 1024, ladder is configured for"
        f" {FOLDER} with window 1024"
    )


def test_vllm_serving_a_shorter_window_than_ladder_budgets_is_not_ready() -> None:
    gguf = ExpectedModel("/models/tiny.gguf", FOLDER, window=1024)

    reason = unready_reason(ServingVllm(max_model_len=512), gguf)

    assert reason == (
        f"vLLM serves {FOLDER} with max_model_len 512, ladder is configured for"
        f" /models/tiny.gguf ({FOLDER}) with window 1024"
    )


@pytest.mark.parametrize(
    ("vllm", "expected"),
    [
        pytest.param(ServingVllm(), EXPECTED, id="folder"),
        pytest.param(
            ServingVllm(root="org/model"), ExpectedModel("org/model", FOLDER, 1024), id="hub-id"
        ),
        pytest.param(ServingVllm(max_model_len=4096), EXPECTED, id="longer-vllm-window"),
    ],
)
def test_vllm_serving_the_configured_model_is_ready(
    vllm: ServingVllm, expected: ExpectedModel
) -> None:
    assert unready_reason(vllm, expected) is None


def test_a_served_name_vllm_does_not_list_is_not_ready() -> None:
    reason = unready_reason(ServingVllm(name="smollm2"))

    assert reason == "vLLM serves no model named 'base'"


def test_a_match_is_remembered_until_health_fails_then_the_model_is_asked_again() -> None:
    vllm = ServingVllm()

    async def restart_with_another_model(engine: VllmEngine) -> list[bool]:
        answers = [await engine.ready(), await engine.ready()]
        vllm.healthy = False
        answers.append(await engine.ready())
        vllm.healthy, vllm.root = True, "Qwen/Qwen2.5-7B-Instruct"
        return [*answers, await engine.ready()]

    answers = run_engine(vllm, restart_with_another_model, "base", expected_model=EXPECTED)

    assert answers == [True, True, False, False]
    assert vllm.asked == ["/health", "/v1/models", "/health", "/health", "/health", "/v1/models"]


def test_an_upstream_that_names_no_root_or_window_is_ready() -> None:
    assert unready_reason(httpx.ASGITransport(app=fake_upstream())) is None


def test_ready_endpoint_is_503_with_the_mismatch_as_its_reason(
    tmp_path: Path, corpus_index: Index
) -> None:
    engine = VllmEngine(
        BASE_URL,
        "base",
        transport=httpx.MockTransport(ServingVllm(max_model_len=512)),
        expected_model=EXPECTED,
    )
    config = tmp_path / "configs.yaml"
    config.write_text("configurations:\n  plain: {}\n")
    app = create_app(Settings(data_dir=tmp_path, config=config), engine=engine, index=corpus_index)

    with TestClient(app) as client:
        response = client.get("/ready")

    reason = (
        f"vLLM serves {FOLDER} with max_model_len 512, ladder is configured for"
        f" {FOLDER} with window 1024"
    )
    assert response.status_code == 503
    assert response.json() == {
        "ready": False,
        "engine": False,
        "index": True,
        "reason": reason,
        "replicas": [
            {
                "url": BASE_URL,
                "healthy": False,
                "routed": False,
                "reason": reason,
                "outstanding": 0,
                "adapters": [],
            }
        ],
    }


def test_configured_timeouts_reach_every_upstream_request() -> None:
    sent: list[httpx.Request] = []
    answer = httpx.Response(200, json=chat_completion("Hi.", "stop", 31, 2))

    async def check(engine: VllmEngine) -> None:
        client = engine.pool.replicas[0].client
        assert client.timeout.connect == 1.5
        assert client.timeout.read == 42.0
        await engine.complete(REQUEST)

    run_engine(recording(answer, sent), check, connect_timeout_s=1.5, read_timeout_s=42.0)

    assert sent[0].extensions["timeout"]["connect"] == 1.5
    assert sent[0].extensions["timeout"]["read"] == 42.0
