"""Training checkpoints: one file in a folder, replaced atomically, so a run killed at any moment
(SIGKILL included) leaves either the previous checkpoint or the new one, never half of one.

A checkpoint carries a fingerprint of what the run trains (options, examples, base model); a run
resumes only from a checkpoint with its own fingerprint, and overwrites any other.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from adapters.data import Example

CHECKPOINT_FILE = "checkpoint.pt"
# Options that change how a run is carried out, not what it computes.
UNFINGERPRINTED_OPTIONS = ("threads", "checkpoint_every")


def run_fingerprint(
    options: Mapping[str, Any],
    data_sha256: str,
    train: Sequence[Example],
    validation: Sequence[Example],
    base_fingerprint: Mapping[str, Any],
) -> str:
    """A hash of everything a run's result depends on: its options, its data file and the
    examples made of it (replay mixed in), and the base model."""
    material = {
        "options": {k: v for k, v in options.items() if k not in UNFINGERPRINTED_OPTIONS},
        "data_sha256": data_sha256,
        "train": [list(example.messages) for example in train],
        "validation": [list(example.messages) for example in validation],
        "base": dict(base_fingerprint),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=list).encode()).hexdigest()


class Checkpoints:
    """The checkpoint of one run, kept as folder/checkpoint.pt."""

    def __init__(self, folder: Path, fingerprint: str) -> None:
        self.folder = folder
        self.fingerprint = fingerprint

    @property
    def path(self) -> Path:
        """The checkpoint file."""
        return self.folder / CHECKPOINT_FILE

    def load(self) -> dict[str, Any] | None:
        """The saved state when the folder holds this run's checkpoint; None when it holds none,
        another run's, or one that cannot be read."""
        import torch

        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception:  # a file from elsewhere or a torch that cannot read it: start afresh
            return None
        if not isinstance(state, dict) or state.get("fingerprint") != self.fingerprint:
            return None
        return state

    def save(self, state: Mapping[str, Any]) -> None:
        """Writes state with this run's fingerprint to a temporary file, then renames it over
        the checkpoint."""
        import torch

        self.folder.mkdir(parents=True, exist_ok=True)
        partial = self.folder / f".{CHECKPOINT_FILE}.{os.getpid()}.partial"
        torch.save({**state, "fingerprint": self.fingerprint}, partial)
        os.replace(partial, self.path)

    def remove(self) -> None:
        """Deletes the checkpoint, and the folder when nothing else is left in it."""
        self.path.unlink(missing_ok=True)
        for partial in self.folder.glob(f".{CHECKPOINT_FILE}.*.partial"):
            partial.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty (the user's own files) or already gone
            self.folder.rmdir()


def capture(
    model: Any, optimizer: Any, loop: Mapping[str, Any], best: Mapping[str, Any]
) -> dict[str, Any]:
    """A checkpoint's state: the trainable weights, the optimiser's state, the loop's position
    (plain data), the best weights so far, and torch's RNGs (LoRA dropout draws from them)."""
    import torch

    weights = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return {
        "weights": weights,
        "optimizer": optimizer.state_dict(),
        "loop": dict(loop),
        "best": dict(best),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore(state: Mapping[str, Any], model: Any, optimizer: Any) -> dict[str, Any]:
    """Puts a captured state's weights, optimiser state and RNG back; the loop's position, with
    the best weights under "best"."""
    import torch

    model.load_state_dict(state["weights"], strict=False)
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return {**state["loop"], "best": state["best"]}
