"""The climb's adapter training: the data gate, the replay mix, and training that resumes.

Each variant (with replay, without) trains once: its adapter's ref is kept in the climb's folder
under the training's fingerprint, so a resumed climb finds it; a climb killed while training
resumes from the last checkpoint (`train_and_register(checkpoint_dir=...)`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from adapters.data import gate_data
from adapters.registry import RegistryError
from adapters.replay import load_replay_prompts, replay_examples
from adapters.train import train_and_register
from evaluation.tasks import Task, TaskError

if TYPE_CHECKING:
    from evaluation.climb import Climb

MAX_EXAMPLE_TOKENS = 512


def _trained(climb: Climb) -> dict[str, str]:
    path = climb.folder / "trained.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def train_variant(climb: Climb, variant: str, fraction: float, general: Task) -> str:
    """Trains (or finds, or resumes) the task's adapter of one variant; returns its ref."""
    from evaluation.climb import options_digest

    task = climb.task
    assert task.train is not None
    options = climb.options.training
    prompts_file = climb.options.replay_prompts or general.folder / "replay.jsonl"
    fingerprint = options_digest(
        options,
        task=task.name,
        data=hash_file(task.train),
        fraction=fraction,
        replay=hash_file(prompts_file) if fraction else None,
        prompt=task.system_prompt_minimal or task.system_prompt,
        base=climb.base.fingerprint.files_sha256,
    )
    known = _trained(climb)
    if fingerprint in known:
        try:
            climb.registry.resolve(known[fingerprint])
            climb.display.say(f"adapter ({variant}): {known[fingerprint]}, trained earlier")
            return known[fingerprint]
        except RegistryError:
            pass
    report = gate_data(
        task.train,
        task.heldout_file,
        model_dir=climb.base.folder,
        heldout_fraction=0.1,
        system_prompt=task.system_prompt_minimal or task.system_prompt,
        max_tokens=MAX_EXAMPLE_TOKENS,
        seed=options.seed,
    )
    blocking = report.blocking(["small"])
    if blocking:
        kinds = ", ".join(sorted({f.kind for f in blocking}))
        raise TaskError(
            f"the data-quality gate refused {task.train} ({kinds}): {blocking[0].message}"
        )
    replay = []
    if fraction:
        prompts = load_replay_prompts(prompts_file)
        climb.display.say(f"replay: the base model answers {len(prompts)} general prompts")
        replay = replay_examples(
            climb.base,
            prompts,
            general.system_prompt,
            cache_dir=climb.settings.cache_dir / "replay",
            threads=max(1, climb.settings.torch_threads),
        )
    name = f"climb-{task.name}" + ("" if variant == "replay" else f"-{variant}")
    checkpoint = climb.folder / f"checkpoint-{fingerprint}"
    climb.display.say(f"adapter ({variant}): training {name}, replay fraction {fraction:g}")
    adapter = train_and_register(
        climb.registry,
        name,
        report,
        task.train,
        base=climb.base,
        options=options,
        on_step=climb.display.step,
        replay=replay,
        replay_fraction=fraction,
        checkpoint_dir=checkpoint,
        on_resume=lambda step, total: climb.display.say(
            f"adapter ({variant}): resuming training at step {step} of {total}"
        ),
    )
    climb.registry.record(
        adapter.ref, "climb", {"task": task.name, "variant": variant, **asdict(options)}
    )
    known = {**_trained(climb), fingerprint: adapter.ref}
    climb.folder.mkdir(parents=True, exist_ok=True)
    staged = climb.folder / "trained.json.tmp"
    staged.write_text(json.dumps(known, indent=2), encoding="utf-8")
    staged.replace(climb.folder / "trained.json")
    return adapter.ref


def hash_file(path: Path) -> str:
    """The file's SHA-256."""
    return hashlib.sha256(path.read_bytes()).hexdigest()
