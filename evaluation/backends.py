"""How the evaluation reaches the service: the Backend protocol and chat completions over HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from evaluation.tasks import TaskError


@dataclass(frozen=True)
class Reply:
    """One answer from the service, with what it cost."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    few_shot_tokens: int
    context_tokens: int
    latency_s: float
    sources: tuple[str, ...] = ()
    cited: tuple[int, ...] | None = None  # numbers of the sources the answer cites inline


class Backend(Protocol):
    """Sends a conversation to a configuration: in process or over HTTP."""

    def chat(self, configuration: str, messages: Sequence[dict[str, str]], seed: int) -> Reply:
        """One chat completion."""
        ...

    def close(self) -> None:
        """Releases the app or the connections."""
        ...


def _reply(body: Mapping[str, Any], latency_s: float) -> Reply:
    usage = body.get("usage") or {}
    ladder = body.get("ladder") or {}
    return Reply(
        text=body["choices"][0]["message"]["content"] or "",
        prompt_tokens=int(usage.get("prompt_tokens", 0)),
        completion_tokens=int(usage.get("completion_tokens", 0)),
        few_shot_tokens=int(ladder.get("few_shot_tokens", 0)),
        context_tokens=int(ladder.get("context_tokens", 0)),
        latency_s=latency_s,
        sources=tuple(c["source"] for c in ladder.get("citations", [])),
        cited=_cited(ladder),
    )


def _cited(ladder: Mapping[str, Any]) -> tuple[int, ...] | None:
    """The numbers of the citations marked cited; None when the configuration asks for none."""
    if ladder.get("unmatched_markers") is None:
        return None
    return tuple(c["number"] for c in ladder.get("citations", []) if c.get("cited"))


def chat_concurrently(
    backend: Backend,
    configuration: str,
    conversations: Sequence[Sequence[dict[str, str]]],
    seed: int,
    concurrency: int = 1,
) -> Iterator[tuple[int, Reply]]:
    """Each conversation's (index, reply) as it arrives, at most `concurrency` asked at once.

    The replies are yielded in the caller's thread. On a failure nothing more is asked; the
    requests in flight finish and are yielded first, then the first failure is raised.
    """
    if concurrency <= 1:
        for index, messages in enumerate(conversations):
            yield index, backend.chat(configuration, messages, seed)
        return
    queued = iter(enumerate(conversations))
    running: dict[Future[Reply], int] = {}
    failure: BaseException | None = None
    with ThreadPoolExecutor(concurrency, thread_name_prefix="ladder-eval") as pool:

        def ask_next() -> None:
            item = next(queued, None)
            if item is not None:
                running[pool.submit(backend.chat, configuration, item[1], seed)] = item[0]

        for _ in range(concurrency):
            ask_next()
        while running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                index = running.pop(future)
                if future.exception() is not None:
                    failure = failure or future.exception()
                    continue
                yield index, future.result()
                if failure is None:
                    ask_next()
    if failure is not None:
        raise failure


class BackendError(RuntimeError):
    """The service refused or failed an evaluation request; answers so far are journaled."""


class HttpBackend:
    """Posts chat completions (greedy, the run's seed) through a server's or an app's client.

    Safe to call from several threads: an httpx client is, and a TestClient entered once sends
    every thread's request into the app's one event loop through its blocking portal. A refusal
    with Retry-After (a full queue, a rate limit) is retried after that many seconds.
    """

    def __init__(self, client: Any, retries: int = 20) -> None:
        self._client = client
        self._retries = retries

    def chat(self, configuration: str, messages: Sequence[dict[str, str]], seed: int) -> Reply:
        """One chat completion, timed (its last attempt)."""
        body = {"model": configuration, "messages": list(messages), "temperature": 0, "seed": seed}
        for attempt in range(self._retries + 1):
            started = time.perf_counter()
            response = self._client.post("/v1/chat/completions", json=body)
            wait_s = _retry_after(response)
            if wait_s is None or attempt == self._retries:
                break
            time.sleep(wait_s)
        latency = time.perf_counter() - started
        if response.status_code != 200:
            raise BackendError(
                f"{configuration}: HTTP {response.status_code}: {response.text[:300]}"
            )
        return _reply(response.json(), latency)

    def adapters(self) -> dict[str, str | None]:
        """Each configuration's adapter, as /v1/models reports it; TaskError when refused."""
        response = self._client.get("/v1/models")
        if response.status_code == 401:
            raise TaskError(
                "the server wants an API key (ladder eval --api-key or LADDER_EVAL_API_KEY):"
                f" {response.text[:300]}"
            )
        if response.status_code != 200:
            raise TaskError(f"/v1/models: HTTP {response.status_code}: {response.text[:300]}")
        models = response.json()["data"]
        return {m["id"]: (m.get("metadata") or {}).get("adapter") for m in models}

    def close(self) -> None:
        """Stops an app in process (its lifespan ends) or closes the connection pool."""
        self._client.__exit__(None, None, None)


def _retry_after(response: Any) -> float | None:
    """Seconds to wait before asking again (a 429 or 503 with Retry-After, capped at 30 s; an
    HTTP date counts as 1 s), or None when the answer is final."""
    header = response.headers.get("retry-after")
    if response.status_code not in (429, 503) or header is None:
        return None
    try:
        return min(30.0, max(0.1, float(header)))
    except ValueError:
        return 1.0


def over_http(url: str, api_key: str | None = None, timeout_s: float = 600.0) -> HttpBackend:
    """A running ladder server, called with `Authorization: Bearer <api_key>` when given."""
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    client = httpx.Client(base_url=url.rstrip("/"), timeout=timeout_s, headers=headers)
    return HttpBackend(client)
