"""Deform stage: resized uint8 tensors per split in data/prepared/, val/test deformed.

Also writes metrics/data.json and metrics/deform_preview.png.
Run from the repository root: PYTHONPATH=src python stages/deform.py
"""

from __future__ import annotations

from dogbreeds.common.cli import run_stage
from dogbreeds.data.deformations import prepare_data
from dogbreeds.params import load_params


def main() -> None:
    params = load_params()
    prepare_data(params)


if __name__ == "__main__":
    run_stage(main)
