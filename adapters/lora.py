"""The LoRA target modules of the Llama architecture: one list for every LoRA ladder builds."""

from __future__ import annotations

ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
ALL_LINEAR = (*ATTENTION_PROJECTIONS, "gate_proj", "up_proj", "down_proj")
