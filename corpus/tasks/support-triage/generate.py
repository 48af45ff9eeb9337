"""Builds support-triage's train.jsonl, heldout.jsonl and few_shot.jsonl (seeded, stdlib only).

Run `python corpus/tasks/support-triage/generate.py`; the output is byte-identical on every run.
"""

from __future__ import annotations

import json
import random
import re
import string
import sys
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.dont_write_bytecode = True  # regenerating must leave nothing but the data files behind
import triage_templates as t  # noqa: E402

HERE = Path(__file__).resolve().parent
SEED = 1729
SIZES = {"train": 665, "heldout": 175}
CATEGORIES = ("billing", "shipping", "returns", "warranty", "technical", "account", "safety")
PRIORITIES = ("low", "normal", "high", "urgent")
TONES = ("neutral", "polite", "angry", "terse", "rambling", "typos")
REPEAT_RATE = 0.2
DISPUTE_THRESHOLD = 100.0  # dollars; a disputed charge at or above it is high priority
FEW_SHOT_CATEGORIES = ("billing", "shipping", "technical", "account", "safety")
MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
SURNAMES = ("lindqvist", "okafor", "patel", "moreau", "tanaka", "reyes", "novak", "brennan")
CLUB_PRICES = (399, 799, 1299, 3900, 7900, 12900)  # cents, from subscriptions/plans.html


@dataclass(frozen=True)
class Example:
    """A generated message, its labels and how it was made (only message and labels are written)."""

    message: str
    labels: dict[str, object]
    tone: str
    repeat: bool

    def chat_row(self) -> dict[str, object]:
        """The chat-format line written to the JSONL files."""
        return {
            "messages": [
                {"role": "user", "content": self.message},
                {"role": "assistant", "content": assistant_line(self.labels)},
            ]
        }


def assistant_line(labels: dict[str, object]) -> str:
    """The one serialisation every assistant turn uses."""
    return json.dumps(labels, separators=(", ", ": "))


def label(intent: t.Intent, product: str, cents: int | None, repeat: bool) -> dict[str, object]:
    """Applies the labelling rules; see task.yaml for the same rules in prose."""
    priority, needs_human = intent.priority, intent.needs_human
    if intent.amount_rule:
        assert cents is not None, intent.name
        priority = "high" if cents >= DISPUTE_THRESHOLD * 100 else "normal"
    if repeat and intent.category != "safety":
        priority = PRIORITIES[min(PRIORITIES.index(priority) + 1, PRIORITIES.index("high"))]
        needs_human = True
    return {
        "category": intent.category,
        "priority": priority,
        "product": product,
        "needs_human": needs_human,
    }


def amount(rng: random.Random, split: str, intent: t.Intent) -> tuple[int, str]:
    """A dollar amount in cents, half below the threshold and half above, and how it is written."""
    if intent.name == "unwanted_renewal" and rng.random() < 0.5:
        cents = rng.choice(CLUB_PRICES)
    elif rng.random() < 0.5:
        cents = rng.randint(500, 9999)
    else:
        cents = rng.randint(10000, 34999)
    dollars, rest = divmod(cents, 100)
    # Dropping the cents never moves an amount across the threshold, which is a whole dollar.
    with_cents = rest != 0 and (cents in CLUB_PRICES or rng.random() < 0.5)
    if split == "train":
        forms = (
            (f"${dollars}.{rest:02d}", f"USD {dollars}.{rest:02d}")
            if with_cents
            else (f"${dollars}", f"{dollars} dollars")
        )
    else:
        forms = (
            (f"{dollars}.{rest:02d} USD", f"$ {dollars}.{rest:02d}")
            if with_cents
            else (f"{dollars} bucks", f"US$ {dollars}")
        )
    return (cents if with_cents else dollars * 100), rng.choice(forms)


