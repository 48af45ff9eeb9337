"""The environment a child process (the vLLM server) gets: what it needs to run, never ladder's
keys, tokens or database URL, nor any other secret the parent was started with."""

from __future__ import annotations

from collections.abc import Mapping

# Names a Python/torch/vLLM process reads to find itself, its locale, its caches and its devices.
_PASSED = frozenset(
    {
        "PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "TZ", "TMPDIR", "LANG", "LANGUAGE",
        "LD_LIBRARY_PATH", "LD_PRELOAD", "XDG_CACHE_HOME", "HF_HOME", "HF_HUB_CACHE",
        "TRANSFORMERS_CACHE", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
    }
)  # fmt: skip
# Families of tuning variables: locale, vLLM's own, devices and thread pools.
_PASSED_PREFIXES = ("LC_", "VLLM_", "CUDA_", "NVIDIA_", "OMP_", "KMP_", "MKL_", "NCCL_", "TORCH")


def child_environment(parent: Mapping[str, str], own: Mapping[str, str]) -> dict[str, str]:
    """The parent's variables a child needs (an allow-list), then the child's own settings."""
    passed = {
        name: value
        for name, value in parent.items()
        if name in _PASSED or name.startswith(_PASSED_PREFIXES)
    }
    return {**passed, **own}
