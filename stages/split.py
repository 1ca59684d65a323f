"""Split stage: stratified, seeded train/val/test assignment into data/split/split.csv.

Run from the repository root: PYTHONPATH=src python stages/split.py
"""

from __future__ import annotations

from dogbreeds.common.cli import run_stage
from dogbreeds.data.split import split_manifest
from dogbreeds.params import load_params


def main() -> None:
    params = load_params()
    split_manifest(params.split, breeds=params.data.breeds)


if __name__ == "__main__":
    run_stage(main)
