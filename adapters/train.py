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

from adapters.data import Example, GateReport, split_heldout
from adapters.lora import choose_target_modules
from adapters.registry import AdapterRegistry, AdapterVersion

if TYPE_CHECKING:
    from adapters.base_model import BaseModel

Rows = Sequence[tuple[list[int], list[int]]]
StepCallback = Callable[[int, int, float], None]


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
) -> TrainingRun:
    """Trains, keeps the epoch with the best validation loss, saves the adapter to out_dir."""
    import torch

    torch.manual_seed(options.seed)
    torch.set_num_threads(options.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer, model = _lora_model(base, options, device)
    pad = _pad_id(tokenizer)
    rows = [encode_example(tokenizer, e) for e in train]
    held = [encode_example(tokenizer, e) for e in validation]
    started = time.monotonic()
    run = _fit(model, rows, held, pad, device, options, on_step)
    model.save_pretrained(str(out_dir))
    run.seconds = round(time.monotonic() - started, 1)
    return run


def _fit(
    model: Any,
    rows: Rows,
    held: Rows,
    pad: int,
    device: str,
    options: TrainingOptions,
    on_step: StepCallback | None,
) -> TrainingRun:
    """Epochs until the step bound or no validation gain for `patience`; the best state kept."""
    import torch

    per_epoch = math.ceil(len(rows) / options.batch_size)
    total = min(options.max_steps or per_epoch * options.epochs, per_epoch * options.epochs)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=options.learning_rate
    )
    run, best, best_loss = TrainingRun(), _trainable_state(model), math.inf
    shuffler = random.Random(options.seed)
    model.train()
    for epoch in range(1, options.epochs + 1):
        order = list(range(len(rows)))
        shuffler.shuffle(order)
        batches = [
            [rows[i] for i in order[start : start + options.batch_size]]
            for start in range(0, len(order), options.batch_size)
        ]
        losses = _steps(model, optimizer, batches, run, total, pad, device, on_step)
        validation_loss = _mean_loss(model, held, pad, device)
        run.epochs.append(EpochReport(epoch, sum(losses) / max(1, len(losses)), validation_loss))
        if validation_loss < best_loss or math.isnan(validation_loss):
            best, best_loss, run.best_epoch = _trainable_state(model), validation_loss, epoch
        elif epoch - run.best_epoch >= options.patience:
            run.stopped_early = True
            break
        if run.steps >= total:
            break
    model.load_state_dict(best, strict=False)
    return run


def _steps(
    model: Any,
    optimizer: Any,
    batches: Sequence[Rows],
    run: TrainingRun,
    total: int,
    pad: int,
    device: str,
    on_step: StepCallback | None,
) -> list[float]:
    """One epoch's optimiser steps, up to the run's total; their losses."""
    losses: list[float] = []
    for batch in batches:
        if run.steps >= total:
            break
        loss = model(**_batch(batch, pad, device)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        run.steps += 1
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(run.steps, total, losses[-1])
    return losses


def train_and_register(
    registry: AdapterRegistry,
    name: str,
    report: GateReport,
    data: Path,
    *,
    base: BaseModel,
    options: TrainingOptions,
    on_step: StepCallback | None = None,
) -> AdapterVersion:
    """Trains on the gate's training examples (a validation slice held back) and registers it
    with the base model's name and fingerprint."""
    data_hash = hashlib.sha256(data.read_bytes()).hexdigest()
    options = replace(
        options, target_modules=choose_target_modules(base.folder, options.target_modules)
    )
    fit, validation = split_heldout(report.train, 0.1, options.seed)
    registry.root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=registry.root, prefix=".training-") as scratch:
        folder = Path(scratch) / "adapter"
        run = train_adapter(base, fit, validation, folder, options, on_step)
        manifest = {
            "training_data": {
                "path": str(data.resolve()),
                "sha256": data_hash,
                "examples": len(fit),
                "validation_examples": len(validation),
                "heldout_examples": len(report.heldout),
            },
            "training": {**asdict(options), "target_modules": list(options.target_modules)},
            "run": run.as_dict(),
            "source": "ladder train",
        }
        return registry.register(name, folder, manifest, base=base)
