"""The LoRA registry: one folder per adapter version, `ROOT/<name>/<version>/`, with a manifest."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from adapters.base_model import BaseModel

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")  # always fullmatch: `$` lets a newline through
_VERSION = re.compile(r"[0-9]{1,9}")  # ASCII digits only: "²".isdigit() but int("²") fails
MANIFEST = "manifest.json"
ADAPTER_FILES = ("adapter_config.json",)
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
_MAX_HEADER = 100_000_000  # safetensors' own limit on a header


class RegistryError(ValueError):
    """A name, version or adapter folder the registry refuses."""


class InvalidRef(RegistryError):
    """A ref that is not `name` or `name@version` at all (a client error, not a missing one)."""


@dataclass(frozen=True)
class AdapterVersion:
    """One registered version of an adapter."""

    name: str
    version: int
    path: Path

    @property
    def ref(self) -> str:
        """`name@version`, how engines address this exact version."""
        return f"{self.name}@{self.version}"

    def manifest(self) -> dict[str, Any]:
        """The version's manifest."""
        return dict(json.loads((self.path / MANIFEST).read_text(encoding="utf-8")))


def parse_ref(ref: str) -> tuple[str, int | None]:
    """`name` or `name@version` -> (name, version or None)."""
    name, at, version = ref.partition("@")
    if not _NAME.fullmatch(name):
        raise InvalidRef(f"invalid adapter name {name!r}: use [a-z0-9._-], at most 64")
    if not at:
        return name, None
    if not _VERSION.fullmatch(version):
        raise InvalidRef(f"invalid adapter version {version!r} in {ref!r}: use 1 to 9 digits")
    return name, int(version)


def lora_rank(config: Mapping[str, Any], where: object) -> int:
    """An adapter config's rank `r`: a positive integer (not a string, float or boolean)."""
    rank = config.get("r")
    if type(rank) is not int or rank < 1:
        raise RegistryError(f"{where}: rank r must be a positive integer, not {rank!r}")
    return rank


