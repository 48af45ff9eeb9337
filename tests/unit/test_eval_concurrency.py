"""`evaluate` with several examples in flight: the bound holds, the order and the journal stay
whole, a resumed run skips what it has, a failure surfaces after the answers in flight are kept,
and the local engine's answers do not depend on it."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest

from evaluation.backends import Backend, HttpBackend, Reply
from evaluation.journal import ExampleResult, Journal
from evaluation.runner import evaluate, select_examples
from evaluation.tasks import EvalExample, Task, load_task
from tests.support.models import models_cache_dir
from tests.support.paths import REPO


class SleepingBackend:
    """Answers each question with itself after a pause; records what was in flight at once."""

    def __init__(self, pause_s: dict[str, float] | None = None, fail_on: str = "") -> None:
        self.pause_s = pause_s or {}
        self.fail_on = fail_on
        self.lock = threading.Lock()
        self.in_flight: list[str] = []  # "configuration/question" of the requests running now
        self.most_in_flight = 0
        self.configurations_at_once = 0
        self.answered: list[tuple[str, str]] = []

    def chat(self, configuration: str, messages: Sequence[dict[str, str]], seed: int) -> Reply:
        question = messages[-1]["content"]
        with self.lock:
            self.in_flight.append(f"{configuration}/{question}")
            self.most_in_flight = max(self.most_in_flight, len(self.in_flight))
            names = {running.split("/")[0] for running in self.in_flight}
            self.configurations_at_once = max(self.configurations_at_once, len(names))
        try:
            time.sleep(self.pause_s.get(question, 0.02))
            if question == self.fail_on:
                raise RuntimeError(f"{configuration}: HTTP 500: {question}")
            with self.lock:
                self.answered.append((configuration, question))
            return Reply(question, 10, 2, 0, 0, 0.01)
        finally:
            with self.lock:
                self.in_flight.remove(f"{configuration}/{question}")

    def close(self) -> None:
        pass


def task_of(count: int) -> Task:
    examples = tuple(
        EvalExample(f"q{n:02d}", ({"role": "user", "content": f"answer {n}"},), f"answer {n}")
        for n in range(count)
    )
    return Task("tiny", "general", Path("."), examples, "contains_answer")


def journal_rows(path: Path) -> list[tuple[str, str]]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [(row["configuration"], row["example"]) for row in rows]


def test_at_most_concurrency_examples_are_in_flight_and_one_configuration_at_a_time(
    tmp_path: Path,
) -> None:
    task, backend = task_of(12), SleepingBackend()
    evaluate(task, ["a", "b"], backend, Journal.open(tmp_path / "j"), task.examples, 0, None, 3)
    assert backend.most_in_flight == 3
    assert backend.configurations_at_once == 1
    assert len(backend.answered) == 24


def test_results_keep_the_examples_order_and_the_journal_holds_each_answer_once(
    tmp_path: Path,
) -> None:
    task = task_of(8)
    # Early questions take longest, so the answers arrive out of order.
    backend = SleepingBackend({f"answer {n}": 0.02 * (8 - n) for n in range(8)})
    seen: list[tuple[str, bool, int]] = []

    def on_result(result: ExampleResult, fresh: bool) -> None:
        seen.append((result.example, fresh, threading.get_ident()))

    journal = Journal.open(tmp_path / "j")
    results = evaluate(task, ["a", "b"], backend, journal, task.examples, 0, on_result, 4)
    ids = [example.id for example in task.examples]
    for name in ("a", "b"):
        assert [r.example for r in results[name]] == ids
        assert [r.reply["text"] for r in results[name]] == [f"answer {n}" for n in range(8)]
    rows = journal_rows(journal.path)
    assert sorted(rows) == sorted((name, i) for name in ("a", "b") for i in ids)
    assert [example for name, example in rows if name == "a"] != ids  # journaled as they came
    assert {thread for _, _, thread in seen} == {threading.get_ident()}
    assert len(seen) == 16 and all(fresh for _, fresh, _ in seen)


def test_a_resumed_run_asks_only_what_the_journal_lacks(tmp_path: Path) -> None:
    task, path = task_of(6), tmp_path / "j"
    first = Journal.open(path)
    for n in (0, 2, 3):
        first.add(ExampleResult("a", f"q{n:02d}", {"text": "from before"}, {"x": 1.0}))
    backend, fresh_flags = SleepingBackend(), {}

    def on_result(result: ExampleResult, fresh: bool) -> None:
        fresh_flags[result.example] = fresh

    results = evaluate(task, ["a"], backend, Journal.open(path), task.examples, 0, on_result, 4)
    assert sorted(q for _, q in backend.answered) == ["answer 1", "answer 4", "answer 5"]
    assert [r.reply["text"] for r in results["a"]] == [
        "from before" if n in (0, 2, 3) else f"answer {n}" for n in range(6)
    ]
    assert fresh_flags == {f"q{n:02d}": n not in (0, 2, 3) for n in range(6)}
    assert sorted(journal_rows(path)) == [("a", f"q{n:02d}") for n in range(6)]


def test_a_failure_surfaces_after_the_answers_in_flight_are_journaled(tmp_path: Path) -> None:
    task = task_of(10)
    # q03 fails while q04 and q05 are still running; nothing after them is asked.
    pauses = {"answer 3": 0.05, "answer 4": 0.15, "answer 5": 0.15}
    backend = SleepingBackend(pauses, fail_on="answer 3")
    journal = Journal.open(tmp_path / "j")
    with pytest.raises(RuntimeError, match="HTTP 500: answer 3"):
        evaluate(task, ["a", "b"], backend, journal, task.examples, 0, None, 3)
    answered = sorted(f"q{int(q.split()[1]):02d}" for _, q in backend.answered)
    assert answered == ["q00", "q01", "q02", "q04", "q05"]
    assert sorted(journal_rows(journal.path)) == [("a", q) for q in answered]


def test_the_backend_waits_out_a_full_queue() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(time.monotonic())
        if len(calls) < 3:
            refusal = {"error": {"message": "the local engine has 8 requests queued"}}
            return httpx.Response(503, json=refusal, headers={"retry-after": "0"})
        answer = {"choices": [{"message": {"content": "fine"}}], "usage": {"prompt_tokens": 3}}
        return httpx.Response(200, json=answer)

    client = httpx.Client(base_url="http://ladder", transport=httpx.MockTransport(handler))
    assert HttpBackend(client).chat("plain", [{"role": "user", "content": "hi"}], 0).text == "fine"
    assert len(calls) == 3
    refused = HttpBackend(client, retries=0)
    calls.clear()
    with pytest.raises(RuntimeError, match="HTTP 503"):
        refused.chat("plain", [{"role": "user", "content": "hi"}], 0)


class CountingInFlight:
    """Wraps a backend and records the most requests it had running at once."""

    def __init__(self, inner: Backend) -> None:
        self.inner, self.lock, self.now, self.most = inner, threading.Lock(), 0, 0

    def chat(self, configuration: str, messages: Sequence[dict[str, str]], seed: int) -> Reply:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            return self.inner.chat(configuration, messages, seed)
        finally:
            with self.lock:
                self.now -= 1

    def close(self) -> None:
        self.inner.close()


def test_the_local_engine_in_process_answers_the_same_at_any_concurrency(
    tmp_path: Path, base_model_dir: Path
) -> None:
    from service.cli.evaluate import in_process
    from service.settings import Settings

    task = load_task(REPO / "corpus" / "tasks", "support-triage")
    examples = select_examples(task, 2, 0)
    settings = Settings(data_dir=tmp_path, LADDER_CACHE_DIR=models_cache_dir())
    names = ["triage-prompt", "triage-constrained"]
    backend = CountingInFlight(in_process(settings, None, names))
    try:
        runs = {
            concurrency: evaluate(
                task,
                names,
                backend,
                Journal.open(tmp_path / f"j{concurrency}"),
                examples,
                0,
                None,
                concurrency,
            )
            for concurrency in (1, 2)
        }
    finally:
        backend.close()
    assert backend.most == 2  # two requests went into the one app at once
    for name in names:
        one, two = ([(r.reply["text"], r.scores) for r in runs[c][name]] for c in (1, 2))
        assert one == two
