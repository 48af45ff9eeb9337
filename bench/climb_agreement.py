"""Does a climb agree with `ladder eval` of the same rungs? Reads a climb's climb.json and the
JSON of one or more `ladder eval --json` runs of the same task, limit and seed, and prints each
rung's metric from both, and which rung each names.

    python bench/climb_agreement.py bench/climb/support-triage/climb.json eval.json [more.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from evaluation.runner import EvaluationOutcome


def main(climb_file: Path, eval_files: list[Path]) -> int:
    """Prints the comparison as Markdown; exit 1 when a rung's numbers differ."""
    climb = json.loads(climb_file.read_text(encoding="utf-8"))
    runs = [
        EvaluationOutcome.from_dict(json.loads(p.read_text(encoding="utf-8"))) for p in eval_files
    ]
    evaluation = EvaluationOutcome.merged(runs)
    metric = evaluation.target.metric
    measured = {s.name: s for s in evaluation.summaries}
    print(f"| rung | configuration | climb: {metric} | ladder eval: {metric} | same |")
    print("|---|---|---|---|---|")
    differ = 0
    for row in climb["rungs"]:
        mine = row["metrics"].get(metric)
        theirs = measured.get(row["configuration"])
        other = theirs.metrics.get(metric) if theirs is not None else None
        same = mine is not None and other is not None and abs(mine["value"] - other.value) < 1e-9
        differ += not same
        cell = "-" if other is None else f"{other.value:.3f} [{other.low:.2f}, {other.high:.2f}]"
        mine_cell = (
            "-" if mine is None else f"{mine['value']:.3f} [{mine['low']:.2f}, {mine['high']:.2f}]"
        )
        print(
            f"| {row['rung']} | {row['configuration']} | {mine_cell} | {cell} |"
            f" {'yes' if same else 'NO'} |"
        )
    print(f"\nclimb: {climb['conclusion']}")
    print(f"ladder eval: {evaluation.recommendation.reason}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]]))
