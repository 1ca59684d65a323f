"""Merge stage: decode, label and de-duplicate data/raw/ into data/merged/{manifest,rejected}.csv.

Run from the repository root: PYTHONPATH=src python stages/merge.py
"""

from __future__ import annotations

from dogbreeds.common.cli import run_stage
from dogbreeds.data.merge import merge_sources
from dogbreeds.params import load_params


def main() -> None:
    params = load_params()
    merge_sources(params.data, params.merge, min_per_breed=params.split.min_per_breed)


if __name__ == "__main__":
    run_stage(main)
