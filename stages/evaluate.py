"""DVC stage evaluate@<arch>-<schedule>-<seed>: score one net (dogbreeds.pipeline.evaluate)."""

from dogbreeds.common.cli import run_arguments, run_stage
from dogbreeds.params import load_params
from dogbreeds.pipeline.evaluate import run_evaluation


def main() -> None:
    args = run_arguments(__doc__)
    run_evaluation(load_params(), args.arch, args.schedule, args.seed)


if __name__ == "__main__":
    run_stage(main)
