"""Where tests keep the converted base model: plain helpers, reusable by any test module."""

from __future__ import annotations

import os
from pathlib import Path

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
