"""DVC stage report: the paper's tables with our numbers beside them (dogbreeds.analysis.report)."""

import argparse

from dogbreeds.analysis.report import run_report
from dogbreeds.common.cli import run_stage
from dogbreeds.params import load_params
from dogbreeds.tracking.study import log_report


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    run_report(load_params())
    log_report()  # into the study's MLflow run: headline metrics, report.md, figures


if __name__ == "__main__":
    run_stage(main)
