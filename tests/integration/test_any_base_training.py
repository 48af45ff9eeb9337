"""`ladder train` on a base model that is not SmolLM2: with LADDER_BASE_MODEL pointing at the tiny
Qwen2 (another architecture, tokenizer and chat template), the real command line gates the data
with that model's tokenizer, trains a LoRA on its own linear layers, and registers it with its
fingerprint; adapters of one base are refused under the other, both names in the message."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from adapters.base_model import resolve_base_model
from adapters.registry import AdapterRegistry, AdapterVersion, RegistryError, check_fits
from tests.support.adapters import ladder, ladder_train
from tests.support.models import models_cache_dir
from tests.support.paths import TrainedAdapter
from tests.support.tiny_model import tiny_model_dir

CATEGORIES = ("billing", "shipping", "returns", "warranty")
PRODUCTS = ("kettle", "toaster", "router", "charger", "lamp", "speaker")
QWEN2_LINEAR_LAYERS = ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
# A random 2-layer model with 128-wide tied embeddings cannot move its logits far (its output
# head is frozen and small), so even a perfect LoRA lowers its loss only modestly: 12 steps at
# lr 0.01 go from 7.61 to 6.76 (-11.2%, the same on every run: seeded, on CPU). A LoRA that is
# not attached, or labels that learn nothing, stay near 0%.
TRAINING = ("--rank", "4", "--max-steps", "12", "--batch-size", "8", "--epochs", "3")
LOSS_FALL = 0.08
STEP_LOG = re.compile(r"^step (\d+)/(\d+) loss ([\d.]+)$", re.MULTILINE)


@dataclass(frozen=True)
class TinyRun:
    """A `ladder train` run on the tiny model and the adapter it registered."""

    result: subprocess.CompletedProcess[str]
    adapter: AdapterVersion


def category_rows(count: int) -> list[str]:
    """Chat lines whose answer is the category the question names."""
    rows = []
    for n in range(count):
        product, category = PRODUCTS[n % len(PRODUCTS)], CATEGORIES[n % len(CATEGORIES)]
        question = f"Order {1000 + n}: a question about my {product} and {category}."
        messages = [
            {"role": "user", "content": question},
            {"role": "assistant", "content": category},
        ]
        rows.append(json.dumps({"messages": messages}))
    return rows


def write_rows(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join(rows) + "\n")
    return path


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    return result.stderr.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def tiny_base() -> Path:
    return tiny_model_dir(models_cache_dir())


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path) -> TinyRun:
    """A LoRA trained by `ladder train` on the tiny model (seconds, so never cached)."""
    folder = tmp_path_factory.mktemp("tiny-training")
    data = write_rows(folder / "categories.jsonl", category_rows(48))
    options = ("--name", "tiny-categories", "--allow", "small", "--learning-rate", "0.01")
    result = ladder_train(folder, data, *options, *TRAINING, base_model=tiny_base)
    assert result.returncode == 0, result.stderr[-3000:]
    return TinyRun(result, AdapterRegistry(folder / "adapters").resolve("tiny-categories"))


def test_ladder_train_lowers_the_tiny_models_loss_by_the_stated_fraction(
    tiny_run: TinyRun,
) -> None:
    steps = [(int(step), float(loss)) for step, _, loss in STEP_LOG.findall(tiny_run.result.stderr)]
    (first_step, first), (last_step, last) = steps[0], steps[-1]
    assert (first_step, last_step) == (1, 12), tiny_run.result.stderr[-2000:]
    assert last <= first * (1 - LOSS_FALL), f"loss {first:.4f} -> {last:.4f}"


def test_the_adapter_names_the_tiny_model_and_records_its_fingerprint_and_layers(
    tiny_run: TinyRun, tiny_base: Path
) -> None:
    manifest = tiny_run.adapter.manifest()
    config = json.loads((tiny_run.adapter.path / "adapter_config.json").read_text())
    assert manifest["base_model"] == config["base_model_name_or_path"] == str(tiny_base)
    fingerprint = manifest["base_fingerprint"]
    assert (fingerprint["architecture"], fingerprint["hidden_size"], fingerprint["layers"]) == (
        "Qwen2ForCausalLM",
        128,
        2,
    )
    assert manifest["target_modules"] == manifest["training"]["target_modules"]
    assert manifest["target_modules"] == QWEN2_LINEAR_LAYERS
    check_fits(tiny_run.adapter, resolve_base_model(str(tiny_base), models_cache_dir()))


def test_a_foreign_adapter_of_the_configured_base_registers_with_its_fingerprint(
    tiny_run: TinyRun, tiny_base: Path, tmp_path: Path
) -> None:
    folder = str(tiny_run.adapter.path)
    result = ladder(tmp_path, "adapters", "register", "foreign", folder, base_model=tiny_base)
    assert result.returncode == 0, result.stderr[-2000:]
    registered = AdapterRegistry(tmp_path / "adapters").resolve("foreign").manifest()
    assert registered["base_model"] == str(tiny_base)
    assert registered["base_fingerprint"] == tiny_run.adapter.manifest()["base_fingerprint"]


def test_the_tiny_models_adapter_is_refused_under_the_bundled_base(
    tiny_run: TinyRun, tmp_path: Path, base_model_dir: Path
) -> None:
    smollm2 = resolve_base_model(None, models_cache_dir())
    with pytest.raises(RegistryError) as refused:
        check_fits(tiny_run.adapter, smollm2)
    assert "tiny-qwen2" in str(refused.value) and "SmolLM2-135M" in str(refused.value)
    result = ladder(tmp_path, "adapters", "register", "foreign", str(tiny_run.adapter.path))
    assert result.returncode == 2
    assert "tiny-qwen2" in last_line(result) and "SmolLM2-135M" in last_line(result)
    assert not (tmp_path / "adapters" / "foreign").exists()


def test_a_smollm2_adapter_is_refused_under_the_tiny_base(
    triage_adapter: TrainedAdapter, tiny_base: Path, tmp_path: Path
) -> None:
    tiny = resolve_base_model(str(tiny_base), models_cache_dir())
    registry = AdapterRegistry(triage_adapter.adapters_root)
    with pytest.raises(RegistryError, match=r"SmolLM2-135M.*tiny-qwen2"):
        check_fits(registry.resolve("support-triage"), tiny)
    result = ladder(
        tmp_path, "adapters", "register", "foreign", str(triage_adapter.path), base_model=tiny_base
    )
    assert result.returncode == 2
    assert re.search(r"SmolLM2-135M.*tiny-qwen2", last_line(result)), result.stderr[-2000:]
    # Even claiming the tiny model's name, its weights are shaped for SmolLM2's wider layers.
    renamed = shutil.copytree(triage_adapter.path, tmp_path / "renamed")
    config = json.loads((renamed / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tiny_base)
    (renamed / "adapter_config.json").write_text(json.dumps(config))
    result = ladder(tmp_path, "adapters", "register", "renamed", str(renamed), base_model=tiny_base)
    assert result.returncode == 2
    misfit = r"do not fit the base's layers \(\S+\.lora_[AB]\.weight (reads|writes) \d+ features"
    assert re.search(misfit, last_line(result)), last_line(result)


def test_target_modules_limit_the_lora_to_the_named_layers(tiny_base: Path, tmp_path: Path) -> None:
    data = write_rows(tmp_path / "categories.jsonl", category_rows(16))
    options = ("--name", "qv", "--allow", "small", "--max-steps", "1", "--rank", "4")
    result = ladder_train(
        tmp_path, data, *options, "--target-modules", "q_proj,v_proj", base_model=tiny_base
    )
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = AdapterRegistry(tmp_path / "adapters").resolve("qv").manifest()
    assert manifest["target_modules"] == ["q_proj", "v_proj"]


def test_an_unknown_target_module_is_a_one_line_error_listing_the_models_layers(
    tiny_base: Path, tmp_path: Path
) -> None:
    data = write_rows(tmp_path / "categories.jsonl", category_rows(16))
    result = ladder_train(
        tmp_path, data, "--name", "x", "--target-modules", "q_proj,wqkv", base_model=tiny_base
    )
    assert result.returncode == 2
    error = result.stderr.strip()
    assert "\n" not in error and error.startswith("error: --target-modules"), error
    assert "wqkv" in error and all(layer in error for layer in QWEN2_LINEAR_LAYERS)
    assert not (tmp_path / "adapters").exists()


def test_the_data_gate_counts_tokens_with_the_configured_base(
    tiny_base: Path, tmp_path: Path
) -> None:
    rows = category_rows(16)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_base))
    longest = max(
        len(
            tokenizer.apply_chat_template(
                json.loads(row)["messages"], tokenize=True, return_dict=False
            )
        )
        for row in rows
    )
    data = write_rows(tmp_path / "categories.jsonl", rows)

    def gate(max_tokens: int) -> subprocess.CompletedProcess[str]:
        options = ("--name", "g", "--allow", "small", "--check-only")
        return ladder_train(
            tmp_path, data, *options, "--max-tokens", str(max_tokens), base_model=tiny_base
        )

    # SmolLM2 would count more (its template adds a default system turn) and refuse both.
    assert gate(longest).returncode == 0
    refused = gate(longest - 1)
    assert refused.returncode == 2 and f"over {longest - 1} tokens" in refused.stderr
