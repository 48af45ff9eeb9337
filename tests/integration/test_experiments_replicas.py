"""Two `ladder serve` processes on one PostgreSQL share one experiment state: each sees the
other's changes within the refresh interval, and every user stays on one arm whichever answers."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support.experiments import ADMIN, arm_of, experiment_body, live_server
from tests.support.ladder_process import fake_upstream, ladder_env, ladder_serve

pytestmark = [pytest.mark.server, pytest.mark.slow]


def eventually(check: object, timeout_s: float = 5.0) -> None:
    """Waits until check() is true (replicas poll every 0.2 s)."""
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "the other replica did not catch up"
        time.sleep(0.1)


def test_two_processes_on_one_postgres_share_changes_and_keep_each_user_on_one_arm(
    tmp_path: Path, postgres_url: str
) -> None:
    with live_server(fake_upstream()) as upstream:
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        env_a = ladder_env(tmp_path / "a", upstream, postgres_url)
        env_b = ladder_env(tmp_path / "b", upstream, postgres_url)
        with (
            ladder_serve(env_a, tmp_path / "a.log") as a,
            ladder_serve(env_b, tmp_path / "b.log") as b,
            httpx.Client(base_url=a.base, headers=ADMIN) as on_a,
            httpx.Client(base_url=b.base, headers=ADMIN) as on_b,
        ):
            assert on_a.post("/admin/experiments", json=experiment_body()).status_code == 201
            eventually(
                lambda: (
                    on_b.post(
                        "/v1/chat/completions",
                        json={"model": "support", "messages": [{"role": "user", "content": "q"}]},
                    ).status_code
                    == 200
                )
            )
            users = [f"user-{n}" for n in range(40)]
            with ThreadPoolExecutor(4) as pool:
                first_a = list(pool.map(lambda u: arm_of(on_a, u), users))
                first_b = list(pool.map(lambda u: arm_of(on_b, u), users))
            assert first_a == first_b
            assert set(first_a) == {"control", "treatment"}
            # The same new users asked of both replicas at once still get one arm each.
            racing = [f"race-{n}" for n in range(30)]
            with ThreadPoolExecutor(4) as pool:
                from_a = pool.map(lambda u: arm_of(on_a, u), racing)
                from_b = pool.map(lambda u: arm_of(on_b, u), racing)
                assert list(from_a) == list(from_b)
            change = {"weights": {"control": 0, "treatment": 100}}
            assert on_b.post("/admin/experiments/support/weights", json=change).status_code == 200
            time.sleep(1.0)  # five refresh intervals of 0.2 s
            assert [arm_of(on_a, f"new-{n}") for n in range(10)] == ["treatment"] * 10
            assert [arm_of(on_b, u) for u in users] == first_a
            assert [arm_of(on_a, u) for u in users] == first_a
