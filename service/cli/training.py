"""The work behind `ladder train`, kept apart from the command's argument parsing."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from adapters.data import Example, GateReport, check, load_examples, split_heldout
from adapters.registry import AdapterRegistry, AdapterVersion
from service.settings import Settings


def _with_system(examples: list[Example], prompt: str | None) -> list[Example]:
    if not prompt:
        return examples
    return [
        e
        if e.messages[0]["role"] == "system"
        else replace(e, messages=({"role": "system", "content": prompt}, *e.messages))
        for e in examples
    ]


def _tokenizer(settings: Settings) -> Any:
    from transformers import AutoTokenizer

    from adapters.base_model import prepare_base_model

    return AutoTokenizer.from_pretrained(str(prepare_base_model(settings.cache_dir)))


def gate_data(
    settings: Settings,
    data: Path,
    heldout: Path | None,
    heldout_fraction: float,
    system_prompt: str | None,
    max_tokens: int,
    seed: int,
) -> GateReport:
    """Loads training and held-out data and runs every check of the gate."""
    train, findings = load_examples(data)
    if heldout is not None:
        held, held_findings = load_examples(heldout)
        findings += held_findings
    else:
        train, held = split_heldout(train, heldout_fraction, seed)
    train, held = _with_system(train, system_prompt), _with_system(held, system_prompt)
    tokenizer = _tokenizer(settings)

    def count(example: Example) -> int:
        ids = tokenizer.apply_chat_template(
            list(example.messages), tokenize=True, return_dict=False
        )
        return len(ids)

    report = check(train, held, count, max_tokens)
    report.findings[:0] = findings
    return report


@contextmanager
def _step_reporter() -> Iterator[Callable[[int, int, float], None]]:
    """A progress bar on a terminal; a line every 10 steps otherwise (for logs and CI)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if not Console(stderr=True).is_terminal:

        def log(step: int, total: int, loss: float) -> None:
            if step % 10 == 0 or step == total:
                print(f"step {step}/{total} loss {loss:.4f}", file=sys.stderr, flush=True)

        yield log
        return
    columns = (
        TextColumn("training {task.fields[loss]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task("train", total=None, loss="")
        yield lambda step, total, loss: bar.update(
            task, completed=step, total=total, loss=f"loss {loss:.3f}"
        )


def run_training(
    settings: Settings,
    name: str,
    report: GateReport,
    data: Path,
    data_hash: str,
    **options: Any,
) -> AdapterVersion:
    """Trains on the gate's training examples (a validation slice held back) and registers it."""
    from adapters.base_model import BASE_MODEL_ID, prepare_base_model
    from adapters.train import TrainingOptions, train_adapter

    training = TrainingOptions(threads=max(1, settings.torch_threads), **options)
    fit, validation = split_heldout(report.train, 0.1, training.seed)
    registry = AdapterRegistry(settings.adapters_root)
    registry.root.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(dir=registry.root, prefix=".training-") as scratch,
        _step_reporter() as on_step,
    ):
        run = train_adapter(
            prepare_base_model(settings.cache_dir),
            fit,
            validation,
            Path(scratch) / "adapter",
            training,
            on_step,
        )
        manifest = {
            "base_model": BASE_MODEL_ID,
            "training_data": {
                "path": str(data.resolve()),
                "sha256": data_hash,
                "examples": len(fit),
                "validation_examples": len(validation),
                "heldout_examples": len(report.heldout),
            },
            "training": {**training.__dict__, "target_modules": list(training.target_modules)},
            "run": run.as_dict(),
            "source": "ladder train",
        }
        adapter = registry.register(name, Path(scratch) / "adapter", manifest)
    return adapter
