"""GGUF files into transformers folders: converted once, cached by the file's content hash."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from service.model_loading import MODEL_LOAD_LOCK

MANIFEST_NAME = "ladder-conversion.json"
PARTIAL_PREFIX = ".partial-"

Progress = Callable[[str], None]


class GgufError(ValueError):
    """A GGUF file that cannot be converted."""


@dataclass(frozen=True)
class GgufSource:
    """The GGUF file a conversion starts from, identified by content."""

    file_name: str
    sha256: str
    size: int


def describe_gguf(path: Path) -> GgufSource:
    """Hashes a GGUF file so a conversion can be tied to its exact source."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return GgufSource(file_name=path.name, sha256=digest.hexdigest(), size=path.stat().st_size)


def read_manifest(folder: Path) -> dict[str, object] | None:
    """The conversion manifest of a folder, or None when it has none or it is unreadable."""
    try:
        manifest = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def convert_gguf(
    gguf_path: Path, target: Path, model_id: str, progress: Progress | None = None
) -> Path:
    """The converted folder `target`, converting the GGUF first unless a finished conversion of
    exactly this file is there. A failed conversion leaves nothing behind."""
    report = progress or (lambda _message: None)
    source = describe_gguf(gguf_path)
    cache_dir = target.parent
    _remove_abandoned_partials(cache_dir)
    if _is_converted(target, source):
        report(f"base model ready at {target}")
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    prefix = f"{PARTIAL_PREFIX}{os.getpid()}-"
    partial = Path(tempfile.mkdtemp(prefix=prefix, dir=cache_dir))
    partial.chmod(0o755)  # mkdtemp makes it private; the published folder is an ordinary one
    try:
        started = time.monotonic()
        _convert(gguf_path, partial, report)
        _write_manifest(partial, source, model_id)
        _publish(partial, target, source)
        report(f"converted {source.file_name} in {time.monotonic() - started:.1f}s into {target}")
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def _is_converted(folder: Path, source: GgufSource) -> bool:
    """Tells whether folder holds a finished conversion of exactly this source."""
    manifest = read_manifest(folder)
    return manifest is not None and manifest.get("source") == asdict(source)


def _write_manifest(folder: Path, source: GgufSource, model_id: str) -> None:
    """Writes the manifest last, so only a complete conversion carries one."""
    import transformers

    manifest = {
        "base_model_id": model_id,
        "source": asdict(source),
        "transformers_version": transformers.__version__,
        "dtype": "float32",
    }
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def _convert(gguf_path: Path, out_dir: Path, report: Progress) -> None:
    """Dequantizes the GGUF into a float32 transformers folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    report(f"converting {gguf_path.name} (dequantizing to float32)")
    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        with MODEL_LOAD_LOCK:
            model = AutoModelForCausalLM.from_pretrained(
                folder, gguf_file=name, dtype=torch.float32
            )
    except Exception as error:  # transformers raises many kinds for a file it cannot read
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        raise GgufError(f"transformers cannot read the GGUF file {gguf_path}: {reason}") from error
    # transformers 5 marks GGUF-loaded models as quantized and refuses or mis-saves them otherwise.
    model.hf_quantizer = None  # type: ignore[assignment]
    model.config.quantization_config = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    report("saving converted weights")
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def _remove_abandoned_partials(cache_dir: Path) -> None:
    """Deletes half-made conversions left by processes that were killed mid-way."""
    if not cache_dir.is_dir():
        return
    for partial in cache_dir.glob(f"{PARTIAL_PREFIX}*"):
        owner = partial.name.removeprefix(PARTIAL_PREFIX).split("-", 1)[0]
        if owner.isdigit() and not _process_alive(int(owner)):
            shutil.rmtree(partial, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _publish(partial: Path, target: Path, source: GgufSource) -> None:
    """Moves a finished conversion into place, replacing a stale one."""
    if target.exists():
        if _is_converted(target, source):
            return  # another process finished the same conversion first
        stale = target.with_name(f"{PARTIAL_PREFIX}{os.getpid()}-stale")
        os.replace(target, stale)
        shutil.rmtree(stale, ignore_errors=True)
    try:
        os.replace(partial, target)
    except OSError:
        if not _is_converted(target, source):
            raise
