"""Replay: general prompts answered by the base model itself, mixed into an adapter's training so
it keeps the base's general ability (a LoRA trained on one task alone forgets how to do anything
else: it answers every question in the task's format).

The answers are the base's own greedy ones, as ladder's local engine would give them (float32,
the base's chat template, ending at the first end-of-turn token), so replay teaches the adapter
to keep saying what the base says rather than anything new.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from collections.abc import Callable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.data import Example
from service.model_loading import MODEL_LOAD_LOCK

if TYPE_CHECKING:
    from adapters.base_model import BaseModel

Progress = Callable[[int, int], None]
# Greedy: up to the last line break or sentence end (before whitespace; not a list's "3.").
_LAST_SENTENCE_END = re.compile(
    r"(.*(?:(?<!^\d)(?<!^\d\d)[.!?][\"')\]]*(?=\s)|\n))", re.DOTALL | re.MULTILINE
)


class ReplayLoss(StrEnum):
    """How replay rows are learned: the base's greedy answers, token by token (cross entropy), or
    its whole next-token distribution at each of those tokens (KL divergence from the base)."""

    answers = "answers"
    distill = "distill"


class ReplayPromptsError(ValueError):
    """A replay prompts file that cannot be read; the message names the file and line."""


def load_replay_prompts(path: Path) -> list[str]:
    """The prompts of a JSONL file of {"id", "prompt"} rows, in file order."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ReplayPromptsError(f"{path}: {error}") from error
    prompts: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ReplayPromptsError(f"{path}:{number}: not JSON ({error.msg})") from None
        prompt = row.get("prompt") if isinstance(row, dict) else None
        if not isinstance(prompt, str) or not prompt.strip():
            raise ReplayPromptsError(f'{path}:{number}: needs a non-empty "prompt" string')
        prompts.append(prompt.strip())
    if not prompts:
        raise ReplayPromptsError(f"{path}: no prompts")
    return prompts


def replay_examples(
    base: BaseModel,
    prompts: Sequence[str],
    system_prompt: str | None,
    *,
    cache_dir: Path,
    max_new_tokens: int = 48,
    batch_size: int = 16,
    threads: int = 2,
    on_progress: Progress | None = None,
) -> list[Example]:
    """Chat examples [system?, user, assistant] of the base model's own greedy answers to the
    prompts; an answer the token limit cuts off is cut back to its last whole sentence, and
    prompts left with no answer are left out. The answers are cached in cache_dir,
    keyed by the base's files, the prompts, the system prompt and max_new_tokens."""
    key = hashlib.sha256(
        json.dumps(
            [base.fingerprint.files_sha256, list(prompts), system_prompt, max_new_tokens]
        ).encode()
    ).hexdigest()
    cached = cache_dir / f"replay-{key[:32]}.jsonl"
    if cached.is_file():
        answers = [json.loads(line)["answer"] for line in cached.read_text().splitlines()]
        if on_progress is not None:
            on_progress(len(prompts), len(prompts))
    else:
        answers = _generate(
            base, prompts, system_prompt, max_new_tokens, batch_size, threads, on_progress
        )
        rows = zip(prompts, answers, strict=True)
        lines = [json.dumps({"prompt": p, "answer": a}) + "\n" for p, a in rows]
        _write_atomically(cached, "".join(lines))
    system = ({"role": "system", "content": system_prompt},) if system_prompt else ()
    return [
        Example((*system, {"role": "user", "content": p}, {"role": "assistant", "content": a}), n)
        for n, (p, a) in enumerate(zip(prompts, answers, strict=True), start=1)
        if a
    ]


