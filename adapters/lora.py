"""Which layers a LoRA adapts: the base model's own linear layers, or the ones asked for."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from adapters.base_model import default_target_modules, linear_modules


class UnknownTargetModules(ValueError):
    """Target modules the base model has no linear layer for; the message lists what it has."""


def choose_target_modules(model_dir: Path, requested: Sequence[str] = ()) -> tuple[str, ...]:
    """The requested modules (checked against the model), or every linear layer but the head."""
    if not requested:
        return default_target_modules(model_dir)
    available = linear_modules(model_dir)
    unknown = sorted(set(requested) - set(available))
    if unknown:
        raise UnknownTargetModules(
            f"the base model has no linear layer named {', '.join(unknown)};"
            f" it has {', '.join(sorted(available))}"
        )
    return tuple(dict.fromkeys(requested))
