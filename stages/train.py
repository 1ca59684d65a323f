"""DVC stage train@<arch>-<schedule>-<seed>: train one net, one seed (dogbreeds.pipeline.train)."""

from dogbreeds.common.cli import run_arguments, run_stage
from dogbreeds.params import load_params
from dogbreeds.pipeline.train import run_training


def main() -> None:
    args = run_arguments(__doc__)
    run_training(load_params(), args.arch, args.schedule, args.seed)


if __name__ == "__main__":
    run_stage(main)
