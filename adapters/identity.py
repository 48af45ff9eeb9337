"""The identity adapter: a LoRA whose every lora_B is zero, so it changes nothing."""

from __future__ import annotations

import os
from pathlib import Path

from adapters.base_model import default_target_modules
from service.model_loading import MODEL_LOAD_LOCK


class IdentityAdapterError(RuntimeError):
    """The installed PEFT cannot build a no-op adapter."""


def build_identity_adapter(model_dir: Path, folder: Path) -> Path:
    """A LoRA with every lora_B zero (a no-op) on the model's linear layers, built once."""
    if (folder / "adapter_config.json").is_file():
        return folder
    import shutil

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    with MODEL_LOAD_LOCK:
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    targets = list(default_target_modules(model_dir))
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=targets, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, lora)
    lora_b = [v for k, v in peft_model.state_dict().items() if "lora_B" in k]
    if not lora_b or any(bool(v.any()) for v in lora_b):
        raise IdentityAdapterError("PEFT no longer initialises lora_B to zero: no identity adapter")
    staging = folder.with_name(f".{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    peft_model.save_pretrained(str(staging))
    os.replace(staging, folder)
    return folder
