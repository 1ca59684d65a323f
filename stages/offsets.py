"""DVC stage offsets: every deformable net's learned offsets (dogbreeds.analysis.offsets)."""

import argparse

from dogbreeds.analysis.offsets import run_offsets
from dogbreeds.common.cli import run_stage
from dogbreeds.params import load_params


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    run_offsets(load_params())


if __name__ == "__main__":
    run_stage(main)