def mix(
    train: Sequence[Example], replay: Sequence[Example], fraction: float, seed: int
) -> list[Example]:
    """The training examples with replay ones added so that `fraction` of the result is replay,
    shuffled with seed. Replay examples are drawn without repetition until all are used, then
    again (cycling) when there are too few; fraction 0 returns train unchanged."""
    if not 0 <= fraction < 1:
        raise ValueError(f"the replay fraction must be at least 0 and below 1, not {fraction}")
    if fraction == 0:
        return list(train)
    if not replay:
        raise ValueError("a replay fraction above 0 needs replay examples")
    wanted = round(len(train) * fraction / (1 - fraction))
    shuffler = random.Random(seed)
    drawn: list[Example] = []
    while len(drawn) < wanted:
        round_ = list(replay)
        shuffler.shuffle(round_)
        drawn.extend(round_[: wanted - len(drawn)])
    mixed = [*train, *drawn]
    shuffler.shuffle(mixed)
    return mixed


def _generate(
    base: BaseModel,
    prompts: Sequence[str],
    system_prompt: str | None,
    max_new_tokens: int,
    batch_size: int,
    threads: int,
    on_progress: Progress | None,
) -> list[str]:
    """Greedy answers in left-padded batches of prompts of similar length (less padding, and
    answers closer to the engine's unpadded ones), returned in the prompts' order."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base.folder))
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    encoded = [
        list(
            tokenizer.apply_chat_template(
                [*system, {"role": "user", "content": prompt}],
                add_generation_prompt=True,
                tokenize=True,
                return_dict=False,
            )
        )
        for prompt in prompts
    ]
    end_ids = _end_token_ids(base.folder, tokenizer.eos_token_id)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    answers = [""] * len(encoded)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with MODEL_LOAD_LOCK:
            model: Any = AutoModelForCausalLM.from_pretrained(str(base.folder), dtype=torch.float32)
        model.eval()
        for start in range(0, len(order), batch_size):
            chosen = order[start : start + batch_size]
            tokens = _generate_batch(model, [encoded[i] for i in chosen], end_ids, max_new_tokens)
            for index, (new, ended) in zip(chosen, tokens, strict=True):
                text = str(tokenizer.decode(new, skip_special_tokens=True)).strip()
                answers[index] = text if ended else whole_sentences(text)
            if on_progress is not None:
                on_progress(min(start + batch_size, len(order)), len(order))
    finally:
        torch.set_num_threads(previous_threads)
    return answers


def _generate_batch(
    model: Any, rows: Sequence[list[int]], end_ids: frozenset[int], max_new_tokens: int
) -> list[tuple[list[int], bool]]:
    """Each row's generated tokens up to (not including) its first end token, and whether it
    ended (rather than ran out of tokens)."""
    import torch
    from transformers import GenerationConfig

    pad = min(end_ids, default=0)
    width = max(len(row) for row in rows)
    input_ids = torch.tensor([[pad] * (width - len(row)) + row for row in rows])
    mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in rows])
    config = GenerationConfig(  # as the local engine's greedy config: nothing from the model's
        max_new_tokens=max_new_tokens,
        do_sample=False,
        temperature=None,
        top_p=None,
        top_k=None,
        eos_token_id=sorted(end_ids),
        pad_token_id=pad,
    )
    with torch.inference_mode():
        output = model.generate(input_ids=input_ids, attention_mask=mask, generation_config=config)
    generated: list[tuple[list[int], bool]] = []
    for row in output[:, width:].tolist():
        ends = [i for i, token in enumerate(row) if token in end_ids]
        generated.append((row[: ends[0]], True) if ends else (row, False))
    return generated


def whole_sentences(text: str) -> str:
    """An answer cut off by the token limit, back to its last whole sentence or line ('' when it
    has none): trained on as it is, with the turn closed after it, it would teach the adapter to
    stop mid-sentence."""
    match = _LAST_SENTENCE_END.match(text)
    return match.group(1).strip() if match else ""


def _end_token_ids(folder: Path, eos_token_id: int | None) -> frozenset[int]:
    """The tokens that end a turn: the tokenizer's eos and every eos of generation_config.json
    (the local engine stops at the same ones)."""
    ids: set[Any] = {eos_token_id}
    try:
        declared = json.loads((folder / "generation_config.json").read_text()).get("eos_token_id")
    except (OSError, ValueError, AttributeError):
        declared = None
    ids.update(declared if isinstance(declared, list) else [declared])
    return frozenset(i for i in ids if isinstance(i, int))


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
