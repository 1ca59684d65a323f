"""DVC stage evaluate@<arch>-<schedule>-<seed>: score one net (dogbreeds.pipeline.evaluate)."""

import argparse

from dogbreeds.common.cli import run_stage
from dogbreeds.params import load_params
from dogbreeds.pipeline.evaluate import run_evaluation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", required=True, help="a net listed in params train.archs")
    parser.add_argument("--schedule", required=True, help="a key of params train.schedules")
    parser.add_argument("--seed", required=True, type=int, help="one of params train.seeds")
    args = parser.parse_args()
    run_evaluation(load_params(), args.arch, args.schedule, args.seed)


if __name__ == "__main__":
    run_stage(main)
