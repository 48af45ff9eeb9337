"""Times grammar libraries for constrained decoding on SmolLM2's tokenizer: compile, then mask.

Run from the repository root: `python bench/structured_decoding.py [--quick] [--out FILE]`.
Each library compiles the support-triage schema (one line, keys in declared order), a regex and a
choice, then walks a valid answer token by token as greedy decoding would: at every step it
computes the mask of allowed tokens, applies it to a logits row of the model's vocabulary size and
consumes the answer's next token. A library that is not installed, or fails, shows as such.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import harness

from adapters.base_model import prepare_base_model
from service.routing.output import JSON_LAYOUT

SECTION_TITLE = "## Constrained decoding: grammar libraries on SmolLM2's tokenizer"
LIBRARIES = ("llguidance", "xgrammar", "outlines-core", "lm-format-enforcer")
SCHEMA_FILE = harness.REPO / "corpus" / "tasks" / "support-triage" / "schema.json"
TRIAGE = {
    "category": "safety",
    "priority": "urgent",
    "product": "aurora-k5-pro",
    "needs_human": True,
}
CASES: dict[str, tuple[str, str]] = {
    "json schema (support-triage)": ("json", json.dumps(TRIAGE, separators=(", ", ": "))),
    r"regex `BW-\d{6}-[A-Z]{2}`": (r"BW-\d{6}-[A-Z]{2}", "BW-204816-KQ"),
    "choice (3 labels)": ("choice", "neutral"),
}
CHOICES = ("positive", "negative", "neutral")
ENGINE_MESSAGE = (
    "My Aurora K5 Pro sparks and smells of smoke when I switch it on. Third time writing!"
)
FULL_REPEATS, QUICK_REPEATS = 5, 1
# The engine comparison decodes with the model (seconds per answer), so it runs fewer times.
ENGINE_RUNS, ENGINE_MAX_TOKENS = 3, 40

NOTES = (
    "A masked step costs about 0.1 ms against about 75 ms for one decoded token of SmolLM2-135M "
    "on this CPU (`local_engine.py`), so the per-token difference between libraries is noise "
    "next to the model; compile time decides per-request cost. outlines-core compiles JSON "
    "through a regex (no `json_object`; the slowest compile) and builds its "
    "vocabulary only from a hub id, so this script builds it by hand; lm-format-enforcer's "
    "transformers helper does not import on transformers 5 (rebuilt here the same way)."
)

# A step computes the next mask into the logits row and consumes one token.
Step = Callable[[Any, int], None]


@dataclass(frozen=True)
class Cell:
    """One library on one case: compile time and the median cost of one decoding step."""

    compile_ms: float
    step_us: float
    steps: int

    @property
    def answer_ms(self) -> float:
        """What constraining one whole answer costs: one compile plus every step."""
        return self.compile_ms + self.step_us * self.steps / 1000


def apply_bitmask(logits: Any, bitmask: Any, vocab: int) -> None:
    """Sets the logits of tokens whose bit is 0 to -inf (32 tokens per int32, little-endian)."""
    import numpy as np
    import torch

    bits = np.unpackbits(bitmask.numpy().view(np.uint8), bitorder="little")[:vocab]
    logits.masked_fill_(torch.from_numpy(bits == 0), float("-inf"))


def regex_for(case: str) -> str:
    """The regular expression of a non-JSON case (a choice is an alternation)."""
    return "(" + "|".join(re.escape(c) for c in CHOICES) + ")" if case == "choice" else case


def llguidance_step(tokenizer: Any, vocab: int) -> Callable[[str], Any]:
    """Compiles with llguidance; returns a compile function yielding a step function."""
    import llguidance
    import llguidance.hf
    import llguidance.torch

    lltok = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab)

    def compile_case(case: str) -> Any:
        grammar = (
            llguidance.LLMatcher.grammar_from_json_schema(SCHEMA_FILE.read_text(), JSON_LAYOUT)
            if case == "json"
            else llguidance.LLMatcher.grammar_from_regex(regex_for(case))
        )
        matcher = llguidance.LLMatcher(lltok, grammar, log_level=0)
        if matcher.is_error():
            raise ValueError(matcher.get_error())
        bitmask = llguidance.torch.allocate_token_bitmask(1, vocab)

        def step(logits: Any, token: int) -> None:
            llguidance.torch.fill_next_token_bitmask(matcher, bitmask)
            apply_bitmask(logits, bitmask[0], vocab)
            if not matcher.consume_token(token):
                raise ValueError(matcher.get_error())

        return step

    return compile_case


def xgrammar_step(tokenizer: Any, vocab: int) -> Callable[[str], Any]:
    """Compiles with xgrammar (cache disabled, so compile time is real each time)."""
    import xgrammar

    info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab)
    compiler = xgrammar.GrammarCompiler(info, cache_enabled=False)

    def compile_case(case: str) -> Any:
        compiled = (
            compiler.compile_json_schema(
                SCHEMA_FILE.read_text(), any_whitespace=False, separators=(", ", ": ")
            )
            if case == "json"
            else compiler.compile_regex(regex_for(case))
        )
        matcher = xgrammar.GrammarMatcher(compiled)
        bitmask = xgrammar.allocate_token_bitmask(1, vocab)

        def step(logits: Any, token: int) -> None:
            matcher.fill_next_token_bitmask(bitmask, 0)
            apply_bitmask(logits, bitmask[0], vocab)
            if not matcher.accept_token(token):
                raise ValueError(f"token {token} rejected")

        return step

    return compile_case


def outlines_core_step(tokenizer: Any, vocab: int) -> Callable[[str], Any]:
    """Compiles with outlines-core: JSON schema to a regex, the regex to a token index."""
    import outlines_core
    import outlines_core.json_schema
    import torch

    eos = tokenizer.eos_token_id
    tokens: dict[str, list[int]] = {}
    for token, index in tokenizer.get_vocab().items():
        if index != eos and index < vocab:
            tokens.setdefault(tokenizer.convert_tokens_to_string([token]), []).append(index)
    vocabulary = outlines_core.Vocabulary(eos, tokens)

    def compile_case(case: str) -> Any:
        pattern = (
            outlines_core.json_schema.build_regex_from_schema(SCHEMA_FILE.read_text(), r"[ ]?")
            if case == "json"
            else regex_for(case)
        )
        guide = outlines_core.Guide(outlines_core.Index(pattern, vocabulary))
        bitmask = torch.zeros((1, (vocab + 31) // 32), dtype=torch.int32)

        def step(logits: Any, token: int) -> None:
            guide.write_mask_into(bitmask.data_ptr(), bitmask.numel(), 4)
            apply_bitmask(logits, bitmask[0], vocab)
            if token != eos:  # the end token ends the walk; the guide has no state after it
                guide.advance(token)

        return step

    return compile_case


def lm_format_enforcer_step(tokenizer: Any, vocab: int) -> Callable[[str], Any]:
    """Compiles with lm-format-enforcer; its transformers helper fails on transformers 5, so the
    tokenizer data is built here the way that helper does."""
    import lmformatenforcer
    import torch

    zero = tokenizer.encode("0")[-1]
    special = set(tokenizer.all_special_ids)
    regular = []
    for index in range(vocab):
        if index not in special:
            after_zero = tokenizer.decode([zero, index])[1:]
            regular.append((index, after_zero, len(after_zero) > len(tokenizer.decode([index]))))
    data = lmformatenforcer.TokenEnforcerTokenizerData(
        regular, tokenizer.decode, tokenizer.eos_token_id, False, vocab
    )

    def compile_case(case: str) -> Any:
        parser = (
            lmformatenforcer.JsonSchemaParser(json.loads(SCHEMA_FILE.read_text()))
            if case == "json"
            else lmformatenforcer.RegexParser(regex_for(case))
        )
        enforcer = lmformatenforcer.TokenEnforcer(data, parser)
        prefix: list[int] = []

        def step(logits: Any, token: int) -> None:
            allowed = enforcer.get_allowed_tokens(prefix).allowed_tokens
            keep = torch.zeros(vocab, dtype=torch.bool)
            keep[allowed] = True
            logits.masked_fill_(~keep, float("-inf"))
            prefix.append(token)

        return step

    return compile_case


SETUPS = {
    "llguidance": llguidance_step,
    "xgrammar": xgrammar_step,
    "outlines-core": outlines_core_step,
    "lm-format-enforcer": lm_format_enforcer_step,
}


def measure(
    compile_case: Callable[[str], Step], case: str, answer: list[int], vocab: int, repeats: int
) -> Cell:
    """Compile time and per-step time, medians over `repeats` walks."""
    import torch

    row = torch.randn(vocab)
    compiles: list[float] = []
    steps: list[float] = []
    for _ in range(repeats):
        started = time.perf_counter()
        step = compile_case(case)
        compiles.append(time.perf_counter() - started)
        for token in answer:
            logits = row.clone()
            started = time.perf_counter()
            step(logits, token)
            steps.append(time.perf_counter() - started)
            if logits[token] == float("-inf"):
                raise ValueError(f"the valid answer's token {token} was masked")
    return Cell(statistics.median(compiles) * 1000, statistics.median(steps) * 1e6, len(answer))


def bench_library(
    name: str, tokenizer: Any, vocab: int, repeats: int
) -> tuple[float, dict[str, Cell | str]]:
    """Tokenizer set-up time, then one cell (or the failure) per case."""
    started = time.perf_counter()
    try:
        compile_case = SETUPS[name](tokenizer, vocab)
    except Exception as error:  # a library that cannot start is a result
        return 0.0, {case: f"fails: {type(error).__name__}" for case in CASES}
    setup_s = time.perf_counter() - started
    cells: dict[str, Cell | str] = {}
    for label, (case, text) in CASES.items():
        answer = [*tokenizer.encode(text, add_special_tokens=False), tokenizer.eos_token_id]
        try:
            cells[label] = measure(compile_case, case, answer, vocab, repeats)
        except Exception as error:
            cells[label] = f"fails: {type(error).__name__}: {str(error)[-300:]}"
    return setup_s, cells


def needs_triton(name: str) -> bool:
    """Whether installing the library on Linux x86-64 pulls in triton (a CUDA compiler stack)."""
    try:
        requires = importlib.metadata.requires(name) or []
    except importlib.metadata.PackageNotFoundError:
        return False
    return any(r.startswith("triton") and "extra ==" not in r for r in requires)


def choice(results: dict[str, tuple[float, dict[str, Cell | str]]]) -> str:
    """The library the service uses: among those that compile every case and need no triton,
    the one whose answers cost least in all (compile + steps, summed over the cases)."""
    eligible = {
        name: sum(c.answer_ms for c in cells.values() if isinstance(c, Cell))
        for name, (_, cells) in results.items()
        if not needs_triton(name) and all(isinstance(c, Cell) for c in cells.values())
    }
    if not eligible:
        return "No library compiled every case without triton."
    chosen = min(eligible, key=eligible.__getitem__)
    return (
        f"Chosen: **{chosen}**, the least total cost per answer ({eligible[chosen]:.1f} ms over "
        "the three cases) among the libraries that compile all three and install beside the CPU "
        "build of torch without triton."
    )


@dataclass(frozen=True)
class EngineRate:
    """The local engine on the triage prompt, with or without the schema: medians."""

    label: str
    completion_tokens: float
    decode_tps: float
    total_s: float


async def engine_rates(folder: Path, repeats: int) -> list[EngineRate]:
    """Greedy answers to one triage message, unconstrained and constrained in turn (so both
    see the same machine load), after one warm-up of each; decode speed leaves prefill out."""
    from local_engine import one_generation

    from service.engines.base import ChatMessage, GenerationRequest, SamplingParams
    from service.engines.local import LocalEngine
    from service.routing import output

    engine = LocalEngine(folder, threads=1)
    await engine.wait_until_loaded()
    messages = (
        ChatMessage("system", (SCHEMA_FILE.parent / "system_prompt.txt").read_text().strip()),
        ChatMessage("user", ENGINE_MESSAGE),
    )
    constraints = {
        "triage prompt": None,
        "triage prompt + schema": output.json_schema(json.loads(SCHEMA_FILE.read_text())),
    }
    samples: dict[str, list[dict[str, float]]] = {label: [] for label in constraints}
    for run in range(repeats + 1):
        for label, constraint in constraints.items():
            request = GenerationRequest(
                messages, sampling=SamplingParams(max_tokens=ENGINE_MAX_TOKENS), output=constraint
            )
            sample = await one_generation(engine, request)
            if run:
                samples[label].append(sample)
    await engine.aclose()
    return [
        EngineRate(
            label,
            statistics.median(s["tokens"] for s in runs),
            statistics.median(s["decode_tps"] for s in runs),
            statistics.median(s["total_s"] for s in runs),
        )
        for label, runs in samples.items()
    ]


def engine_table(rates: list[EngineRate], repeats: int) -> str:
    """The local engine's decode speed with and without the schema."""
    rows = [
        f"| {r.label} | {r.completion_tokens:.0f} | {r.decode_tps:.1f} | {r.total_s:.2f} |"
        for r in rates
    ]
    return (
        "The local engine (SmolLM2-135M, float32, 1 thread) answering one triage message with "
        f"the triage system prompt, greedy, max {ENGINE_MAX_TOKENS} tokens; {repeats} runs of "
        "each, interleaved, after a warm-up of each (the first constrained request also builds "
        "llguidance's view of the tokenizer), medians:\n\n"
        "| prompt | completion tokens | decode tokens/s | whole answer (s) |\n|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n"
    )


