"""A second base model for tests: a tiny random Qwen2 with its own byte-level BPE tokenizer and
chat template, built deterministically and saved as an ordinary Hugging Face folder."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tests.support.paths import CORPUS_DOCS, build_lock

EOS = "<|endoftext|>"
TURN_START = "<|turn_start|>"
TURN_END = "<|turn_end|>"
TOKENIZER_VOCAB = 2000
MAX_POSITIONS = 1024
# Role headers and nothing else: no default system turn, so a test sees exactly what it sent.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    + TURN_START
    + "{{ message['role'] }}\n{{ message['content'] }}"
    + TURN_END
    + "\n{% endfor %}"
    + "{% if add_generation_prompt %}"
    + TURN_START
    + "assistant\n{% endif %}"
)
# What a cached build depends on besides its training texts: an upgrade may change the bytes.
BUILD_LIBRARIES = ("torch", "transformers", "tokenizers", "safetensors")


def build_tiny_qwen2(folder: Path, seed: int = 0) -> Path:
    """Builds the model into folder, atomically: a killed build leaves only a hidden partial."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{folder.name}.partial-", dir=folder.parent))
    partial.chmod(0o755)  # mkdtemp makes it private; the published folder is an ordinary one
    try:
        tokenizer = _write_tokenizer(partial)
        _write_model(partial, tokenizer, seed)
        try:
            os.replace(partial, folder)
        except OSError:
            if not (folder / "config.json").is_file():
                raise  # not a concurrent build of the same model that finished first
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return folder


def tiny_model_dir(cache: Path) -> Path:
    """The seed-0 build cached under cache (tests pass models_cache_dir()), built on first use."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    for text in _training_texts():
        digest.update(text.encode())
    for library in BUILD_LIBRARIES:
        digest.update(importlib.metadata.version(library).encode())
    folder = cache / f"tiny-qwen2-{digest.hexdigest()[:12]}"
    if (folder / "config.json").is_file():
        return folder
    with build_lock(cache, folder.name):
        return folder if (folder / "config.json").is_file() else build_tiny_qwen2(folder)


def _training_texts() -> list[str]:
    """The corpus's markdown and HTML, in a fixed order so the tokenizer trains the same way."""
    paths = sorted(CORPUS_DOCS.rglob("*"))
    return [path.read_text(encoding="utf-8") for path in paths if path.suffix in {".md", ".html"}]


def _write_tokenizer(folder: Path) -> Any:
    """Trains a byte-level BPE on the corpus and saves it with the chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB,
        special_tokens=[EOS, TURN_START, TURN_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_training_texts(), trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token=EOS, pad_token=EOS, model_max_length=MAX_POSITIONS
    )
    tokenizer.add_special_tokens({"additional_special_tokens": [TURN_START, TURN_END]})
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    return tokenizer


def _write_model(folder: Path, tokenizer: Any, seed: int) -> None:
    """Saves random bfloat16 weights drawn from seed, and the generation config's stop tokens."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    eos_id, turn_end_id = tokenizer.convert_tokens_to_ids([EOS, TURN_END])
    config = Qwen2Config(
        vocab_size=-(-len(tokenizer) // 64) * 64,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,  # head size 64
        num_key_value_heads=1,
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
    )
    with torch.random.fork_rng(devices=[]):  # the caller's global RNG is left as it was
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.bfloat16()
    model.generation_config = GenerationConfig(
        bos_token_id=None, eos_token_id=[eos_id, turn_end_id], pad_token_id=eos_id
    )
    model.save_pretrained(folder)
