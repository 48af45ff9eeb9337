"""Paths never leave the adapter registry's folder: symlinks in an adapter or in the registry are
refused, names and versions are parsed strictly (a client error, never a traceback), and
concurrent registers of one name each get their own version."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from adapters.registry import AdapterRegistry, RegistryError, parse_ref
from service.cli.main import app as ladder_app

SECRET = "hostname-and-other-secrets"


def peft_folder(folder: Path, rank: Any = 8) -> Path:
    """A minimal PEFT LoRA folder (config and a weights file)."""
    folder.mkdir(parents=True)
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": 16, "target_modules": ["q_proj"]}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    (folder / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    return folder


def every_file(root: Path) -> list[Path]:
    return [Path(parent, name) for parent, _, names in os.walk(root) for name in names]


@pytest.fixture()
def outside(tmp_path: Path) -> Path:
    """A folder outside the registry with a secret in it."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.txt").write_text(SECRET)
    return folder


@pytest.fixture()
def registry(tmp_path: Path) -> AdapterRegistry:
    return AdapterRegistry(tmp_path / "adapters")


def test_a_symlinked_file_or_folder_in_an_adapter_is_refused_and_not_copied(
    tmp_path: Path, outside: Path, registry: AdapterRegistry
) -> None:
    linked_file = peft_folder(tmp_path / "a")
    (linked_file / "tokenizer.json").symlink_to(outside / "secret.txt")
    linked_tree = peft_folder(tmp_path / "b")
    (linked_tree / "extra").symlink_to(outside, target_is_directory=True)
    for source in (linked_file, linked_tree):
        with pytest.raises(RegistryError, match="symlink"):
            registry.register("tone", source, {})
    assert registry.versions("tone") == []
    copied = [
        path for path in every_file(registry.root) if SECRET in path.read_text(errors="ignore")
    ]
    assert copied == [], "nothing outside the adapter was copied in"


def test_a_name_folder_that_is_a_symlink_is_never_written_through(
    tmp_path: Path, outside: Path, registry: AdapterRegistry
) -> None:
    registry.root.mkdir()
    (registry.root / "tone").symlink_to(outside, target_is_directory=True)
    with pytest.raises(RegistryError, match="symlink or outside"):
        registry.register("tone", peft_folder(tmp_path / "a"), {})
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert registry.names() == []


@pytest.mark.parametrize(
    "ref", ["tone\n", "tone@1\n", "a@²", "a@\u0661", "a@", "a@-1", "a@1@2", "a@1e3"]
)
def test_names_and_versions_are_parsed_strictly(ref: str) -> None:
    with pytest.raises(RegistryError, match="invalid adapter"):
        parse_ref(ref)


def test_a_name_with_a_trailing_newline_is_not_registered(
    tmp_path: Path, registry: AdapterRegistry
) -> None:
    with pytest.raises(RegistryError, match="invalid adapter"):
        registry.register("tone\n", peft_folder(tmp_path / "a"), {})
    assert not registry.root.exists() or not any(registry.root.glob("tone*"))


@pytest.mark.parametrize("rank", ["abc", "8", True, 0, -4, 8.0, None])
def test_a_rank_that_is_no_positive_integer_is_refused(
    tmp_path: Path, registry: AdapterRegistry, rank: Any
) -> None:
    with pytest.raises(RegistryError, match="rank r must be a positive integer"):
        registry.register("tone", peft_folder(tmp_path / "a", rank), {})
    assert registry.versions("tone") == []


def test_four_concurrent_registers_of_one_name_get_four_versions(
    tmp_path: Path, registry: AdapterRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fault injection: every register holds its copy until all four have copied, so the copies
    # overlap on any machine load (a shared staging folder collides here).
    overlap = threading.Barrier(4, timeout=30)
    copy = shutil.copytree

    def copy_then_wait(*args: Any, **kwargs: Any) -> Any:
        copied = copy(*args, **kwargs)
        overlap.wait()
        return copied

    monkeypatch.setattr(shutil, "copytree", copy_then_wait)
    sources = [peft_folder(tmp_path / f"src{n}", rank=8 * (n + 1)) for n in range(4)]
    errors: list[BaseException] = []

    def register(source: Path) -> None:
        try:
            registry.register("tone", source, {"origin": source.name})
        except BaseException as error:  # collected, so the test names it
            errors.append(error)

    threads = [threading.Thread(target=register, args=(source,)) for source in sources]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert registry.versions("tone") == [1, 2, 3, 4]
    manifests = [registry.resolve(f"tone@{v}").manifest() for v in (1, 2, 3, 4)]
    assert sorted(m["origin"] for m in manifests) == ["src0", "src1", "src2", "src3"]
    assert all(m["rank"] == 8 * (int(m["origin"][3]) + 1) for m in manifests), "copy matches"
    assert [p.name for p in registry.root.iterdir() if p.name != ".registry.lock"] == ["tone"]


def test_the_cli_refuses_bad_refs_and_ranks_with_exit_2_and_a_message(
    tmp_path: Path, registry: AdapterRegistry
) -> None:
    env = {"LADDER_DATA_DIR": str(tmp_path), "LADDER_BASE_MODEL": str(tmp_path / "no-model")}
    runner = CliRunner()
    for arguments, message in (
        (["adapters", "show", "a@²"], "invalid adapter version"),
        (["adapters", "remove", "tone\n"], "invalid adapter name"),
        (["adapters", "register", "tone", str(peft_folder(tmp_path / "abc", "abc"))], "rank r"),
        (["adapters", "register", "tone", str(peft_folder(tmp_path / "yes", True))], "rank r"),
    ):
        result = runner.invoke(ladder_app, arguments, env=env)
        assert result.exit_code == 2, (arguments, result.output, result.exception)
        assert message in result.output and "Traceback" not in result.output
    assert registry.names() == []
