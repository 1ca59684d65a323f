"""`python -m dogbreeds <command> [options]`: the commands outside the DVC pipeline.

Each command is a module of `dogbreeds.commands` with a `main(argv)`; `--help` after a
command shows its own options.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "answers": "the paper's two questions from a snapshot's runs.tsv, with what they can detect",
    "bench": "training-step and evaluation throughput of every net (docs/performance.md)",
    "cluster": "dvc repro on a Dask cluster: each stage on a worker, shared via the DVC remote",
    "compare": "accuracy against MACs and params across DVC experiments",
    "fixedcost": "a train and evaluate stage's cost besides its work: imports, store, logging",
    "grid": "queue MobileNet's width x resolution grid as DVC experiments",
    "predict": "which breed is this photo? (a checkpoint or an MLflow model)",
    "preset": "a preset of params (presets/tiny.yaml: the tiny study) as dvc exp run -S options",
    "quickstudy": "train and evaluate every net in one process, without DVC or MLflow",
    "recipes": "one change of the training recipe at a time, paired by seed, against a baseline",
    "register": "make each net's best run of the study its registered champion",
    "repro": "dvc repro, after repairing a dvc.lock that a killed run cut short (make study)",
    "snapshot": "copy a finished study's report, metrics and figures into results/",
    "summary": "params and MACs of the three nets at a given alpha and side",
    "verify": "rerun a committed study (results/<study>) and judge it against its snapshot",
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {what}" for name, what in COMMANDS.items()]
    return "usage: python -m dogbreeds <command> [options]\n\ncommands:\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command '{name}'. Known: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    result = importlib.import_module(f"dogbreeds.commands.{name}").main(rest)
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