class AdapterRegistry:
    """Adapters on disk; paths never leave the registry's root: a name or version folder that
    is a symlink, or resolves outside the root, is refused."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def names(self) -> list[str]:
        """Every adapter with at least one version."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if _NAME.fullmatch(p.name) and not p.is_symlink() and self.versions(p.name)
        )

    def versions(self, name: str) -> list[int]:
        """The name's versions, oldest first."""
        folder = self._inside(self.root / parse_ref(name)[0])
        if not folder.is_dir():
            return []
        return sorted(
            int(p.name)
            for p in folder.iterdir()
            if _VERSION.fullmatch(p.name) and not p.is_symlink() and (p / MANIFEST).is_file()
        )

    def resolve(self, ref: str) -> AdapterVersion:
        """The version a ref names; a bare name means its newest version."""
        name, version = parse_ref(ref)
        versions = self.versions(name)
        if not versions:
            raise RegistryError(f"no adapter named {name!r}")
        chosen = versions[-1] if version is None else version
        if chosen not in versions:
            raise RegistryError(f"adapter {name!r} has no version {chosen}")
        return AdapterVersion(name, chosen, self._inside(self.root / name / str(chosen)))

    def register(
        self,
        name: str,
        source: Path,
        manifest: dict[str, Any],
        *,
        base: BaseModel | None = None,
    ) -> AdapterVersion:
        """Copies a PEFT adapter folder in as the name's next version; with base, the manifest
        records that base model's name and fingerprint (what `check_fits` compares).

        The copy is staged in a folder of its own and renamed into place under the registry's
        lock, so concurrent registers of one name get consecutive versions."""
        name, asked = parse_ref(name)
        if asked is not None:
            raise InvalidRef(f"register takes a name, not {name}@{asked}: versions are counted")
        config = read_adapter_config(source)
        fitted = {} if base is None else {"base_fingerprint": base.fingerprint.as_dict()}
        manifest = {
            "rank": config.get("r"),
            "alpha": config.get("lora_alpha"),
            "target_modules": sorted(config.get("target_modules") or []),
            "base_model": config.get("base_model_name_or_path") if base is None else base.source,
            **fitted,
            **manifest,
        }
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".staging", dir=self.root))
        try:
            # Links are copied as links and refused again: one made after the check above
            # must not be followed either.
            copy = shutil.ignore_patterns(MANIFEST)
            shutil.copytree(source, staging / "copy", symlinks=True, ignore=copy)
            _check_plain_files(staging / "copy")
            with self._locked():
                folder = self._inside(self.root / name)
                folder.mkdir(exist_ok=True)
                taken = [int(p.name) for p in folder.iterdir() if _VERSION.fullmatch(p.name)]
                version = max(taken, default=0) + 1
                created = datetime.now(UTC).isoformat()
                record = {"name": name, "version": version, "created_at": created}
                text = json.dumps({**manifest, **record}, indent=2) + "\n"
                (staging / "copy" / MANIFEST).write_text(text, encoding="utf-8")
                (staging / "copy").rename(folder / str(version))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return AdapterVersion(name, version, folder / str(version))

    def remove(self, ref: str) -> list[AdapterVersion]:
        """Deletes one version (`name@version`) or every version of a name."""
        name, version = parse_ref(ref)
        with self._locked():
            versions = self.versions(name)
            doomed = [self.resolve(f"{name}@{v}") for v in versions if version in (None, v)]
            if not doomed:
                raise RegistryError(f"no adapter {ref!r}")
            for adapter in doomed:
                shutil.rmtree(adapter.path)
            folder = self.root / name
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        return doomed

    def record(self, ref: str, key: str, value: Any) -> None:
        """Stores a result (e.g. an evaluation) in a version's manifest, atomically."""
        adapter = self.resolve(ref)
        manifest = adapter.manifest()
        manifest[key] = value
        temporary = adapter.path / f".{MANIFEST}.tmp"
        temporary.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        temporary.replace(adapter.path / MANIFEST)

    def _inside(self, path: Path) -> Path:
        """The path, when it is no symlink and resolves inside the root; else RegistryError."""
        if path.is_symlink() or not path.resolve().is_relative_to(self.root.resolve()):
            raise RegistryError(f"{path} is a symlink or outside the adapters folder")
        return path

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """The registry's lock: one process at a time numbers, renames or removes versions."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".registry.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield


def read_adapter_config(folder: Path) -> dict[str, Any]:
    """A PEFT adapter folder's adapter_config.json, or a RegistryError saying what is missing
    or refused (a symlink or special file anywhere in it, a rank that is no positive integer)."""
    if not folder.is_dir():
        raise RegistryError(f"{folder} is not a folder")
    _check_plain_files(folder)
    config_file = folder / "adapter_config.json"
    if not config_file.is_file():
        raise RegistryError(f"{folder} is not a PEFT adapter folder (no adapter_config.json)")
    if not any((folder / weights).is_file() for weights in WEIGHT_FILES):
        raise RegistryError(f"{folder} has no adapter weights ({' or '.join(WEIGHT_FILES)})")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise RegistryError(f"{config_file} is not valid JSON: {error}") from error
    if not isinstance(config, dict):
        raise RegistryError(f"{config_file} is not a JSON object")
    if config.get("peft_type") != "LORA":
        raise RegistryError(f"{folder} is a {config.get('peft_type')} adapter, not LoRA")
    lora_rank(config, config_file)
    return dict(config)


def _check_plain_files(folder: Path) -> None:
    """RegistryError when anything under folder is a symlink or neither file nor folder: a link
    would be copied as the content it points to (a secret, a whole outside tree)."""
    for parent, folders, files in os.walk(folder):
        for entry in (*folders, *files):
            path = Path(parent, entry)
            if path.is_symlink():
                raise RegistryError(
                    f"{path} is a symlink; adapter folders must hold plain files (`cp -rL` one)"
                )
            if not (path.is_dir() or path.is_file()):
                raise RegistryError(f"{path} is not a regular file")


def fits(manifest: dict[str, Any], base: BaseModel) -> bool:
    """Whether an adapter's manifest says it was trained on this base model: by fingerprint when
    it records one, else (adapters registered before fingerprints) by the base model's name."""
    recorded = manifest.get("base_fingerprint")
    if isinstance(recorded, dict):
        return recorded.get("files_sha256") == base.fingerprint.files_sha256
    claimed = str(manifest.get("base_model") or "")
    return _model_name(claimed) == _model_name(base.source)


