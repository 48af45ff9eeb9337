"""Admin adapter routes: list the registry, load a newest version into vLLM ahead of traffic,
unload one version; the local engine, which loads adapters at start-up, refuses with a 400."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from adapters.base_model import BaseModel, Fingerprint
from adapters.registry import AdapterRegistry
from service.api.app import create_app
from service.engines.vllm import VllmEngine
from service.engines.vllm_server import registry_resolver
from service.settings import Settings
from tests.support.scripted_engine import ScriptedEngine

TOKEN = "admin-token-0123456789"
BASE = BaseModel(
    "org/served-model",
    Path("/models/served"),
    Fingerprint("Qwen2ForCausalLM", 8, 2, 64, "a" * 64),
    512,
)
OTHER = Fingerprint("LlamaForCausalLM", 8, 2, 64, "b" * 64)
ON_BASE = {"base_model": BASE.source, "base_fingerprint": BASE.fingerprint.as_dict()}
ADMIN = {"Authorization": f"Bearer {TOKEN}", "X-Ladder-Actor": "ops"}


def fake_peft(folder: Path) -> Path:
    folder.mkdir(parents=True)
    config = {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj"]}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    (folder / "adapter_model.safetensors").write_bytes(b"\0")
    return folder


class FakeVllm:
    """vLLM's adapter routes, recording what ladder asked."""

    def __init__(self) -> None:
        self.loaded: set[str] = {"base"}
        self.calls: list[tuple[str, dict]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else {}
        self.calls.append((request.url.path, body))
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": m} for m in sorted(self.loaded)]})
        if request.url.path == "/v1/load_lora_adapter":
            self.loaded.add(body["lora_name"])
            return httpx.Response(200, text="ok")
        if request.url.path == "/v1/unload_lora_adapter":
            self.loaded.discard(body["lora_name"])
            return httpx.Response(200, text="ok")
        return httpx.Response(404, json={"error": {"message": "no route"}})


def settings_for(tmp_path: Path) -> Settings:
    config = tmp_path / "configs.yaml"
    config.write_text("configurations:\n  plain: {}\n")
    return Settings(data_dir=tmp_path, config=config, admin_token=TOKEN)


@pytest.fixture()
def registry(tmp_path: Path) -> AdapterRegistry:
    registry = AdapterRegistry(tmp_path / "adapters")
    for _ in range(2):
        registry.register(
            "tone", fake_peft(tmp_path / "src" / str(len(registry.versions("tone")))), ON_BASE
        )
    return registry


@pytest.fixture()
def upstream() -> FakeVllm:
    return FakeVllm()


@pytest.fixture()
def client(tmp_path: Path, registry: AdapterRegistry, upstream: FakeVllm) -> Iterator[TestClient]:
    engine = VllmEngine(
        "http://vllm.test",
        "base",
        transport=httpx.MockTransport(upstream),
        resolver=registry_resolver(registry, BASE),
    )
    with TestClient(create_app(settings_for(tmp_path), engine=engine, index=None)) as test_client:
        yield test_client


def test_list_shows_every_version_and_the_newest_manifest(client: TestClient) -> None:
    listed = client.get("/admin/adapters", headers=ADMIN).json()
    assert [(a["name"], a["versions"], a["newest"]) for a in listed] == [("tone", [1, 2], "tone@2")]
    assert listed[0]["manifest"]["rank"] == 8
    assert client.get("/admin/adapters").status_code == 401


def test_load_then_unload_reach_vllm_and_are_audited(
    client: TestClient, upstream: FakeVllm, registry: AdapterRegistry
) -> None:
    response = client.post("/admin/adapters/tone/load", headers=ADMIN)
    assert response.status_code == 200, response.text
    assert response.json() == {"loaded": ["tone@2"]}
    load = [body for path, body in upstream.calls if path == "/v1/load_lora_adapter"]
    assert load == [{"lora_name": "tone@2", "lora_path": str(registry.resolve("tone@2").path)}]
    assert "tone@2" in upstream.loaded
    response = client.post("/admin/adapters/tone@2/unload", headers=ADMIN)
    assert response.json() == {"ref": "tone@2", "unloaded": True}
    assert "tone@2" not in upstream.loaded
    actions = [e["action"] for e in client.get("/admin/audit", headers=ADMIN).json()]
    assert {"load adapter", "unload adapter"} <= set(actions)


def test_an_adapter_registered_on_another_base_is_refused_naming_both(
    client: TestClient, upstream: FakeVllm, registry: AdapterRegistry, tmp_path: Path
) -> None:
    other = {"base_model": "org/other-model", "base_fingerprint": OTHER.as_dict()}
    registry.register("foreign", fake_peft(tmp_path / "src" / "foreign"), other)
    response = client.post("/admin/adapters/foreign/load", headers=ADMIN)
    assert response.status_code == 404, response.text
    message = response.json()["error"]["message"]
    assert "trained on org/other-model (bbbbbbbbbbbb)" in message
    assert "the base model is org/served-model (aaaaaaaaaaaa)" in message
    assert not [body for path, body in upstream.calls if path == "/v1/load_lora_adapter"]


def test_unknown_adapters_and_bare_unloads_are_client_errors(client: TestClient) -> None:
    for path, status in (
        ("/admin/adapters/ghost/load", 404),
        ("/admin/adapters/tone@9/unload", 404),
        ("/admin/adapters/tone/unload", 400),
        ("/admin/adapters/Bad%20Name/load", 404),
    ):
        response = client.post(path, headers=ADMIN)
        assert response.status_code == status, (path, response.text)
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_a_malformed_ref_is_a_400_naming_it_not_a_500(client: TestClient) -> None:
    for ref in ("a@%C2%B2", "tone@1%0A", "tone@99999999999999999999"):
        response = client.post(f"/admin/adapters/{ref}/unload", headers=ADMIN)
        assert response.status_code == 400, (ref, response.text)
        error = response.json()["error"]
        assert error["param"] == "ref" and "invalid adapter" in error["message"]


def test_the_local_engine_refuses_runtime_loading(
    tmp_path: Path, registry: AdapterRegistry
) -> None:
    app = create_app(settings_for(tmp_path), engine=ScriptedEngine(), index=None)
    with TestClient(app) as client:
        response = client.post("/admin/adapters/tone/load", headers=ADMIN)
    assert response.status_code == 400
    assert "loads its adapters at start-up" in response.json()["error"]["message"]
