"""DVC stage offsets: learned DeformConv offsets of every deformable net (see dogbreeds.offsets)."""

import argparse

from dogbreeds.cli import run_stage
from dogbreeds.offsets import run_offsets
from dogbreeds.params import load_params


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    run_offsets(load_params())


if __name__ == "__main__":
    run_stage(main)
