"""The local engine's model: folders checked at start-up, the model and its LoRA adapters loaded
once into one PeftModel, and one adapter (or none) active per generation."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.errors import ConfigurationError
from service.model_loading import MODEL_LOAD_LOCK


@dataclass
class LoadedModel:
    """The model and the internal names of its adapters."""

    model: Any
    adapter_names: dict[str, str]


def check_folders(model_dir: Path, adapters: Mapping[str, Path]) -> None:
    """Refuses a missing model or adapter folder at start-up rather than on first use."""
    if not (model_dir / "config.json").is_file():
        raise ConfigurationError(f"no converted model at {model_dir}")
    for name, folder in adapters.items():
        if not (folder / "adapter_config.json").is_file():
            raise ConfigurationError(f"adapter {name!r}: no PEFT adapter at {folder}")


def load_model(model_dir: Path, adapters: Mapping[str, Path]) -> LoadedModel:
    """Loads the float32 model once and every adapter into one PeftModel."""
    import torch
    from transformers import AutoModelForCausalLM

    # Internal names, because PEFT keeps adapters in module dicts where dots are not allowed.
    names = {name: f"adapter_{index}" for index, name in enumerate(adapters)}
    with MODEL_LOAD_LOCK:
        model: Any = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
        if adapters:
            from peft import PeftModel

            first, *rest = adapters
            model = PeftModel.from_pretrained(
                model, str(adapters[first]), adapter_name=names[first]
            )
            for name in rest:
                model.load_adapter(str(adapters[name]), adapter_name=names[name])
    model.eval()
    return LoadedModel(model=model, adapter_names=names)


@contextlib.contextmanager
def adapter_selected(loaded: LoadedModel, adapter: str | None) -> Iterator[None]:
    """Activates one adapter, or the bare base model when adapter is None."""
    if not loaded.adapter_names:
        yield
    elif adapter is None:
        with loaded.model.disable_adapter():
            yield
    else:
        loaded.model.set_adapter(loaded.adapter_names[adapter])
        yield
