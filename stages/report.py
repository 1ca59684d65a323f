"""DVC stage report: the paper's tables with our numbers beside them (dogbreeds.analysis.report)."""

import argparse

from dogbreeds.analysis.report import run_report
from dogbreeds.common.cli import run_stage
from dogbreeds.params import load_params


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    run_report(load_params())


if __name__ == "__main__":
    run_stage(main)
