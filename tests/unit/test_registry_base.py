"""The registry knows which base model an adapter fits: a foreign adapter is checked against the
configured base (name, modules, weight shapes), registered ones record its fingerprint, and one
trained on another base is refused with both names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from adapters.base_model import BaseModel, Fingerprint
from adapters.registry import AdapterRegistry, RegistryError, check_fits, validate_foreign

# The layers of two small models of the same family, by module name: (in, out) features.
NARROW = {"q_proj": (128, 128), "k_proj": (128, 64), "v_proj": (128, 64), "lm_head": (128, 2048)}
WIDE = {"q_proj": (576, 576), "k_proj": (576, 192), "v_proj": (576, 192), "lm_head": (576, 49152)}


def base_model(source: str, width: int, files_sha256: str) -> BaseModel:
    fingerprint = Fingerprint("Qwen2ForCausalLM", width, 2, 2048, files_sha256)
    return BaseModel(source, Path("/models") / source, fingerprint, 1024)


NARROW_BASE = base_model("org/narrow-chat", 128, "a" * 64)
WIDE_BASE = base_model("org/wide-chat", 576, "b" * 64)


def peft_folder(
    folder: Path, claimed: str, layers: dict[str, tuple[int, int]], rank: int = 4
) -> Path:
    """A PEFT LoRA folder on q_proj and v_proj, its weights shaped for layers."""
    folder.mkdir(parents=True)
    targets = ["q_proj", "v_proj"]
    config = {
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": 2 * rank,
        "target_modules": targets,
        "base_model_name_or_path": claimed,
    }
    (folder / "adapter_config.json").write_text(json.dumps(config))
    tensors = {}
    for layer in range(2):
        for module in targets:
            features_in, features_out = layers[module]
            key = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            tensors[f"{key}.lora_A.weight"] = np.zeros((rank, features_in), np.float32)
            tensors[f"{key}.lora_B.weight"] = np.zeros((features_out, rank), np.float32)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    return folder


def test_a_foreign_adapter_that_fits_the_base_is_accepted(tmp_path: Path) -> None:
    folder = peft_folder(tmp_path / "a", "org/narrow-chat", NARROW)
    assert validate_foreign(folder, NARROW_BASE, 64, NARROW)["r"] == 4


def test_an_adapter_claiming_another_base_is_refused_naming_both(tmp_path: Path) -> None:
    folder = peft_folder(tmp_path / "a", "org/wide-chat", WIDE)
    with pytest.raises(RegistryError) as refused:
        validate_foreign(folder, NARROW_BASE, 64, NARROW)
    message = str(refused.value)
    assert "org/wide-chat" in message and "org/narrow-chat" in message and "\n" not in message


def test_weights_shaped_for_another_model_are_refused_even_under_the_right_name(
    tmp_path: Path,
) -> None:
    folder = peft_folder(tmp_path / "a", "/elsewhere/narrow-chat", WIDE)
    with pytest.raises(RegistryError, match=r"do not fit .*q_proj.* reads 576 features.* 128"):
        validate_foreign(folder, NARROW_BASE, 64, NARROW)


def test_target_modules_the_base_lacks_are_refused(tmp_path: Path) -> None:
    folder = peft_folder(tmp_path / "a", "org/narrow-chat", NARROW)
    config = json.loads((folder / "adapter_config.json").read_text())
    config["target_modules"] = ["q_proj", "wqkv"]
    (folder / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(RegistryError, match=r"lacks: \['wqkv'\]"):
        validate_foreign(folder, NARROW_BASE, 64, NARROW)


def test_weights_that_are_not_safetensors_are_refused(tmp_path: Path) -> None:
    folder = peft_folder(tmp_path / "a", "org/narrow-chat", NARROW)
    (folder / "adapter_model.safetensors").write_bytes(b"\xff" * 16)
    with pytest.raises(RegistryError, match="not a safetensors file"):
        validate_foreign(folder, NARROW_BASE, 64, NARROW)


def test_a_registered_adapter_records_the_base_and_is_refused_under_another(
    tmp_path: Path,
) -> None:
    registry = AdapterRegistry(tmp_path / "adapters")
    folder = peft_folder(tmp_path / "a", "org/narrow-chat", NARROW)
    adapter = registry.register("tone", folder, {"source": "registered"}, base=NARROW_BASE)
    manifest = adapter.manifest()
    assert manifest["base_model"] == "org/narrow-chat"
    assert manifest["base_fingerprint"] == NARROW_BASE.fingerprint.as_dict()
    check_fits(adapter, NARROW_BASE)
    with pytest.raises(RegistryError) as refused:
        check_fits(adapter, WIDE_BASE)
    assert "tone@1" in str(refused.value)
    assert "org/narrow-chat" in str(refused.value) and "org/wide-chat" in str(refused.value)


def test_the_same_name_with_another_fingerprint_is_another_base(tmp_path: Path) -> None:
    registry = AdapterRegistry(tmp_path / "adapters")
    folder = peft_folder(tmp_path / "a", "org/narrow-chat", NARROW)
    adapter = registry.register("tone", folder, {}, base=NARROW_BASE)
    retrained = base_model("org/narrow-chat", 128, "c" * 64)
    with pytest.raises(RegistryError, match=r"aaaaaaaaaaaa.*cccccccccccc"):
        check_fits(adapter, retrained)


def test_an_adapter_registered_before_fingerprints_fits_by_base_name(tmp_path: Path) -> None:
    registry = AdapterRegistry(tmp_path / "adapters")
    adapter = registry.register("old", peft_folder(tmp_path / "a", "org/narrow-chat", NARROW), {})
    assert "base_fingerprint" not in adapter.manifest()
    check_fits(adapter, NARROW_BASE)
    with pytest.raises(RegistryError, match=r"org/narrow-chat.*org/wide-chat"):
        check_fits(adapter, WIDE_BASE)
