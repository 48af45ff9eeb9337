"""LoRA training with PEFT on the configured base model: the gate's examples in, an adapter in
the registry out.

Only the assistant's final answer and the chat template's own close of that turn are learned: the
end-of-turn token must be in the labels or the adapter never learns to stop, and it is not always
the tokenizer's eos or pad token (which padding masks anyway).
"""

from __future__ import annotations

import hashlib
import math
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.checkpoint import Checkpoints, capture, restore, run_fingerprint
from adapters.data import Example, GateReport, split_heldout
from adapters.distill import distill_loss
from adapters.lora import choose_target_modules
from adapters.registry import AdapterRegistry, AdapterVersion
from adapters.replay import ReplayLoss, mix
from service.model_loading import MODEL_LOAD_LOCK

if TYPE_CHECKING:
    from adapters.base_model import BaseModel

Rows = Sequence[tuple[list[int], list[int]]]
StepCallback = Callable[[int, int, float], None]
ResumeCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class TrainingOptions:
    """LoRA and optimiser settings; recorded in the adapter's manifest. No target modules means
    every linear layer of the base model but its output head."""

    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ()
    learning_rate: float = 1e-3
    batch_size: int = 8
    epochs: int = 2
    max_steps: int | None = None
    patience: int = 1
    seed: int = 0
    threads: int = 2
    checkpoint_every: int = 10
    # How replay rows are learned: a ReplayLoss value ("answers" or "distill").
    replay_loss: str = "distill"


REPLAY_LOSSES = tuple(loss.value for loss in ReplayLoss)


@dataclass
class EpochReport:
    """Losses after one epoch."""

    epoch: int
    train_loss: float
    validation_loss: float


@dataclass
class TrainingRun:
    """What a training run did."""

    steps: int = 0
    seconds: float = 0.0
    stopped_early: bool = False
    best_epoch: int = 0
    epochs: list[EpochReport] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Plain data for the manifest."""
        return asdict(self)


class ChatTemplateError(ValueError):
    """A chat template whose rendering does not show which tokens are the answer."""


def encode_example(tokenizer: Any, example: Example) -> tuple[list[int], list[int]]:
    """Token ids and labels: the prompt is masked; the answer and what the chat template closes
    the turn with are learned. The template renders the conversation without the answer (ready
    for the assistant) and with it; the answer's part is what the second adds to the first."""
    prompt_text = tokenizer.apply_chat_template(
        list(example.messages[:-1]), add_generation_prompt=True, tokenize=False
    )
    full_text = tokenizer.apply_chat_template(list(example.messages), tokenize=False)
    if not full_text.startswith(prompt_text):
        raise ChatTemplateError(
            "the base model's chat template renders the earlier turns differently once the answer"
            " is added, so the answer's tokens cannot be told from the prompt's"
        )
    # What follows the end-of-turn (a newline before the next turn) is never generated.
    completion_text = full_text[len(prompt_text) :].rstrip()
    prompt = list(tokenizer.encode(prompt_text, add_special_tokens=False))
    completion = list(tokenizer.encode(completion_text, add_special_tokens=False))
    if completion_text.endswith(example.answer.strip()):  # the template closes no turn
        completion.append(int(tokenizer.eos_token_id))
    return prompt + completion, [-100] * len(prompt) + completion


