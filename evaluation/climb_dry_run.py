"""`ladder climb --dry-run`: the plan with each rung's estimated tokens, cost and time."""

from __future__ import annotations

from typing import TYPE_CHECKING

from evaluation.climb_plan import Estimate

if TYPE_CHECKING:
    from evaluation.climb import Climb

# Rough speed of a LoRA step of batch 8 on the bundled model, 2 CPU cores.
SECONDS_PER_STEP = 8.0


def training_seconds(climb: Climb) -> float:
    """An estimate of one adapter's training time."""
    assert climb.task.train is not None
    rows = sum(1 for line in climb.task.train.read_text().splitlines() if line.strip())
    options = climb.options.training
    rows = int(rows * 0.9 / (1 - climb.options.replay_fraction))
    steps = -(-rows // options.batch_size) * options.epochs
    if options.max_steps:
        steps = min(steps, options.max_steps)
    seconds = steps * SECONDS_PER_STEP * options.batch_size / 8
    if options.replay_loss == "distill":  # the base's forward pass (a third of a step) on replay
        seconds *= 1 + climb.options.replay_fraction / 3
    return seconds


def describe(climb: Climb) -> str:
    """The plan, its estimated time and cost, without answering or training anything."""
    plan = climb.plan()
    lines = [f"plan for {climb.task.name} ({climb.task.kind}), target {climb.options.target}:"]
    total = 0.0
    for i, rung in enumerate(plan.rungs, 1):
        e: Estimate = plan.estimates[rung.name]
        layers = ", ".join(rung.configuration.layers())
        total += e.seconds
        lines.append(
            f"{i}. {rung.id} ({rung.name}, layers: {layers or 'none'}):"
            f" ~{e.prompt_tokens:.0f} prompt tokens per call,"
            f" ${e.cost_per_1k:.4f} per 1k calls,"
            f" ~{e.seconds / 60:.1f} min for {len(climb.examples)} examples"
        )
    for rung_id, reason in plan.left_out.items():
        lines.append(f"-  {rung_id}: left out ({reason})")
    refusal = climb.trains()
    if refusal is None:
        variants = 2 if climb.options.compare_replay and climb.options.replay_fraction else 1
        train_s = training_seconds(climb) * variants
        probes = (climb.options.general_limit or 89) * (1 + 2 * variants) * 2.0
        evals = len(climb.examples) * 3 * 6.0
        lines.append(
            f"then, only if no rung meets the target: train {variants} LoRA adapter(s)"
            f" (replay fraction {climb.options.replay_fraction:g},"
            f" {climb.options.training.replay_loss}), ~{train_s / 60:.0f} min,"
            f" evaluate the adapter rungs (~{evals / 60:.0f} min) and forgetting"
            f" (~{probes / 60:.0f} min)"
        )
        total_worst = total + train_s + probes + evals
    else:
        lines.append(f"no adapter rung: {refusal}")
        total_worst = total
    lines.append(
        f"estimated time: {total / 60:.0f} min if the last lower rung is reached,"
        f" {total_worst / 60:.0f} min at most (local engine, 2 CPU cores; actual speed varies)"
    )
    tokens = sum(
        (e.prompt_tokens + e.completion_tokens) * len(climb.examples)
        for e in plan.estimates.values()
    )
    dollars = sum(e.cost_per_1k * len(climb.examples) / 1000 for e in plan.estimates.values())
    lines.append(
        f"estimated evaluation traffic: {tokens:,.0f} tokens, ${dollars:.2f} at hosted prices"
    )
    return "\n".join(lines)
