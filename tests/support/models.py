"""Where tests keep the converted base model: plain helpers, reusable by any test module."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from adapters.base_model import prepare_base_model
from tests.support.paths import REPO, build_lock

REPO_ROOT = REPO


def models_cache_dir() -> Path:
    """The cache shared by test sessions: $LADDER_TEST_CACHE, else the repo's .ladder/cache."""
    configured = os.environ.get("LADDER_TEST_CACHE")
    return Path(configured) if configured else REPO_ROOT / ".ladder" / "cache"


def prepared_model_dir() -> Path:
    """The converted SmolLM2 folder, converting it on first use."""
    with build_lock(models_cache_dir(), "smollm2"):
        return prepare_base_model(models_cache_dir())


def small_llama(vocab: int = 96, **config: Any) -> Any:
    """A small random Llama (seeded by the caller), built in memory for tests of training and
    loading that need a real transformers model but not a trained one."""
    import transformers

    settings = {
        "vocab_size": vocab,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "max_position_embeddings": 64,
        **config,
    }
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**settings))