def markdown(
    results: dict[str, tuple[float, dict[str, Cell | str]]],
    machine: dict[str, str],
    repeats: int,
    engine: str,
) -> str:
    """The results section: one row per library; per case compile ms, step µs, answer ms."""
    header = "| library | needs triton | tokenizer set-up (s) | " + " | ".join(
        f"{label}: compile ms / step µs / answer ms" for label in CASES
    )
    rows = []
    for name, (setup_s, cells) in results.items():
        shown = [
            f"{c.compile_ms:.1f} / {c.step_us:.0f} / {c.answer_ms:.1f}"
            if isinstance(c, Cell)
            else c
            for c in cells.values()
        ]
        triton = "yes" if needs_triton(name) else "no"
        rows.append(f"| {name} | {triton} | {setup_s:.2f} | " + " | ".join(shown) + " |")
    return (
        f"{SECTION_TITLE}\n\n"
        f"`python bench/structured_decoding.py`; {harness.machine_line(machine)}.\n\n"
        f"A step = compute the allowed-token mask, apply it to one float32 logits row of "
        f"the vocabulary's size, consume the answer's next token (end token included); medians "
        f"over {repeats} walks of a valid answer. Compile = source to a ready matcher; answer = "
        "compile + every step of the answer (what one request pays). Tokenizer set-up is paid "
        "once per tokenizer. JSON is one line with keys in the declared order for every library "
        "but lm-format-enforcer (free whitespace, any key order unless configured).\n\n"
        f"{header} |\n|---|---|---|" + "---|" * len(CASES) + "\n" + "\n".join(rows) + "\n\n"
        f"{choice(results)} {NOTES}\n\n{engine}"
    )


def main() -> None:
    """Loads the tokenizer, benchmarks every library, publishes the section."""
    parser = harness.run_options(__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=harness.REPO / ".ladder" / "cache")
    args = parser.parse_args()
    repeats = QUICK_REPEATS if args.quick else FULL_REPEATS
    from transformers import AutoConfig, AutoTokenizer

    folder = prepare_base_model(args.cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    vocab = AutoConfig.from_pretrained(folder).vocab_size
    machine = harness.machine_info(("torch", "transformers", *LIBRARIES))
    results = {name: bench_library(name, tokenizer, vocab, repeats) for name in LIBRARIES}
    engine_runs = QUICK_REPEATS if args.quick else ENGINE_RUNS
    rates = asyncio.run(engine_rates(folder, engine_runs))
    machine["load average at end"] = harness.load_average()
    section = markdown(results, machine, repeats, engine_table(rates, engine_runs))
    harness.publish(section, SECTION_TITLE, args)


if __name__ == "__main__":
    main()
