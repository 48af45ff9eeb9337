"""Checks that the base model answers the general-ability set; prints accuracy and wall time.

Usage (from the repository root):

    HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE .venv/bin/python corpus/tasks/general/verify_general.py

`--questions candidates.jsonl --keep general.jsonl` rebuilds the set from the candidate pool: it
writes the questions answered correctly at batch size 1 *and* in batches, so the kept set does not
hinge on padding-induced numeric noise.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
SYSTEM_PROMPT = "You are a helpful assistant. Answer briefly."
MAX_NEW_TOKENS = 24


def normalise(text: str) -> str:
    """Folds Unicode and case, turns punctuation into spaces, and pads single-spaced words."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " " + " ".join(re.sub(r"[^\w]+", " ", folded).split()) + " "


def is_correct(output: str, answers: Iterable[str]) -> bool:
    """True when an accepted answer occurs in the output as whole words, both normalised.

    The padding makes the substring test respect word edges: "ten" is not found in "often", nor
    "60" in "3600".
    """
    said = normalise(output)
    return any(normalise(answer) in said for answer in answers)


def load_questions(path: Path) -> list[dict[str, Any]]:
    """Reads the JSONL set and refuses answers that the question itself already contains."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    for row in rows:
        leaked = [a for a in row["answer"] if normalise(a) in normalise(row["question"])]
        if leaked:
            raise SystemExit(f"{row['id']}: answer {leaked} is inside the question itself")
    return rows


def generate(model_dir: Path, questions: Sequence[str], batch_size: int) -> list[str]:
    """Greedy answers from the base model, `batch_size` prompts at a time (left-padded)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)  # eval mode
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}],
            add_generation_prompt=True,
            tokenize=False,
        )
        for question in questions
    ]
    outputs: list[str] = []
    for start in range(0, len(prompts), batch_size):
        batch = tokenizer(
            prompts[start : start + batch_size],
            return_tensors="pt",
            padding=True,
            add_special_tokens=False,
        )
        with torch.inference_mode():
            ids = model.generate(
                **batch,
                max_new_tokens=MAX_NEW_TOKENS,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
            )
        new_tokens = ids[:, batch["input_ids"].shape[1] :]
        outputs.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
        print(f"  {len(outputs)}/{len(prompts)} answered", file=sys.stderr, flush=True)
    return outputs


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=Path, default=HERE / "general.jsonl")
    parser.add_argument("--model", type=Path, default=REPO / ".ladder/cache/smollm2-135m-instruct")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="write the questions answered correctly here")
    parser.add_argument("--show", action="store_true", help="print every answer, not only misses")
    return parser.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    """Runs the check; the exit status is 0 even below 100 % since accuracy is the result."""
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    torch.set_num_threads(args.threads)
    rows = load_questions(args.questions)
    questions = [row["question"] for row in rows]
    started = time.monotonic()
    answers = generate(args.model, questions, args.batch_size)
    if args.keep:
        # Keep only questions also right in batches, so the set holds either way it is run.
        batched = generate(args.model, questions, max(args.batch_size, 16))
        answers_ok = [
            is_correct(a, r["answer"]) and is_correct(b, r["answer"])
            for a, b, r in zip(answers, batched, rows, strict=True)
        ]
    else:
        answers_ok = [is_correct(a, r["answer"]) for a, r in zip(answers, rows, strict=True)]
    elapsed = time.monotonic() - started
    for row, answer, ok in zip(rows, answers, answers_ok, strict=True):
        if args.show or not ok:
            print(
                f"{'ok  ' if ok else 'MISS'} {row['id']} {row['question']!r} -> {answer.strip()!r}"
            )
    correct = sum(answers_ok)
    print(
        f"accuracy {correct}/{len(rows)} = {correct / len(rows):.3f} "
        f"({elapsed:.1f} s, batch size {args.batch_size}, {args.threads} thread(s))"
    )
    if args.keep:
        kept = [row for row, ok in zip(rows, answers_ok, strict=True) if ok]
        lines = [
            json.dumps({**row, "id": f"g{i:03d}", "candidate": row["id"]})
            for i, row in enumerate(kept, 1)
        ]
        args.keep.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        print(f"kept {len(kept)} questions in {args.keep}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
