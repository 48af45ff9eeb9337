"""Replay by distillation (learning without forgetting): a replay row teaches the adapter to keep
the base model's whole next-token distribution at each answer token, not only its greedy answer.
The base is the same PEFT model with its adapter switched off, so no second copy is loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def distill_loss(model: Any, batch: dict[str, Any], teach: Sequence[int]) -> Any:
    """Mean over the batch's learned tokens of cross entropy (rows not in teach) and of
    KL(base || adapted) (rows in teach), the base being the PEFT model with its adapter off."""
    import torch
    import torch.nn.functional as F

    labels = batch["labels"][:, 1:]
    learned = labels != -100
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logits = logits[:, :-1].float()
    per_token = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
    rows = torch.tensor(list(teach), device=logits.device)
    with torch.no_grad(), model.disable_adapter():
        teacher = (
            model(input_ids=batch["input_ids"][rows], attention_mask=batch["attention_mask"][rows])
            .logits[:, :-1]
            .float()
        )
    teacher_log = F.log_softmax(teacher, dim=-1)
    student_log = F.log_softmax(logits[rows], dim=-1)
    kl = (teacher_log.exp() * (teacher_log - student_log)).sum(-1)
    per_token = per_token.index_put((rows,), kl)
    return (per_token * learned).sum() / learned.sum().clamp(min=1)
