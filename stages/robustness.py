"""DVC stage robustness: the clean test set deformed per kind and strength (see
dogbreeds.data.robustness)."""

import argparse

from dogbreeds.common.cli import run_stage
from dogbreeds.data.robustness import make_robustness_sets
from dogbreeds.params import load_params


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    params = load_params()
    make_robustness_sets(params.deform, params.robustness.kinds, params.robustness.strengths)


if __name__ == "__main__":
    run_stage(main)
