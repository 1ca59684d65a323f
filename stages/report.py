"""DVC stage report: the paper's tables with our numbers beside them (see dogbreeds.report)."""

import argparse

from dogbreeds.cli import run_stage
from dogbreeds.params import load_params
from dogbreeds.report import run_report


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    run_report(load_params())


if __name__ == "__main__":
    run_stage(main)