def _pad_id(tokenizer: Any) -> int:
    """Any id serves (padding is masked out of attention and labels); the tokenizer's own first."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def _batch(rows: Rows, pad: int, device: str) -> dict[str, Any]:
    import torch

    width = max(len(ids) for ids, _ in rows)
    return {
        "input_ids": torch.tensor(
            [ids + [pad] * (width - len(ids)) for ids, _ in rows], device=device
        ),
        "attention_mask": torch.tensor(
            [[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows], device=device
        ),
        "labels": torch.tensor(
            [lab + [-100] * (width - len(lab)) for _, lab in rows], device=device
        ),
    }


def _mean_loss(model: Any, rows: Rows, pad: int, device: str) -> float:
    import torch

    if not rows:
        return math.nan
    model.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(rows), 16):
            chunk = rows[start : start + 16]
            total += float(model(**_batch(chunk, pad, device)).loss) * len(chunk)
    model.train()
    return total / len(rows)


def _trainable_state(model: Any) -> dict[str, Any]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _lora_model(base: BaseModel, options: TrainingOptions, device: str) -> tuple[Any, Any]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base.folder))
    with MODEL_LOAD_LOCK:
        model: Any = AutoModelForCausalLM.from_pretrained(str(base.folder), dtype=torch.float32)
    config = LoraConfig(
        r=options.rank,
        lora_alpha=options.alpha,
        lora_dropout=options.dropout,
        target_modules=list(choose_target_modules(base.folder, options.target_modules)),
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model.to(device), config)
    # The adapter names the base as ladder was told it, not the prepared folder.
    peft_model.peft_config["default"].base_model_name_or_path = base.source
    return tokenizer, peft_model


def train_adapter(
    base: BaseModel,
    train: Sequence[Example],
    validation: Sequence[Example],
    out_dir: Path,
    options: TrainingOptions,
    on_step: StepCallback | None = None,
    checkpoints: Checkpoints | None = None,
    on_resume: ResumeCallback | None = None,
    replayed: Sequence[bool] = (),
) -> TrainingRun:
    """Trains, keeps the epoch with the best validation loss, saves the adapter to out_dir. With
    checkpoints, the state is saved every `checkpoint_every` steps and a run resumes from it.
    `replayed` flags the replay rows of train (learned as options.replay_loss says)."""
    import torch

    if options.replay_loss not in REPLAY_LOSSES:
        known = ", ".join(REPLAY_LOSSES)
        raise ValueError(f"replay_loss is one of {known}, not {options.replay_loss!r}")

    torch.manual_seed(options.seed)
    torch.set_num_threads(options.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer, model = _lora_model(base, options, device)
    pad = _pad_id(tokenizer)
    rows = [encode_example(tokenizer, e) for e in train]
    held = [encode_example(tokenizer, e) for e in validation]
    started = time.monotonic()
    fit = _Fit(model, rows, held, pad, device, options, on_step, checkpoints)
    if options.replay_loss == "distill":
        fit.distilled = {index for index, flag in enumerate(replayed) if flag}
    run = fit.run(on_resume)
    model.save_pretrained(str(out_dir))
    run.seconds = round(time.monotonic() - started, 1)
    return run


@dataclass
class _Loop:
    """Where a run is: the part of a checkpoint that is not weights, optimiser or RNG state."""

    run: TrainingRun
    best: dict[str, Any]
    best_loss: float = math.inf
    epoch: int = 1
    position: int = 0  # batches of this epoch done
    losses: list[float] = field(default_factory=list)  # this epoch's
    shuffler: Any = None  # the shuffler's state at this epoch's start, before its shuffle


class _Fit:
    """Epochs until the step bound or no validation gain for `patience`; the best state kept."""

    def __init__(
        self,
        model: Any,
        rows: Rows,
        held: Rows,
        pad: int,
        device: str,
        options: TrainingOptions,
        on_step: StepCallback | None,
        checkpoints: Checkpoints | None,
    ) -> None:
        import torch

        self.model, self.rows, self.held, self.pad, self.device = model, rows, held, pad, device
        self.options, self.on_step, self.checkpoints = options, on_step, checkpoints
        per_epoch = math.ceil(len(rows) / options.batch_size)
        self.total = min(
            options.max_steps or per_epoch * options.epochs, per_epoch * options.epochs
        )
        self.optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=options.learning_rate
        )
        self.distilled: set[int] = set()  # rows learned from the base's distribution

    def run(self, on_resume: ResumeCallback | None) -> TrainingRun:
        """Trains from the checkpoint when there is one, else from the start."""
        loop = self._resume()
        if loop is None:
            loop = _Loop(TrainingRun(), _trainable_state(self.model))
            loop.shuffler = random.Random(self.options.seed).getstate()
        elif on_resume is not None:
            on_resume(loop.run.steps, self.total)
        shuffler = random.Random()
        shuffler.setstate(loop.shuffler)
        self.model.train()
        while loop.epoch <= self.options.epochs:
            order = list(range(len(self.rows)))
            shuffler.shuffle(order)
            size = self.options.batch_size
            batches = [order[n : n + size] for n in range(0, len(order), size)]
            self._steps(loop, batches)
            if self._end_epoch(loop) or loop.run.steps >= self.total:
                break
            loop.epoch, loop.position, loop.losses = loop.epoch + 1, 0, []
            loop.shuffler = shuffler.getstate()
        self.model.load_state_dict(loop.best, strict=False)
        return loop.run

    def _steps(self, loop: _Loop, batches: Sequence[Sequence[int]]) -> None:
        """The epoch's remaining optimiser steps, up to the run's total."""
        for indices in batches[loop.position :]:
            if loop.run.steps >= self.total:
                break
            loss = self._loss(indices)
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad()
            loop.run.steps += 1
            loop.position += 1
            loop.losses.append(float(loss.detach()))
            if self.checkpoints and loop.run.steps % self.options.checkpoint_every == 0:
                self._save(loop)
            if self.on_step is not None:
                self.on_step(loop.run.steps, self.total, loop.losses[-1])

    def _loss(self, indices: Sequence[int]) -> Any:
        """The batch's mean loss over its learned tokens: cross entropy, or for distilled rows
        the KL divergence of the adapted model's next-token distribution from the base's."""
        batch = _batch([self.rows[i] for i in indices], self.pad, self.device)
        teach = [n for n, i in enumerate(indices) if i in self.distilled]
        if not teach:
            return self.model(**batch).loss
        return distill_loss(self.model, batch, teach)

    def _end_epoch(self, loop: _Loop) -> bool:
        """Records the epoch's losses and keeps the state if it is the best; True to stop early."""
        validation_loss = _mean_loss(self.model, self.held, self.pad, self.device)
        train_loss = sum(loop.losses) / max(1, len(loop.losses))
        loop.run.epochs.append(EpochReport(loop.epoch, train_loss, validation_loss))
        if validation_loss < loop.best_loss or math.isnan(validation_loss):
            loop.best, loop.best_loss = _trainable_state(self.model), validation_loss
            loop.run.best_epoch = loop.epoch
        elif loop.epoch - loop.run.best_epoch >= self.options.patience:
            loop.run.stopped_early = True
            return True
        return False

    def _save(self, loop: _Loop) -> None:
        assert self.checkpoints is not None
        loop_state = asdict(replace(loop, best={}))
        self.checkpoints.save(capture(self.model, self.optimizer, loop_state, loop.best))

    def _resume(self) -> _Loop | None:
        """The loop state of a matching checkpoint, with weights, optimiser and RNG restored."""
        state = self.checkpoints.load() if self.checkpoints else None
        if state is None:
            return None
        saved = restore(state, self.model, self.optimizer)
        run = dict(saved.pop("run"))
        reports = [EpochReport(**report) for report in run.pop("epochs")]
        return _Loop(**{**saved, "run": TrainingRun(**run, epochs=reports)})


