"""The production compose file validates with the compose tool (no Docker engine is needed)."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.support.paths import REPO

COMPOSE = REPO / "docker-compose.yml"
DEFAULT_BASE_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
KEYS = {"LADDER_API_KEYS": "sk-compose-test-key"}


def _without_ladder_variables() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("LADDER_", "VLLM_"))}


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


def _config_quiet(variables: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*compose_command(), "-f", str(COMPOSE), "config", "-q"],
        env=_without_ladder_variables() | variables,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


def test_compose_file_validates() -> None:
    result = _config_quiet(KEYS)
    assert result.returncode == 0, result.stderr


def test_compose_refuses_to_publish_ladder_without_api_keys() -> None:
    for variables in ({}, {"LADDER_API_KEYS": ""}):
        result = _config_quiet(variables)
        assert result.returncode != 0
        assert "set LADDER_API_KEYS" in result.stderr


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


def resolved_services(**variables: str) -> dict[str, Any]:
    """The services as the compose tool resolves them with API keys and these variables set (and
    none of the caller's own LADDER_ or VLLM_ ones)."""
    result = subprocess.run(
        [*compose_command(), "-f", str(COMPOSE), "config"],
        env=_without_ladder_variables() | KEYS | variables,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    services: dict[str, Any] = yaml.safe_load(result.stdout)["services"]
    return services


def option(command: list[str], flag: str) -> str:
    return str(command[command.index(flag) + 1])


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Target path -> source (a named volume or a host folder), in either syntax the tool prints."""
    pairs = (
        (v["target"], v["source"]) if isinstance(v, dict) else tuple(v.split(":")[1::-1])
        for v in service.get("volumes", [])
    )
    return dict(pairs)


@pytest.mark.parametrize(
    ("variables", "model", "window"),
    [
        pytest.param({}, DEFAULT_BASE_MODEL, "4096", id="default"),
        pytest.param(
            {
                "LADDER_BASE_MODEL": "/models/acme-7b-instruct",
                "LADDER_CONTEXT_WINDOW": "8192",
                "LADDER_MODELS_DIR": "/srv/models",
            },
            "/models/acme-7b-instruct",
            "8192",
            id="mounted-folder",
        ),
        pytest.param(
            {"LADDER_BASE_MODEL": "Qwen/Qwen2.5-7B-Instruct"},
            "Qwen/Qwen2.5-7B-Instruct",
            "4096",
            id="hub-id",
        ),
    ],
)
def test_one_base_model_variable_reaches_vllm_and_ladder(
    variables: dict[str, str], model: str, window: str
) -> None:
    services = resolved_services(**variables)
    vllm, ladder = services["vllm"]["command"], services["ladder"]["environment"]
    assert option(vllm, "--model") == model == ladder["LADDER_BASE_MODEL"]
    assert option(vllm, "--max-model-len") == window == str(ladder["LADDER_CONTEXT_WINDOW"])
    assert option(vllm, "--served-model-name") == ladder["LADDER_VLLM_MODEL"]
    # ladder reads the tokenizer and chat template vLLM serves: the same cache, the same folder.
    shared = {"/root/.cache/huggingface", "/models"}
    vllm_mounts, ladder_mounts = mounts(services["vllm"]), mounts(services["ladder"])
    assert {t: vllm_mounts[t] for t in shared} == {t: ladder_mounts[t] for t in shared}
    if "LADDER_MODELS_DIR" in variables:
        assert ladder_mounts["/models"] == variables["LADDER_MODELS_DIR"]


@pytest.mark.parametrize(
    ("variables", "model", "url"),
    [
        pytest.param({}, "sentence-transformers/all-MiniLM-L6-v2", "", id="default-off"),
        pytest.param(
            {
                "LADDER_EMBEDDINGS_URL": "http://embeddings:8000",
                "LADDER_EMBEDDINGS_MODEL": "BAAI/bge-small-en-v1.5",
            },
            "BAAI/bge-small-en-v1.5",
            "http://embeddings:8000",
            id="remote",
        ),
    ],
)
def test_the_optional_embeddings_service_serves_the_model_ladder_asks_for(
    variables: dict[str, str], model: str, url: str
) -> None:
    services = resolved_services(**variables)
    embeddings = services["embeddings"]
    assert embeddings["profiles"] == ["embeddings"]
    assert option(embeddings["command"], "--runner") == "pooling"
    assert embeddings["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == [
        "gpu"
    ]
    served = option(embeddings["command"], "--served-model-name")
    assert option(embeddings["command"], "--model") == served == model
    for client in ("ladder", "ingest"):
        environment = services[client]["environment"]
        assert environment["LADDER_EMBEDDINGS_MODEL"] == model
        assert environment["LADDER_EMBEDDINGS_URL"] == url


def test_the_scale_profile_adds_a_second_vllm_replica_on_another_gpu() -> None:
    urls = "http://vllm:8000,http://vllm-2:8000"
    services = resolved_services(LADDER_VLLM_URLS=urls)
    first, second = services["vllm"], services["vllm-2"]
    assert second["profiles"] == ["scale"]
    assert "profiles" not in first
    # The same server: model, window, served name, LoRA flags, port, adapters and caches.
    assert second["command"] == first["command"]
    assert mounts(second) == mounts(first)
    assert second["healthcheck"] == first["healthcheck"]
    assert second["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert second["deploy"] == first["deploy"]
    # ...on its own GPU.
    assert first["environment"].get("CUDA_VISIBLE_DEVICES") != "1"
    assert second["environment"]["CUDA_VISIBLE_DEVICES"] == "1"
    for client in ("ladder", "ingest"):
        assert services[client]["environment"]["LADDER_VLLM_URLS"] == urls
    # Every listed URL names a vLLM service on the port it serves.
    for url in urls.split(","):
        host, port = url.removeprefix("http://").split(":")
        assert option(services[host]["command"], "--port") == port


def test_without_the_scale_profile_ladder_uses_the_one_vllm() -> None:
    services = resolved_services()
    assert services["ladder"]["environment"]["LADDER_VLLM_URLS"] == ""
    assert services["ladder"]["environment"]["LADDER_VLLM_URL"] == "http://vllm:8000"
    assert "vllm-2" not in services["ladder"].get("depends_on", {})