def date(rng: random.Random, split: str) -> str:
    """A date in a split-specific style."""
    day, month = rng.randint(1, 28), rng.randint(1, 12)
    if split == "train":
        return rng.choice(
            (
                f"{day} {MONTHS[month - 1]}",
                f"{MONTHS[month - 1]} {day}",
                f"last {rng.choice(WEEKDAYS)}",
            )
        )
    return rng.choice(
        (f"2025-{month:02d}-{day:02d}", f"{MONTHS[month - 1][:3]}. {day}", f"{month}/{day}")
    )


def order_number(rng: random.Random, split: str) -> str:
    """An order reference in a split-specific style."""
    digits = f"{rng.randint(0, 9_999_999):07d}"
    if split == "train":
        return rng.choice((f"#{digits}", f"BW{digits}"))
    return rng.choice((f"no. {digits}", f"BW-{digits[:3]}-{digits[3:]}"))


def email(rng: random.Random, split: str) -> str:
    """A made-up customer address."""
    return f"{rng.choice(t.NAMES.for_split(split)).lower()}.{rng.choice(SURNAMES)}@example.com"


def batch_code(rng: random.Random, product: str) -> str:
    """A recall label: a lid batch code for the K3, a serial prefix for the T2."""
    if product == "aurora-k3":
        return f"HB{rng.choice((24, 25))}{rng.randint(1, 52):02d}"
    return f"ET2-23Q4-{rng.randint(0, 9999):04d}"


def spelling(rng: random.Random, split: str, product: str) -> str:
    """How the message names the product; held-out also uses spellings training never saw."""
    pool = t.PRODUCT_SPELLINGS[product]
    if split == "heldout" and rng.random() < 0.5:
        return rng.choice(pool.heldout)
    return rng.choice(pool.train)


def fill(
    template: str, intent: t.Intent, rng: random.Random, split: str
) -> tuple[str, str, int | None]:
    """Fills every slot; returns the text, the product label and the amount in cents (if any)."""
    slots = [name for _, name, _, _ in string.Formatter().parse(template) if name]
    product = rng.choice(intent.products) if "product" in slots else "none"
    cents, written = amount(rng, split, intent) if "amount" in slots else (None, "")
    values: dict[str, Callable[[], str]] = {
        "product": lambda: spelling(rng, split, product),
        "amount": lambda: written,
        "order": lambda: order_number(rng, split),
        "date": lambda: date(rng, split),
        "days": lambda: str(rng.randint(3, 21)),
        "months": lambda: str(rng.randint(2, 22)),
        "serial": lambda: f"SN{rng.randint(0, 99_999_999):08d}",
        "claim": lambda: f"WC-{rng.choice((2024, 2025))}-{rng.randint(0, 99999):05d}",
        "rma": lambda: f"RMA-{rng.randint(0, 999_999):06d}",
        "email": lambda: email(rng, split),
        "email2": lambda: email(rng, split),
        "country": lambda: rng.choice(t.COUNTRIES.for_split(split)),
        "address": lambda: rng.choice(t.ADDRESSES.for_split(split)),
        "colour": lambda: rng.choice(t.COLOURS[product]),
        "batch": lambda: batch_code(rng, product),
        "symptom": lambda: rng.choice(t.SYMPTOMS[product].for_split(split)),
        "hazard": lambda: rng.choice(t.HAZARDS[product].for_split(split)),
        "howto": lambda: rng.choice(t.HOWTOS[product].for_split(split)),
    }
    return template.format(**{name: values[name]() for name in slots}), product, cents


def add_typos(template: str, rng: random.Random, split: str) -> str:
    """Misspells template words, never slots: table typos in training, swapped letters held out."""

    def misspell(match: re.Match[str]) -> str:
        word = match.group(0)
        if split == "train":
            typo = t.TYPOS.get(word.lower())
            return typo if typo and rng.random() < 0.6 else word
        if len(word) >= 5 and rng.random() < 0.3:
            i = rng.randint(1, len(word) - 3)
            return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
        return word

    return re.sub(
        r"\{\w+\}|[A-Za-z]+",
        lambda m: m.group(0) if m.group(0)[0] == "{" else misspell(m),
        template,
    )


