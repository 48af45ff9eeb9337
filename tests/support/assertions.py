"""Assertions on what a client of the API sees."""

from __future__ import annotations

from typing import Any


def assert_openai_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """The response is an error with `status` in OpenAI's shape (and `code`, when given)."""
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    return error
