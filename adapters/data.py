"""The data-quality gate: chat-format JSONL is checked before any training starts.

Each finding has a kind; errors stop training unless that kind is allowed (`--allow KIND`).
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

FindingKind = Literal["malformed", "duplicate", "leakage", "too-long", "format-mix", "small"]
FINDING_KINDS: tuple[str, ...] = (
    "malformed",
    "duplicate",
    "leakage",
    "too-long",
    "format-mix",
    "small",
)
ROLES = frozenset({"system", "user", "assistant"})
SMALL_DATA = 200
SMALL_DATA_ADVICE = (
    "fewer than {limit} training examples: a LoRA this small mostly memorises its examples; the"
    " seeds advise a few hundred to a few thousand clean, consistent examples for a behaviour, and"
    " to try few-shot prompting first when data is this scarce"
)


@dataclass(frozen=True)
class Example:
    """One chat-format training example and the line it came from."""

    messages: tuple[dict[str, str], ...]
    line: int

    @property
    def prompt_key(self) -> str:
        """The normalised user side: what leakage is judged on."""
        return normalise_prompt(self.messages)

    @property
    def answer(self) -> str:
        """The final assistant turn, the target the adapter learns."""
        return self.messages[-1]["content"]


@dataclass(frozen=True)
class Finding:
    """Something wrong with the data."""

    kind: FindingKind
    message: str
    lines: tuple[int, ...] = ()
    severity: Literal["error", "warning"] = "error"


@dataclass
class GateReport:
    """The gate's verdict over training and held-out data."""

    train: list[Example]
    heldout: list[Example]
    findings: list[Finding] = field(default_factory=list)

    def blocking(self, allow: Iterable[str] = ()) -> list[Finding]:
        """Errors whose kind was not allowed."""
        allowed = set(allow)
        return [f for f in self.findings if f.severity == "error" and f.kind not in allowed]

    def render(self) -> str:
        """A human report, one finding a line."""
        lines = [f"{len(self.train)} training examples, {len(self.heldout)} held out"]
        for finding in self.findings:
            where = f" (lines {_line_list(finding.lines)})" if finding.lines else ""
            lines.append(f"{finding.severity}: {finding.kind}: {finding.message}{where}")
        return "\n".join(lines)


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


def normalise_prompt(messages: Iterable[Mapping[str, str]]) -> str:
    """The user turns, lower case, single-spaced: the key leaked held-out examples are found by."""
    return _normalise(" ".join(m["content"] for m in messages if m.get("role") == "user"))


def _line_list(lines: Sequence[int], shown: int = 8) -> str:
    head = ", ".join(str(n) for n in lines[:shown])
    return head + (f", ... {len(lines) - shown} more" if len(lines) > shown else "")


def _parse_line(text: str, number: int) -> Example | str:
    """An example, or why the line is malformed."""
    try:
        row = json.loads(text)
    except json.JSONDecodeError as error:
        return f"not JSON ({error.msg})"
    messages = row.get("messages") if isinstance(row, dict) else None
    if not isinstance(messages, list) or not messages:
        return 'no "messages" list'
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            return "a message without a role of system, user or assistant"
        if not isinstance(message.get("content"), str) or not message["content"].strip():
            return "a message without text content"
    if messages[-1]["role"] != "assistant" or not any(m["role"] == "user" for m in messages):
        return "needs a user turn and must end with the assistant's answer"
    clean = tuple({"role": m["role"], "content": m["content"]} for m in messages)
    return Example(clean, number)


def load_examples(path: Path) -> tuple[list[Example], list[Finding]]:
    """Reads chat JSONL; malformed lines become findings instead of exceptions."""
    examples: list[Example] = []
    problems: dict[str, list[int]] = defaultdict(list)
    text = path.read_text(encoding="utf-8", errors="replace")
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parsed = _parse_line(line, number)
        if isinstance(parsed, str):
            problems[parsed].append(number)
        else:
            examples.append(parsed)
    findings = [
        Finding("malformed", f"{path.name}: {reason}", tuple(lines))
        for reason, lines in problems.items()
    ]
    return examples, findings


