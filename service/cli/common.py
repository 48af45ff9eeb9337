"""What every sub-command shares: settings and one-line failures."""

from __future__ import annotations

import typer

from service.settings import Settings


def fail(message: str, code: int = 2) -> typer.Exit:
    """Prints a one-line error and returns the exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def settings() -> Settings:
    """The settings, or a one-line error naming the bad one."""
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as error:
        first = error.errors()[0]
        raise fail(f"invalid settings: {first['loc']}: {first['msg']}") from None
