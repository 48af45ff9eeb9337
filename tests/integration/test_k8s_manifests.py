"""The Kubernetes manifests (deploy/k8s) render with kustomize, validate against the API's schemas
and keep their promises: only ladder reaches vLLM, Chroma and the databases; keys come from a
required Secret; one setting names the base model; GPUs in the gpu overlays."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.support.paths import REPO

K8S = REPO / "deploy" / "k8s"
GPU_OVERLAYS = ("gpu", "gpu-external-data")
OVERLAYS = ("cpu-demo", *GPU_OVERLAYS)
IN_CLUSTER_DATA = {"cpu-demo", "gpu"}
# The oldest Kubernetes still common in managed clusters, and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.29", kubernetes_validate.latest_version())
BACKEND_PORTS = {"vllm": 8000, "chroma": 8000, "postgres": 5432, "redis": 6379}
SECRET = "ladder-secrets"
SECRET_KEYS = {
    "LADDER_API_KEYS": "api-keys",
    "LADDER_ADMIN_TOKEN": "admin-token",
    "LADDER_METRICS_TOKEN": "metrics-token",
    "LADDER_DB_URL": "db-url",
    "LADDER_REDIS_URL": "redis-url",
}
NAME = "app.kubernetes.io/name"
GPU = "nvidia.com/gpu"

Doc = dict[str, Any]


@functools.cache
def rendered(overlay: str) -> tuple[Doc, ...]:
    """`kubectl kustomize deploy/k8s/overlays/<overlay>`, one dict per document."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: the manifests are rendered by `kubectl kustomize`")
    result = subprocess.run(
        ["kubectl", "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def of_kind(docs: tuple[Doc, ...], kind: str) -> list[Doc]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: tuple[Doc, ...], kind: str, name: str) -> Doc:
    (doc,) = (d for d in of_kind(docs, kind) if d["metadata"]["name"] == name)
    return doc


def pod_templates(docs: tuple[Doc, ...]) -> list[Doc]:
    """The pod template of every workload."""
    kinds = ("Deployment", "StatefulSet", "Job")
    return [doc["spec"]["template"] for doc in docs if doc["kind"] in kinds]


def labels_of(template: Doc) -> dict[str, str]:
    return dict(template["metadata"]["labels"])


def selects(selector: Doc, labels: dict[str, str]) -> bool:
    """A label selector (matchLabels only: the manifests use nothing else) against pod labels."""
    assert set(selector) <= {"matchLabels"}, selector
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def container(template: Doc, name: str) -> Doc:
    (found,) = (c for c in template["spec"]["containers"] if c["name"] == name)
    return found


def every_container(docs: tuple[Doc, ...]) -> list[Doc]:
    return [
        c
        for template in pod_templates(docs)
        for c in template["spec"].get("initContainers", []) + template["spec"]["containers"]
    ]


def env_of(c: Doc) -> dict[str, Doc]:
    return {entry["name"]: entry for entry in c.get("env", [])}


def workload_template(docs: tuple[Doc, ...], kind: str, name: str) -> Doc:
    template: Doc = one(docs, kind, name)["spec"]["template"]
    return template


def ladder_config(docs: tuple[Doc, ...]) -> Doc:
    """The ConfigMap the ladder container reads its settings from."""
    (source,) = container(workload_template(docs, "Deployment", "ladder"), "ladder")["envFrom"]
    data: Doc = one(docs, "ConfigMap", source["configMapRef"]["name"])["data"]
    return data


def option(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_document_validates(overlay: str, version: str) -> None:
    failures = []
    for doc in rendered(overlay):
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as e:
            path = ".".join(str(p) for p in getattr(e, "path", ()))
            failures.append(f"{doc['kind']}/{doc['metadata']['name']} {path}: {e.message}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_ladder_reaches_vllm_chroma_and_the_databases(overlay: str) -> None:
    docs = rendered(overlay)
    policies = [p["spec"] for p in of_kind(docs, "NetworkPolicy")]
    assert any(
        p["podSelector"] == {} and p["policyTypes"] == ["Ingress"] and not p.get("ingress")
        for p in policies
    ), "no default-deny ingress policy"
    templates = pod_templates(docs)
    server = labels_of(workload_template(docs, "Deployment", "ladder"))
    ingest = labels_of(workload_template(docs, "Job", "ladder-ingest"))
    backends = [t for t in templates if labels_of(t)[NAME] in BACKEND_PORTS]
    expected = {"vllm", "chroma"} | ({"postgres", "redis"} if overlay in IN_CLUSTER_DATA else set())
    assert {labels_of(t)[NAME] for t in backends} == expected
    for backend in backends:
        name = labels_of(backend)[NAME]
        rules = [
            rule
            for p in policies
            if selects(p["podSelector"], labels_of(backend))
            for rule in p.get("ingress", [])
        ]
        assert rules, f"nothing may reach {name}, ladder included"
        peers = []
        for rule in rules:
            assert rule.get("from"), f"{name} takes traffic from anyone"
            assert [port["port"] for port in rule["ports"]] == [BACKEND_PORTS[name]]
            for peer in rule["from"]:
                assert set(peer) == {"podSelector"}, f"{name} from {peer}"
                assert peer["podSelector"].get("matchLabels", {}).get(NAME) == "ladder", peer
                peers.append(peer["podSelector"])
        allowed = [t for t in templates if any(selects(s, labels_of(t)) for s in peers)]
        assert all(labels_of(t)[NAME] == "ladder" for t in allowed), name
        assert server in [labels_of(t) for t in allowed], f"ladder cannot reach {name}"
        assert (ingest in [labels_of(t) for t in allowed]) == (name == "chroma"), name
    assert any(
        selects(p["podSelector"], server) and any("from" not in r for r in p.get("ingress", []))
        for p in policies
    ), "nothing may reach ladder"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ladder_scales_with_an_autoscaler_and_a_disruption_budget(overlay: str) -> None:
    docs = rendered(overlay)
    deployment = one(docs, "Deployment", "ladder")
    assert "replicas" not in deployment["spec"], "an apply would undo the autoscaler's count"
    (hpa,) = (h["spec"] for h in of_kind(docs, "HorizontalPodAutoscaler"))
    target = hpa["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "ladder")
    assert 1 <= hpa["minReplicas"] < hpa["maxReplicas"]
    assert [m["resource"]["name"] for m in hpa["metrics"]] == ["cpu"]
    ladder = container(deployment["spec"]["template"], "ladder")
    assert ladder["resources"]["requests"]["cpu"], "CPU utilisation needs a CPU request"
    budgets = [
        b["spec"]
        for b in of_kind(docs, "PodDisruptionBudget")
        if selects(b["spec"]["selector"], labels_of(deployment["spec"]["template"]))
    ]
    assert len(budgets) == 1
    assert budgets[0].get("maxUnavailable") == 1
    ingest = workload_template(docs, "Job", "ladder-ingest")
    assert not selects(budgets[0]["selector"], labels_of(ingest))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keys_and_tokens_come_from_a_required_secret_with_no_value_committed(
    overlay: str,
) -> None:
    docs = rendered(overlay)
    assert not of_kind(docs, "Secret"), "a Secret's values would be committed"
    for c in every_container(docs):
        for entry in c.get("env", []):
            ref = entry.get("valueFrom", {}).get("secretKeyRef")
            assert ref is None or not ref.get("optional"), f"{c['name']}: {entry}"
        for source in c.get("envFrom", []):
            assert not source.get("secretRef", {}).get("optional"), c["name"]
    ladder = env_of(container(workload_template(docs, "Deployment", "ladder"), "ladder"))
    for name, key in SECRET_KEYS.items():
        assert ladder[name]["valueFrom"]["secretKeyRef"] == {"name": SECRET, "key": key}
    for config in of_kind(docs, "ConfigMap"):
        assert not set(SECRET_KEYS) & set(config["data"]), "a default for a secret"
    assert ladder_config(docs)["LADDER_ALLOW_OPEN"] == "false"
    if overlay in IN_CLUSTER_DATA:
        postgres = env_of(container(workload_template(docs, "StatefulSet", "postgres"), "postgres"))
        ref = postgres["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": SECRET, "key": "postgres-password"}


@pytest.mark.parametrize("missing", [None, *SECRET_KEYS])
def test_ladder_refuses_to_start_with_an_empty_secret_value(
    missing: str | None, tmp_path: Path
) -> None:
    """The container's own command, run by sh, with a stand-in `ladder` on the PATH."""
    ladder = container(workload_template(rendered("gpu"), "Deployment", "ladder"), "ladder")
    stand_in = tmp_path / "ladder"
    stand_in.write_text('#!/bin/sh\necho "started: ladder $*"\n')
    stand_in.chmod(0o755)
    env = {"PATH": f"{tmp_path}:{os.environ['PATH']}"}
    env |= {name: "" if name == missing else "set" for name in SECRET_KEYS}
    result = subprocess.run(
        ladder["command"], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    if missing is None:
        assert (result.returncode, result.stdout) == (0, "started: ladder serve\n")
    else:
        assert result.returncode == 2
        assert result.stdout == ""
        assert SECRET_KEYS[missing] in result.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_vllm_replica_is_listed_by_its_stable_name(overlay: str) -> None:
    docs = rendered(overlay)
    vllm = one(docs, "StatefulSet", "vllm")
    service = one(docs, "Service", vllm["spec"]["serviceName"])["spec"]
    assert service["clusterIP"] == "None"
    assert selects({"matchLabels": service["selector"]}, labels_of(vllm["spec"]["template"]))
    server = container(vllm["spec"]["template"], "vllm")
    port = int(option(server["args"], "--port"))
    assert [p["containerPort"] for p in server["ports"]] == [port] == [service["ports"][0]["port"]]
    replicas = vllm["spec"]["replicas"]
    listed = ladder_config(docs)["LADDER_VLLM_URLS"].split(",")
    name = vllm["spec"]["serviceName"]
    assert listed == [f"http://vllm-{i}.{name}:{port}" for i in range(replicas)]
    assert replicas == (2 if overlay in GPU_OVERLAYS else 1)
    limits = server.get("resources", {}).get("limits", {})
    if overlay in GPU_OVERLAYS:
        assert limits.get(GPU) == server["resources"]["requests"].get(GPU) == "1"
        assert option(server["args"], "--gpu-memory-utilization")
        assert ladder_config(docs)["LADDER_VLLM_LEAK_GUARD"] == "false"
    else:
        assert GPU not in limits
        assert ladder_config(docs)["LADDER_VLLM_LEAK_GUARD"] == "true"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_ask_vllm_and_ladder_for_health(overlay: str) -> None:
    docs = rendered(overlay)
    vllm = container(workload_template(docs, "StatefulSet", "vllm"), "vllm")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert vllm[probe]["httpGet"] == {"path": "/health", "port": "http"}
    ladder = container(workload_template(docs, "Deployment", "ladder"), "ladder")
    paths = {p: ladder[p]["httpGet"]["path"] for p in ("startupProbe", "livenessProbe")}
    assert paths == {"startupProbe": "/health", "livenessProbe": "/health"}
    assert ladder["readinessProbe"]["httpGet"]["path"] == "/ready"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        # Allowed by LADDER_ALLOWED_HOSTS whatever it lists (loopback names always are).
        assert ladder[probe]["httpGet"]["httpHeaders"] == [{"name": "Host", "value": "localhost"}]
    assert [p["name"] for p in ladder["ports"] + vllm["ports"]] == ["http", "http"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_one_setting_names_the_base_model_for_vllm_and_ladder(overlay: str) -> None:
    docs = rendered(overlay)
    config_name = one(docs, "Deployment", "ladder")["spec"]["template"]["spec"]["containers"][0][
        "envFrom"
    ][0]["configMapRef"]["name"]
    config = ladder_config(docs)
    vllm = container(workload_template(docs, "StatefulSet", "vllm"), "vllm")
    vllm_env = env_of(vllm)
    for flag, setting in {
        "--model": "LADDER_BASE_MODEL",
        "--max-model-len": "LADDER_CONTEXT_WINDOW",
        "--served-model-name": "LADDER_VLLM_MODEL",
        "--max-loras": "LADDER_VLLM_MAX_LORAS",
        "--max-lora-rank": "LADDER_MAX_LORA_RANK",
    }.items():
        assert option(vllm["args"], flag) == f"$({setting})"
        ref = vllm_env[setting]["valueFrom"]["configMapKeyRef"]
        assert ref == {"name": config_name, "key": setting}
    assert "--enable-lora" in vllm["args"]
    assert vllm_env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"]["value"] == "True"
    expected_model = "Qwen/Qwen2.5-7B-Instruct" if overlay in GPU_OVERLAYS else "HuggingFaceTB/"
    assert config["LADDER_BASE_MODEL"].startswith(expected_model)
    # The adapters and the model cache: the same claims at the same paths in both.
    ladder_template = workload_template(docs, "Deployment", "ladder")
    vllm_template = workload_template(docs, "StatefulSet", "vllm")
    ladder_mounts, vllm_mounts = mounts(ladder_template), mounts(vllm_template)
    adapters = config["LADDER_ADAPTERS_DIR"]
    assert ladder_mounts[adapters] == vllm_mounts[adapters] == ("adapters", None)
    assert ladder_mounts["/models"] == vllm_mounts["/models"]
    assert vllm_env["HF_HOME"]["valueFrom"]["configMapKeyRef"]["key"] == "HF_HOME"
    assert config["HF_HOME"].startswith("/models/")
    identity = f"{config['LADDER_DATA_DIR']}/vllm"
    if config["LADDER_VLLM_LEAK_GUARD"] == "true":
        # The leak guard's zero adapter, built by ladder, read by vLLM at the same path.
        assert ladder_mounts[identity] == vllm_mounts[identity]
    claims = {claim for claim, _ in ladder_mounts.values()}
    for name in claims - {None}:
        access = one(docs, "PersistentVolumeClaim", name)["spec"]["accessModes"]
        assert access == (["ReadWriteOnce"] if overlay == "cpu-demo" else ["ReadWriteMany"])


def mounts(template: Doc) -> dict[str, tuple[str | None, str | None]]:
    """Mount path -> (claim or None, subPath) of a pod's first container."""
    claims = {
        v["name"]: v.get("persistentVolumeClaim", {}).get("claimName")
        for v in template["spec"]["volumes"]
    }
    return {
        m["mountPath"]: (claims[m["name"]], m.get("subPath"))
        for m in template["spec"]["containers"][0]["volumeMounts"]
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_ingest_job_indexes_the_shipped_docs_into_chroma(overlay: str) -> None:
    docs = rendered(overlay)
    ingest = container(workload_template(docs, "Job", "ladder-ingest"), "ingest")
    assert ingest["command"] == ["ladder", "ingest", "corpus/docs", "--collection", "docs"]
    assert ingest["workingDir"] == "/app"
    assert (
        ingest["envFrom"]
        == container(workload_template(docs, "Deployment", "ladder"), "ladder")["envFrom"]
    )
    assert ladder_config(docs)["LADDER_CHROMA_URL"] == "http://chroma:8000"
