"""`ladder serve`: checks what would be exposed, prepares the base model, runs uvicorn."""

from __future__ import annotations

import ipaddress
import logging
import os
from typing import Annotated, Any

import typer

from service.cli.common import fail
from service.cli.common import settings as load_settings
from service.settings import Settings

log = logging.getLogger("ladder")


def _ready_banner(host: str, port: int) -> str:
    base = f"http://{host}:{port}"
    body = '{"model": "rag", "messages": [{"role": "user", "content": "What does the K3 cost?"}]}'
    return "\n".join(
        [
            f"ladder is starting on {base}; once it logs 'Application startup complete', try:",
            f"  curl -s {base}/v1/chat/completions -H 'content-type: application/json' \\",
            f"    -d '{body}'",
            "  .venv/bin/python - <<'PY'",
            "from openai import OpenAI",
            f"client = OpenAI(base_url='{base}/v1', api_key='unused')",
            "question = [{'role': 'user', 'content': 'What does the K3 cost?'}]",
            "answer = client.chat.completions.create(model='rag', messages=question)",
            "print(answer.choices[0].message.content)",
            "PY",
        ]
    )


def is_loopback(host: str) -> bool:
    """Whether a bind address only reaches this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def open_exposure(settings: Settings) -> str | None:
    """Why serving would expose /v1 without keys, or None when it would not."""
    if settings.api_keys or is_loopback(settings.host):
        return None
    return f"/v1 would be served without API keys on {settings.host}"


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options. HTTP is parsed by httptools (in C), bounded as h11 is: a request head
    over `h11_max_incomplete_event_size` is refused before more is buffered (plain httptools
    buffers any size; see service/cli/http_protocol.py); the bound is twice
    LADDER_MAX_HEADER_BYTES, so a head just over the limit still gets the app's 431 in OpenAI's
    shape. X-Forwarded-* are believed only from LADDER_TRUSTED_PROXIES (uvicorn's default
    believes loopback)."""
    from service.cli.http_protocol import BoundedHttpToolsProtocol

    trusted = settings.trusted_proxies
    return {
        "host": settings.host,
        "port": settings.port,
        "workers": settings.workers,
        "log_level": "info",
        "access_log": settings.access_log,
        "timeout_graceful_shutdown": 10,
        "http": BoundedHttpToolsProtocol,
        "h11_max_incomplete_event_size": 2 * settings.max_header_bytes,
        "proxy_headers": trusted is not None,
        "forwarded_allow_ips": trusted or "",
    }


def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (LADDER_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (LADDER_PORT).")] = None,
) -> None:
    """Serves the OpenAI-compatible API."""
    import uvicorn

    settings = load_settings()
    if host is not None:
        os.environ["LADDER_HOST"] = settings.host = host
    if port is not None:
        settings.port = port
        os.environ["LADDER_PORT"] = str(port)
    if settings.engine == "local" and settings.workers > 1:
        raise fail("the local engine runs in one process: LADDER_WORKERS must be 1")
    exposure = open_exposure(settings)
    if exposure and not settings.allow_open:
        raise fail(f"{exposure}: set LADDER_API_KEYS, or LADDER_ALLOW_OPEN=true to mean it")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # httpx writes a line per request to the engine at INFO; its warnings still show.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if exposure:
        log.warning("%s (LADDER_ALLOW_OPEN=true): anyone who reaches it may use it", exposure)
    _check_base_model(settings)
    typer.echo(_ready_banner(settings.host, settings.port))
    uvicorn.run("service.api.app:app_from_environment", factory=True, **server_options(settings))


def _check_base_model(settings: Settings) -> None:
    """Prepares the base model before the server starts (a GGUF converts here, with progress),
    so a bad LADDER_BASE_MODEL or LADDER_CONTEXT_WINDOW is a one-line error, not a traceback."""
    from service.engines.factory import load_base_model, model_window
    from service.errors import ConfigurationError

    try:
        base = load_base_model(settings, progress=typer.echo)
        model_window(settings, base)
    except ConfigurationError as error:
        raise fail(str(error)) from None
    typer.echo(f"base model: {base.describe()}")
