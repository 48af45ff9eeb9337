"""Hardening of who reaches the service: keys checked before the body, failed logins limited per
address, bounded headers, LRU rate-limit buckets, chunked bodies over the limit, key and token
settings that cannot leave things open by accident, the dashboard's session, Host and framing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from service.api.guard import TokenBuckets
from tests.support.assertions import assert_openai_error
from tests.support.experiments import ADMIN, ADMIN_TOKEN, app_client, bearer, live_server, make_app
from tests.support.experiments import sqlite_settings as make_settings

KEY = "sk-ladder-hardening-0123456789abcdef"
QUESTION = {"model": "plain", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture()
def keyed(tmp_path: Path) -> Iterator[TestClient]:
    with app_client(make_settings(tmp_path, api_keys=KEY)) as client:
        yield client


# Finding 9: unauthenticated requests cost no parsing, failed keys are limited, heads bounded.


def test_a_malformed_body_without_a_key_gets_401_before_it_is_parsed(keyed: TestClient) -> None:
    headers = {"content-type": "application/json"}
    for given in ({}, bearer("sk-wrong")):
        response = keyed.post("/v1/chat/completions", content=b"{bad", headers=headers | given)
        assert_openai_error(response, 401, "invalid_api_key")
    with_key = keyed.post("/v1/chat/completions", content=b"{bad", headers=headers | bearer(KEY))
    assert_openai_error(with_key, 400)


def test_failed_keys_are_rate_limited_per_address_and_then_not_even_checked(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path, api_keys=KEY, auth_failures_per_minute=3)
    with app_client(settings) as client:
        codes = [
            client.get("/v1/models", headers=bearer(f"sk-guess-{n}")).status_code for n in range(3)
        ]
        assert codes == [401, 401, 401]
        refused = client.get("/v1/models", headers=bearer("sk-guess-3"))
        assert_openai_error(refused, 429, "rate_limit_exceeded")
        assert 1 <= int(refused.headers["retry-after"]) <= 20
        # Guessing stops: even the right key from that address waits until a failure expires.
        assert_openai_error(client.get("/v1/models", headers=bearer(KEY)), 429)
        # The admin routes refuse that address too, whatever it offers.
        assert client.get("/admin/experiments", headers=ADMIN).status_code == 429


def test_failed_admin_tokens_are_rate_limited_per_address(tmp_path: Path) -> None:
    with app_client(make_settings(tmp_path, auth_failures_per_minute=2)) as client:
        wrong = bearer(ADMIN_TOKEN + "x")
        codes = [client.get("/admin/experiments", headers=wrong).status_code for _ in range(3)]
    assert codes == [401, 401, 429]


def test_too_many_or_too_large_headers_get_431_in_openai_shape(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_headers=50, max_header_bytes=8192)
    with app_client(settings) as client:
        many = {f"x-filler-{n}": "1" for n in range(60)}
        assert_openai_error(client.get("/v1/models", headers=many), 431)
        large = {"x-filler": "a" * 10_000}
        assert_openai_error(client.get("/v1/models", headers=large), 431)
        assert client.get("/v1/models", headers={"x-filler": "a" * 1000}).status_code == 200


# Finding 10: a flood of new callers evicts the least recently seen, not everyone.


def test_a_flood_of_new_callers_does_not_free_a_limited_caller() -> None:
    buckets = TokenBuckets(per_minute=1, clock=lambda: 0.0)
    assert buckets.take("victim") is None
    for number in range(200_000):
        buckets.take(f"flood-{number}")
        if number % 1000 == 0:
            assert buckets.take("victim") is not None, f"freed after {number} new callers"
    assert buckets.take("victim") is not None
    assert len(buckets) == 100_000


# Finding 11 (part a): a chunked body over the limit gets the documented 413.


def test_a_chunked_body_over_the_limit_gets_413(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_body_bytes=100_000)

    def chunks(total: int) -> Iterator[bytes]:
        body = b'{"model": "plain", "messages": [{"role": "user", "content": "' + b"x" * total
        yield from (body[i : i + 8192] for i in range(0, len(body), 8192))
        yield b'"}]}'

    with live_server(make_app(settings)) as base, httpx.Client(base_url=base) as http:
        headers = {"content-type": "application/json"}
        over = http.post("/v1/chat/completions", content=chunks(150_000), headers=headers)
        error = assert_openai_error(over, 413, "request_too_large")
        assert "100000 bytes" in error["message"]
        under = http.post("/v1/chat/completions", content=chunks(1_000), headers=headers)
        assert under.status_code == 200, under.text


# Finding 13: a keys value that names no key is a start-up error, not an open /v1.


@pytest.mark.parametrize("value", [",", " ", " , ,"])
def test_a_keys_value_naming_no_key_stops_start_up(tmp_path: Path, value: str) -> None:
    with pytest.raises(ValidationError, match="names no key"):
        make_settings(tmp_path, api_keys=value)


# Finding 14: the admin token, the dashboard's login and session, framing and Host.


def test_a_blank_or_spaced_admin_token_is_refused_and_surrounding_spaces_are_stripped(
    tmp_path: Path,
) -> None:
    for bad in (" " * 16, "\t" * 20, "token with spaces in it", "token-\x00-0123456789"):
        with pytest.raises(ValidationError):
            make_settings(tmp_path, admin_token=bad)
    assert make_settings(tmp_path, admin_token=f"  {ADMIN_TOKEN}\n").admin_token == ADMIN_TOKEN


def _login(client: TestClient, token: str) -> httpx.Response:
    return client.post(
        "/dashboard/login",
        content=f"token={token}".encode(),
        headers={"content-type": "application/x-www-form-urlencoded"},
        follow_redirects=False,
    )


def _dashboard(client: TestClient, session: str) -> httpx.Response:
    """GET /dashboard with this cookie only (not what the client's jar kept)."""
    client.cookies.clear()
    return client.get("/dashboard", headers={"cookie": f"ladder_admin={session}"})


def test_dashboard_login_posts_the_token_and_gets_a_signed_session_cookie(
    tmp_path: Path,
) -> None:
    with TestClient(make_app(make_settings(tmp_path))) as client:
        assert "ladder_admin" not in client.get(f"/dashboard/login?token={ADMIN_TOKEN}").cookies
        assert _dashboard(client, ADMIN_TOKEN).status_code == 401, "the raw token is no session"
        assert_openai_error(_login(client, "wrong-token-0123456789"), 401)
        login = _login(client, ADMIN_TOKEN)
        assert login.status_code == 303 and login.headers["location"] == "/dashboard"
        cookie = login.headers["set-cookie"]
        assert ADMIN_TOKEN not in cookie
        assert {"HttpOnly", "SameSite=strict", "Path=/dashboard"} <= {
            part.strip() for part in cookie.split(";")
        }
        assert "secure" not in cookie.lower(), "plain HTTP: a Secure cookie would never return"
        session = login.cookies["ladder_admin"]
        page = _dashboard(client, session)
        assert page.status_code == 200 and "ladder experiments" in page.text
        tampered = session[:-1] + ("0" if session[-1] != "0" else "1")
        assert _dashboard(client, tampered).status_code == 401


def test_dashboard_session_cookie_is_secure_over_https(tmp_path: Path) -> None:
    app = make_app(make_settings(tmp_path))
    with TestClient(app, base_url="https://ladder.example") as client:
        assert "secure" in _login(client, ADMIN_TOKEN).headers["set-cookie"].lower()


def test_a_session_expires_and_dies_with_the_token() -> None:
    from service.api.sessions import new_session, session_valid  # new with the signed sessions

    session = new_session(ADMIN_TOKEN, 60, now=1000.0)
    assert session_valid(session, ADMIN_TOKEN, now=1059.0)
    assert not session_valid(session, ADMIN_TOKEN, now=1061.0)
    assert not session_valid(session, ADMIN_TOKEN + "-rotated", now=1001.0)


def test_pages_forbid_framing_and_the_dashboard_runs_no_script(tmp_path: Path) -> None:
    with app_client(make_settings(tmp_path)) as client:
        for response in (client.get("/dashboard", headers=ADMIN), client.get("/v1/models")):
            assert response.headers["x-frame-options"] == "DENY"
            assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
            assert response.headers["x-content-type-options"] == "nosniff"
        policy = client.get("/dashboard/login").headers["content-security-policy"]
        assert "default-src 'none'" in policy and "script-src" not in policy


def test_only_allowed_hosts_and_loopback_names_are_served(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, allowed_hosts="ladder.example.com, *.corp.example")
    with app_client(settings) as client:
        refused = client.get("/v1/models", headers={"host": "attacker.example"})
        assert_openai_error(refused, 400, "invalid_host")
        assert client.get("/health", headers={"host": "evil.test:8000"}).status_code == 400
        for host in ("ladder.example.com", "LADDER.example.com:443", "a.corp.example", "[::1]:80"):
            assert client.get("/v1/models", headers={"host": host}).status_code == 200, host
        assert client.get("/health", headers={"host": "127.0.0.1:8000"}).status_code == 200
