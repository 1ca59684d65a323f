"""DVC stage robustness: the clean test set deformed per kind and strength (see
dogbreeds.robustness)."""

import argparse

from dogbreeds.cli import run_stage
from dogbreeds.params import load_params
from dogbreeds.robustness import make_robustness_sets


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    params = load_params()
    make_robustness_sets(params.deform, params.robustness.kinds, params.robustness.strengths)


if __name__ == "__main__":
    run_stage(main)
