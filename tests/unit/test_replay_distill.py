"""Replay by distillation: replay rows are learned as the KL divergence of the adapted model's
next-token distribution from the base's (the same model with its adapter off), task rows as
cross entropy, averaged over every learned token of the batch. A small random Llama keeps it fast.
"""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

from adapters.distill import distill_loss  # noqa: E402
from adapters.train import TrainingOptions, _batch  # noqa: E402
from tests.support.models import small_llama  # noqa: E402


def lora_model(seed: int = 0) -> Any:
    torch.manual_seed(seed)
    model = small_llama()
    lora = peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
    return peft.get_peft_model(model, lora)


ROWS = [
    ([5, 6, 7, 8, 9, 10], [-100, -100, -100, 8, 9, 10]),
    ([11, 12, 13, 14], [-100, -100, 14, 2]),
    ([20, 21, 22, 23, 24, 25, 26], [-100, -100, -100, -100, 24, 25, 26]),
]


def perturb(model: Any) -> None:
    """LoRA starts as the identity (B is zero); random B makes the adapted model differ."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)


def by_hand(model: Any, batch: dict[str, Any], teach: list[int]) -> float:
    """The same mean, one token at a time."""
    with torch.no_grad():
        adapted = torch.log_softmax(model(**_inputs(batch)).logits, -1)
        with model.disable_adapter():
            base = torch.log_softmax(model(**_inputs(batch)).logits, -1)
    total, count = 0.0, 0
    for row in range(batch["input_ids"].shape[0]):
        for position in range(batch["input_ids"].shape[1] - 1):
            label = int(batch["labels"][row, position + 1])
            if label == -100:
                continue
            if row in teach:
                p = base[row, position].exp()
                total += float((p * (base[row, position] - adapted[row, position])).sum())
            else:
                total += -float(adapted[row, position, label])
            count += 1
    return total / count


def _inputs(batch: dict[str, Any]) -> dict[str, Any]:
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def test_an_untrained_adapter_is_at_zero_divergence_and_task_rows_are_cross_entropy() -> None:
    model = lora_model()
    batch = _batch(ROWS, pad=0, device="cpu")
    # Every row taught: the adapter is still the identity, so nothing diverges.
    assert float(distill_loss(model, batch, [0, 1, 2]).detach()) == pytest.approx(0.0, abs=1e-6)
    # Rows not taught are learned as before: the model's own loss where all are task rows.
    task_only = _batch(ROWS[:1], pad=0, device="cpu")
    row_zero_ce = float(model(**task_only).loss.detach())
    mixed = float(distill_loss(model, batch, [1, 2]).detach())
    tokens = [sum(label != -100 for label in labels[1:]) for _, labels in ROWS]
    assert mixed == pytest.approx(row_zero_ce * tokens[0] / sum(tokens), rel=1e-5)


def test_a_trained_adapter_diverges_and_the_loss_matches_the_token_by_token_mean() -> None:
    model = lora_model()
    perturb(model)
    batch = _batch(ROWS, pad=0, device="cpu")
    loss = distill_loss(model, batch, [1])
    assert float(loss.detach()) == pytest.approx(by_hand(model, batch, [1]), rel=1e-4)
    distilled_only = float(distill_loss(model, batch, [0, 1, 2]).detach())
    assert distilled_only > 1e-3  # a real divergence from the base
    loss.backward()
    lora_grads = [p.grad for n, p in model.named_parameters() if "lora_" in n]
    assert lora_grads and all(g is not None for g in lora_grads)
    assert any(float(g.abs().sum()) > 0 for g in lora_grads)


def test_distillation_pulls_the_adapted_model_back_to_the_base() -> None:
    """Steps on distilled rows alone bring a perturbed adapter's distribution nearer the base's;
    steps on the base's greedy answers (cross entropy) do not aim at the whole distribution."""
    model = lora_model()
    perturb(model)
    batch = _batch(ROWS, pad=0, device="cpu")
    before = float(distill_loss(model, batch, [0, 1, 2]).detach())
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(30):
        loss = distill_loss(model, batch, [0, 1, 2])
        loss.backward()
        optimiser.step()
        optimiser.zero_grad()
    after = float(distill_loss(model, batch, [0, 1, 2]).detach())
    assert after < before / 4


def test_an_unknown_replay_loss_is_refused(tmp_path: Any) -> None:
    from adapters.train import train_adapter

    options = TrainingOptions(replay_loss="guess")
    with pytest.raises(ValueError, match="replay_loss is one of answers, distill, not 'guess'"):
        train_adapter(None, [], [], tmp_path, options)  # type: ignore[arg-type]