def output_format(answer: str) -> str:
    """The shape of an answer: a JSON object with its keys, other JSON, or prose."""
    try:
        value: Any = json.loads(answer)
    except json.JSONDecodeError:
        return "prose"
    if isinstance(value, dict):
        return "json object with keys " + ",".join(sorted(value))
    return f"json {type(value).__name__}"


def _format_mix(examples: Sequence[Example]) -> Finding | None:
    formats = Counter(output_format(example.answer) for example in examples)
    if len(formats) < 2:
        return None
    dominant, _ = formats.most_common(1)[0]
    odd = tuple(e.line for e in examples if output_format(e.answer) != dominant)
    shares = "; ".join(
        f"{count / len(examples):.0%} {name}" for name, count in formats.most_common()
    )
    return Finding(
        "format-mix",
        f"assistant answers mix output formats ({shares}): a model trained on a mix learns to mix",
        odd,
    )


def _duplicates(examples: Sequence[Example]) -> Finding | None:
    seen: dict[tuple[tuple[str, str], ...], int] = {}
    repeated: list[int] = []
    for example in examples:
        key = tuple((m["role"], _normalise(m["content"])) for m in example.messages)
        if key in seen:
            repeated.append(example.line)
        seen.setdefault(key, example.line)
    if not repeated:
        return None
    return Finding("duplicate", f"{len(repeated)} examples repeat an earlier one", tuple(repeated))


def _leakage(train: Sequence[Example], heldout: Sequence[Example]) -> Finding | None:
    trained = {example.prompt_key for example in train}
    leaked = tuple(e.line for e in heldout if e.prompt_key in trained)
    if not leaked:
        return None
    return Finding(
        "leakage", f"{len(leaked)} held-out examples also appear in the training data", leaked
    )


def _too_long(
    examples: Sequence[Example], count_tokens: Callable[[Example], int], max_tokens: int
) -> Finding | None:
    long = tuple(e.line for e in examples if count_tokens(e) > max_tokens)
    if not long:
        return None
    return Finding("too-long", f"{len(long)} examples are over {max_tokens} tokens", long)


def check(
    train: list[Example],
    heldout: list[Example],
    count_tokens: Callable[[Example], int],
    max_tokens: int,
) -> GateReport:
    """Runs every check over training and held-out data."""
    report = GateReport(train, heldout)
    candidates = [
        _duplicates(train),
        _leakage(train, heldout),
        _too_long(train, count_tokens, max_tokens),
        _format_mix(train),
    ]
    report.findings.extend(finding for finding in candidates if finding is not None)
    if len(train) < SMALL_DATA:
        report.findings.append(
            Finding("small", SMALL_DATA_ADVICE.format(limit=SMALL_DATA), severity="warning")
        )
    return report


def split_heldout(
    examples: Sequence[Example], fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """A seeded split into training and held-out examples."""
    shuffled = list(examples)
    random.Random(seed).shuffle(shuffled)
    cut = max(1, round(len(shuffled) * fraction)) if len(shuffled) > 1 else 0
    return sorted(shuffled[cut:], key=lambda e: e.line), sorted(
        shuffled[:cut], key=lambda e: e.line
    )


def _with_system(examples: list[Example], prompt: str | None) -> list[Example]:
    if not prompt:
        return examples
    return [
        e
        if e.messages[0]["role"] == "system"
        else replace(e, messages=({"role": "system", "content": prompt}, *e.messages))
        for e in examples
    ]


def gate_data(
    data: Path,
    heldout: Path | None,
    *,
    model_dir: Path,
    heldout_fraction: float,
    system_prompt: str | None,
    max_tokens: int,
    seed: int,
) -> GateReport:
    """Loads training and held-out data (else splits data) and runs every check of the gate;
    lengths are counted with the tokenizer and chat template of the base model in model_dir."""
    from transformers import AutoTokenizer

    train, findings = load_examples(data)
    if heldout is not None:
        held, held_findings = load_examples(heldout)
        findings += held_findings
    else:
        train, held = split_heldout(train, heldout_fraction, seed)
    train, held = _with_system(train, system_prompt), _with_system(held, system_prompt)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))

    def count(example: Example) -> int:
        ids = tokenizer.apply_chat_template(
            list(example.messages), tokenize=True, return_dict=False
        )
        return len(ids)

    report = check(train, held, count, max_tokens)
    report.findings[:0] = findings
    return report