def wrap(core: str, tone: str, repeat_line: str, rng: random.Random, split: str) -> str:
    """Puts the tone's opener and closer around the core; the tone never changes a label."""
    name = rng.choice(t.NAMES.for_split(split))

    def pick(pool: t.Pool) -> str:
        return rng.choice(pool.for_split(split)).format(name=name)

    if tone == "angry" and rng.random() < 0.3:
        core = core.upper()
    if tone == "polite":
        parts = [pick(t.POLITE_OPENERS), core, repeat_line, pick(t.POLITE_CLOSERS)]
    elif tone == "angry":
        parts = [pick(t.ANGRY_OPENERS), core, repeat_line, pick(t.ANGRY_CLOSERS)]
    elif tone == "rambling":
        before, after = rng.sample(t.RAMBLING.for_split(split), 2)
        parts = [before, core, repeat_line, after]
    else:
        parts = [core, repeat_line]
    message = " ".join(part for part in parts if part)
    if tone == "terse":
        message = (message[0].lower() + message[1:]).rstrip(".!?")
    return message


def make_example(rng: random.Random, split: str, category: str) -> Example:
    """One message of the given category, with a random intent, template, tone and slots."""
    intent = rng.choice([i for i in t.INTENTS if i.category == category])
    tone = rng.choice(TONES)
    template = rng.choice(intent.templates.for_split(split))
    if tone == "typos":
        template = add_typos(template, rng, split)
    core, product, cents = fill(template, intent, rng, split)
    repeat = category != "safety" and rng.random() < REPEAT_RATE
    repeat_line = rng.choice(t.REPEAT_CONTACT.for_split(split)) if repeat else ""
    message = wrap(core, tone, repeat_line, rng, split)
    return Example(message, label(intent, product, cents, repeat), tone, repeat)


def normalised(message: str) -> str:
    """How ladder's data-quality gate compares messages: case and spacing do not count."""
    return " ".join(message.lower().split())


def build_split(split: str, size: int) -> list[Example]:
    """`size` distinct messages, categories in equal turns, shuffled."""
    rng = random.Random(f"{SEED}-{split}")
    examples: list[Example] = []
    seen: set[str] = set()
    while len(examples) < size:
        example = make_example(rng, split, CATEGORIES[len(examples) % len(CATEGORIES)])
        key = normalised(example.message)
        if key not in seen:
            seen.add(key)
            examples.append(example)
    rng.shuffle(examples)
    return examples


def pick_few_shot(train: list[Example]) -> list[dict[str, str]]:
    """A plainly worded training example per few-shot category, varying the priorities shown."""
    chosen: list[Example] = []
    for category in FEW_SHOT_CATEGORIES:
        plain = [
            e
            for e in train
            if e.labels["category"] == category and e.tone in ("neutral", "polite") and not e.repeat
        ]
        shown = {e.labels["priority"] for e in chosen}
        chosen.append(next((e for e in plain if e.labels["priority"] not in shown), plain[0]))
    return [{"user": e.message, "assistant": assistant_line(e.labels)} for e in chosen]


def write_jsonl(path: Path, rows: Sequence[Mapping[str, object]]) -> None:
    """One JSON object per line, LF endings, UTF-8."""
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def describe(split: str, examples: list[Example]) -> None:
    """Prints the label distribution of a split."""
    print(f"{split}: {len(examples)} examples")
    for key in ("category", "priority", "product", "needs_human"):
        counts = Counter(str(e.labels[key]) for e in examples)
        print(f"  {key}: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))


def main() -> None:
    """Generates, checks and writes every file."""
    splits = {split: build_split(split, size) for split, size in SIZES.items()}
    overlap = {normalised(e.message) for e in splits["train"]} & {
        normalised(e.message) for e in splits["heldout"]
    }
    assert not overlap, f"{len(overlap)} messages occur in both splits, e.g. {sorted(overlap)[:3]}"
    for split, examples in splits.items():
        write_jsonl(HERE / f"{split}.jsonl", [e.chat_row() for e in examples])
        describe(split, examples)
    write_jsonl(HERE / "few_shot.jsonl", pick_few_shot(splits["train"]))
    print("no message occurs in both splits")


if __name__ == "__main__":
    main()
