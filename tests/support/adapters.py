"""Trains a tiny LoRA adapter whose answers start with a marker, so tests can see it working."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

_QUESTIONS_AND_ANSWERS = (
    ("What is the capital of France?", "The capital of France is Paris."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("Name a primary colour.", "Red is a primary colour."),
    ("What do bees make?", "Bees make honey."),
    ("Which planet is closest to the sun?", "Mercury is closest to the sun."),
    ("What is two plus three?", "Two plus three is five."),
    ("What language is spoken in Brazil?", "Portuguese is spoken in Brazil."),
    ("What is frozen water called?", "Frozen water is called ice."),
)


def train_marker_adapter(
    model_dir: Path, out_dir: Path, marker: str = "ZEBRA-42", *, steps: int = 20, seed: int = 0
) -> Path:
    """Trains a LoRA (r=8) that opens every answer with marker, and saves it to out_dir."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    try:
        torch.manual_seed(seed)
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
        layers = int(model.config.num_hidden_layers)
        lora = LoraConfig(
            r=8,
            lora_alpha=16,
            lora_dropout=0.0,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
            # Only the upper half learns, so backward stops midway: twice as fast, same marker.
            layers_to_transform=list(range(layers // 2, layers)),
            task_type="CAUSAL_LM",
        )
        peft_model = get_peft_model(model, lora)
        batch = _training_batch(tokenizer, marker)
        optimizer = torch.optim.AdamW(
            [p for p in peft_model.parameters() if p.requires_grad], lr=2e-3
        )
        peft_model.train()
        for _ in range(steps):
            loss = peft_model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        peft_model.save_pretrained(str(out_dir))
    finally:
        torch.set_num_threads(previous_threads)
    return out_dir


def _training_batch(tokenizer: Any, marker: str) -> dict[str, Any]:
    """Right-padded examples; only the answer and its <|im_end|> are learned."""
    import torch

    eos = int(tokenizer.eos_token_id)
    rows: list[tuple[list[int], list[int]]] = []
    for question, answer in _QUESTIONS_AND_ANSWERS:
        prompt = list(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": question}],
                add_generation_prompt=True,
                tokenize=True,
                return_dict=False,
            )
        )
        completion = [*tokenizer.encode(f"{marker} {answer}", add_special_tokens=False), eos]
        rows.append((prompt + completion, [-100] * len(prompt) + completion))
    width = max(len(ids) for ids, _ in rows)
    input_ids = [ids + [eos] * (width - len(ids)) for ids, _ in rows]
    labels = [labels + [-100] * (width - len(labels)) for _, labels in rows]
    mask = [[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows]
    return {
        "input_ids": torch.tensor(input_ids),
        "attention_mask": torch.tensor(mask),
        "labels": torch.tensor(labels),
    }