def train_and_register(
    registry: AdapterRegistry,
    name: str,
    report: GateReport,
    data: Path,
    *,
    base: BaseModel,
    options: TrainingOptions,
    on_step: StepCallback | None = None,
    replay: Sequence[Example] = (),
    replay_fraction: float = 0.0,
    checkpoint_dir: Path | None = None,
    on_resume: ResumeCallback | None = None,
) -> AdapterVersion:
    """Trains on the gate's training examples (a validation slice held back) and registers it
    with the base model's name and fingerprint.

    Replay examples make `replay_fraction` of what is trained on; the validation slice stays the
    task's own. With checkpoint_dir, a run killed midway resumes from its last checkpoint there
    (on_resume is told the step it resumes at and the total); the folder goes once registered.
    """
    data_hash = hashlib.sha256(data.read_bytes()).hexdigest()
    options = replace(
        options, target_modules=choose_target_modules(base.folder, options.target_modules)
    )
    fit, validation = split_heldout(report.train, 0.1, options.seed)
    mixed = mix(fit, replay, replay_fraction, options.seed)
    replay_objects = {id(example) for example in replay}  # mix draws the very objects
    replayed = [id(example) in replay_objects for example in mixed]
    checkpoints = None
    if checkpoint_dir is not None:
        fingerprint = run_fingerprint(
            asdict(options), data_hash, mixed, validation, base.fingerprint.as_dict()
        )
        checkpoints = Checkpoints(checkpoint_dir, fingerprint)
    registry.root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=registry.root, prefix=".training-") as scratch:
        folder = Path(scratch) / "adapter"
        run = train_adapter(
            base, mixed, validation, folder, options, on_step, checkpoints, on_resume, replayed
        )
        manifest = {
            "training_data": {
                "path": str(data.resolve()),
                "sha256": data_hash,
                "examples": len(fit),
                "validation_examples": len(validation),
                "heldout_examples": len(report.heldout),
            },
            "replay": {
                "fraction": replay_fraction,
                "examples": len(mixed) - len(fit),
                "system_prompt": _system_prompt(replay),
            },
            "training": {**asdict(options), "target_modules": list(options.target_modules)},
            "run": run.as_dict(),
            "source": "ladder train",
        }
        version = registry.register(name, folder, manifest, base=base)
    if checkpoints is not None:
        checkpoints.remove()
    return version


def _system_prompt(examples: Sequence[Example]) -> str | None:
    """The system prompt the first example opens with, if any."""
    first = examples[0].messages[0] if examples else None
    return first["content"] if first and first["role"] == "system" else None
