"""The production compose file validates with the compose tool (no Docker engine is needed)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.support.paths import REPO

COMPOSE = REPO / "docker-compose.yml"


def compose_command() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    probe = (
        subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if shutil.which("docker")
        else None
    )
    if probe is not None and probe.returncode == 0:
        return ["docker", "compose"]
    pytest.fail("no compose tool: `make test` installs Debian's docker-compose")


def test_compose_file_validates() -> None:
    result = subprocess.run(
        [*compose_command(), "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr


def test_compose_wires_ladder_to_vllm_and_chroma_by_health() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert {"vllm", "chroma", "ladder", "ingest"} <= set(services)
    ladder = services["ladder"]
    assert ladder["depends_on"]["vllm"]["condition"] == "service_healthy"
    assert ladder["depends_on"]["chroma"]["condition"] == "service_healthy"
    assert ladder["environment"]["LADDER_VLLM_URL"] == "http://vllm:8000"
    assert "--enable-lora" in services["vllm"]["command"]
    assert services["vllm"]["deploy"]["resources"]["reservations"]["devices"][0][
        "capabilities"
    ] == ["gpu"]
    assert services["ingest"]["profiles"] == ["ingest"]
    for shared in ("postgres", "redis"):
        assert ladder["depends_on"][shared]["condition"] == "service_healthy"
    assert ladder["environment"]["LADDER_DB_URL"].startswith("postgresql+psycopg://")
    assert ladder["environment"]["LADDER_REDIS_URL"] == "redis://redis:6379/0"