def check_fits(adapter: AdapterVersion, base: BaseModel) -> None:
    """A RegistryError naming both models when the adapter was trained on another base model."""
    manifest = adapter.manifest()
    if not fits(manifest, base):
        trained_on = manifest.get("base_model") or "an unnamed model"
        recorded = manifest.get("base_fingerprint")
        if isinstance(recorded, dict):
            trained_on = f"{trained_on} ({str(recorded.get('files_sha256', ''))[:12]})"
        raise RegistryError(
            f"adapter {adapter.ref} was trained on {trained_on}, but the base model is"
            f" {base.source} ({base.fingerprint.files_sha256[:12]})"
        )


def _model_name(source: str) -> str:
    return source.rstrip("/").split("/")[-1].lower()


def validate_foreign(
    folder: Path, base: BaseModel, max_rank: int, linear: Mapping[str, tuple[int, int]]
) -> dict[str, Any]:
    """Checks an adapter made elsewhere fits the configured base model (its name, the modules it
    targets, the shapes of its weights; linear: the base's layers, from `linear_modules`) and the
    server's rank limit. Every refusal names both models."""
    config = read_adapter_config(folder)
    claimed = str(config.get("base_model_name_or_path") or "")
    mismatch = f"adapter was trained on {claimed or 'an unnamed model'!r}, but the base model is"
    mismatch += f" {base.describe()}"
    if _model_name(claimed) != _model_name(base.source):
        raise RegistryError(mismatch)
    rank = lora_rank(config, folder)
    if rank > max_rank:
        raise RegistryError(f"adapter rank {rank} is outside 1..{max_rank} (the server's max)")
    targets = config.get("target_modules") or []
    unknown = sorted(set(targets) - set(linear)) if isinstance(targets, list) else []
    if unknown:
        raise RegistryError(f"{mismatch}: it targets modules the base lacks: {unknown}")
    wrong = _misfit_weights(folder / WEIGHT_FILES[0], linear)
    if wrong:
        raise RegistryError(f"{mismatch}: its weights do not fit the base's layers ({wrong})")
    return config


def _misfit_weights(weights: Path, linear: Mapping[str, tuple[int, int]]) -> str:
    """The first LoRA weight whose shape disagrees with the base's layer, described ('' when all
    fit). lora_A is (rank, in features), lora_B (out features, rank); the safetensors header says,
    so no tensor is read. A .bin adapter (no header to read) is not checked."""
    if not weights.is_file():
        return ""
    for key, shape in _safetensors_shapes(weights).items():
        module, _, kind = key.rpartition(".lora_")
        layer = linear.get(module.rsplit(".", 1)[-1])
        if layer is None or len(shape) != 2:
            continue
        if kind.startswith("A.") and shape[1] != layer[0]:
            return f"{key} reads {shape[1]} features, the base's layer {layer[0]}"
        if kind.startswith("B.") and shape[0] != layer[1]:
            return f"{key} writes {shape[0]} features, the base's layer {layer[1]}"
    return ""


def _safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor shapes from a safetensors file's header: an 8-byte length, then JSON."""
    with path.open("rb") as file:
        size = int.from_bytes(file.read(8), "little")
        if not 0 < size <= _MAX_HEADER:
            raise RegistryError(f"{path} is not a safetensors file")
        try:
            header = json.loads(file.read(size))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise RegistryError(f"{path} is not a safetensors file: {error}") from error
    if not isinstance(header, dict):
        raise RegistryError(f"{path} is not a safetensors file")
    return {
        key: list(entry.get("shape") or [])
        for key, entry in header.items()
        if key != "__metadata__" and isinstance(entry, dict)
    }
