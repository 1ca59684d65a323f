"""DVC stage train@<arch>-<schedule>: train one net on one schedule (see dogbreeds.train)."""

import argparse

from dogbreeds.cli import run_stage
from dogbreeds.params import load_params
from dogbreeds.train import run_training


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", required=True, help="a net listed in params train.archs")
    parser.add_argument("--schedule", required=True, help="a key of params train.schedules")
    args = parser.parse_args()
    run_training(load_params(), args.arch, args.schedule)


if __name__ == "__main__":
    run_stage(main)
