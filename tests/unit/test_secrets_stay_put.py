"""Secrets stay where they belong: a bad LADDER_DB_URL's password is masked in every message,
the vLLM child gets only the environment it needs, and `ladder eval --url` sends an API key."""

from __future__ import annotations

import json
import traceback
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from service.engines.vllm_server import server_environment
from service.errors import ConfigurationError
from service.experiments.store import migrate, open_database
from service.settings import Settings
from tests.support.experiments import live_server, make_app, make_settings
from tests.support.paths import REPO

PASSWORD = "s3cret-Pa55"
EVAL_KEY = "sk-ladder-eval-0123456789abcdef"


def told(error: BaseException) -> str:
    """Everything a user sees of an error: its message and its whole traceback, causes included."""
    return "".join(traceback.format_exception(error))


@pytest.mark.parametrize(
    "url",
    [
        f"postgres://ladder:{PASSWORD}@127.0.0.1/ladder",  # the dialect is postgresql, not postgres
        f"mysql://ladder:{PASSWORD}@127.0.0.1/ladder",
        f"postgresql+nodriver://ladder:{PASSWORD}@127.0.0.1/ladder",
        f"postgresql+psycopg://ladder:{PASSWORD}@127.0.0.1:notaport/ladder",
        f"postgresql+psycopg://ladder:{PASSWORD}@127.0.0.1:1/ladder",  # nothing listens
        f"postgresql+psycopg://ladder:{PASSWORD.replace('-', '%2D')}@127.0.0.1:1/ladder",
        f"ladder:{PASSWORD}",
    ],
)
def test_a_bad_database_url_never_shows_its_password(url: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        migrate(open_database(url, busy_timeout_s=2))
    assert PASSWORD not in told(refused.value)
    assert "LADDER_DB_URL" in str(refused.value) or "cannot migrate" in str(refused.value)


def test_the_service_refuses_to_start_on_a_bad_url_without_showing_the_password(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path, f"postgres://ladder:{PASSWORD}@127.0.0.1/ladder")
    with pytest.raises(ConfigurationError) as refused, TestClient(make_app(settings)):
        pass
    assert "ladder:***@127.0.0.1" in str(refused.value)
    assert PASSWORD not in told(refused.value)


def test_the_vllm_child_gets_what_it_needs_and_none_of_ladders_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = {
        "LADDER_ADMIN_TOKEN": "admin-token-0123456789",
        "LADDER_API_KEYS": "sk-ladder-client-key",
        "LADDER_DB_URL": f"postgresql+psycopg://ladder:{PASSWORD}@db/ladder",
        "LADDER_REDIS_URL": f"redis://:{PASSWORD}@redis:6379/0",
        "OPENAI_API_KEY": "sk-openai",
        "HF_TOKEN": "hf_token",
        "AWS_SECRET_ACCESS_KEY": "aws-secret",
    }
    needed = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LC_ALL": "C.UTF-8",
        "VLLM_CPU_OMP_THREADS_BIND": "0-1",
        "OMP_NUM_THREADS": "2",
    }
    for name, value in {**secrets, **needed}.items():
        monkeypatch.setenv(name, value)
    environment = server_environment(Settings(data_dir=tmp_path))
    assert not set(secrets) & set(environment), "no secret reaches the child"
    assert all(value not in environment.values() for value in secrets.values())
    assert {name: environment[name] for name in needed} == needed
    assert environment["HF_HUB_OFFLINE"] == "1"
    assert environment["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"


def test_ladder_eval_url_sends_the_api_key_of_a_keyed_server(tmp_path: Path) -> None:
    from service.cli.main import app as ladder_app

    server = make_app(make_settings(tmp_path, f"sqlite:///{tmp_path / 'x.db'}", api_keys=EVAL_KEY))
    out = tmp_path / "report"
    arguments = ["eval", "--task", "support-triage", "--configs", "plain", "--limit", "2"]
    arguments += ["--tasks-dir", str(REPO / "corpus" / "tasks"), "--out-dir", str(out)]
    env = {"LADDER_DATA_DIR": str(tmp_path / "client"), "LADDER_EVAL_API_KEY": None}
    runner = CliRunner()
    with live_server(server) as base:
        arguments += ["--url", base, "--no-record", "--json", str(tmp_path / "results.json")]
        keyless = runner.invoke(ladder_app, arguments, env=env)
        assert keyless.exit_code == 2, (keyless.output, keyless.exception)
        assert "API key" in keyless.output and "LADDER_EVAL_API_KEY" in keyless.output
        keyed = runner.invoke(ladder_app, arguments, env={**env, "LADDER_EVAL_API_KEY": EVAL_KEY})
        assert keyed.exit_code == 0, (keyed.output, keyed.exception)
        flagged = runner.invoke(ladder_app, [*arguments, "--api-key", EVAL_KEY], env=env)
        assert flagged.exit_code == 0, (flagged.output, flagged.exception)
    rows = json.loads((tmp_path / "results.json").read_text())["configurations"]
    assert [(row["name"], row["n"]) for row in rows] == [("plain", 2)]
