"""LoRA training with PEFT: chat-format examples in, an adapter folder out.

Only the assistant's final answer and its end token are learned (the end token is the pad token
too, so it must stay in the labels or the adapter never learns to stop).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from adapters.data import Example

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
StepCallback = Callable[[int, int, float], None]


@dataclass(frozen=True)
class TrainingOptions:
    """LoRA and optimiser settings; recorded in the adapter's manifest."""

    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ALL_LINEAR
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


def encode_example(tokenizer: Any, example: Example) -> tuple[list[int], list[int]]:
    """Token ids and labels: the prompt is masked, the answer and its end token are learned."""
    prompt = list(
        tokenizer.apply_chat_template(
            list(example.messages[:-1]),
            add_generation_prompt=True,
            tokenize=True,
            return_dict=False,
        )
    )
    eos = int(tokenizer.eos_token_id)
    answer = [*tokenizer.encode(example.answer, add_special_tokens=False), eos]
    return prompt + answer, [-100] * len(prompt) + answer


def _batch(rows: Sequence[tuple[list[int], list[int]]], pad: int, device: str) -> dict[str, Any]:
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


def _mean_loss(
    model: Any, rows: Sequence[tuple[list[int], list[int]]], pad: int, device: str
) -> float:
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


def _lora_model(base_model_dir: Path, options: TrainingOptions, device: str) -> tuple[Any, Any]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base_model_dir))
    model: Any = AutoModelForCausalLM.from_pretrained(str(base_model_dir), dtype=torch.float32)
    config = LoraConfig(
        r=options.rank,
        lora_alpha=options.alpha,
        lora_dropout=options.dropout,
        target_modules=list(options.target_modules),
        task_type="CAUSAL_LM",
    )
    return tokenizer, get_peft_model(model.to(device), config)


def train_adapter(
    base_model_dir: Path,
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
    tokenizer, model = _lora_model(base_model_dir, options, device)
    pad = int(tokenizer.eos_token_id)
    rows = [encode_example(tokenizer, e) for e in train]
    held = [encode_example(tokenizer, e) for e in validation]
    per_epoch = math.ceil(len(rows) / options.batch_size)
    total = min(options.max_steps or per_epoch * options.epochs, per_epoch * options.epochs)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=options.learning_rate
    )
    run, best, best_loss, started = (
        TrainingRun(),
        _trainable_state(model),
        math.inf,
        time.monotonic(),
    )
    shuffler = random.Random(options.seed)
    model.train()
    for epoch in range(1, options.epochs + 1):
        order = list(range(len(rows)))
        shuffler.shuffle(order)
        losses = []
        for start in range(0, len(order), options.batch_size):
            if run.steps >= total:
                break
            loss = model(
                **_batch([rows[i] for i in order[start : start + options.batch_size]], pad, device)
            ).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            run.steps += 1
            losses.append(float(loss.detach()))
            if on_step is not None:
                on_step(run.steps, total, losses[-1])
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
    model.peft_config["default"].base_model_name_or_path = _base_model_id()
    model.save_pretrained(str(out_dir))
    run.seconds = round(time.monotonic() - started, 1)
    return run


def _base_model_id() -> str:
    from adapters.base_model import BASE_MODEL_ID

    return BASE_MODEL_ID
