"""Download stage: fetch, verify and safely extract each source in data.sources to data/raw/.

Run from the repository root: PYTHONPATH=src python stages/download.py
"""

from __future__ import annotations

from dogbreeds.common.cli import run_stage
from dogbreeds.data.sources import download_sources
from dogbreeds.params import load_params


def main() -> None:
    params = load_params()
    download_sources(params.data)


if __name__ == "__main__":
    run_stage(main)
