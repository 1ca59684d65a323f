"""Shared shell for stage scripts: a run's arguments, logging set-up and one-line errors with a
non-zero exit."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import NoReturn

from dogbreeds import DogbreedsError
from dogbreeds.compat import exit_now


def run_stage(main: Callable[[], None]) -> NoReturn:
    """Run a stage's main and end the process: status 0, or a DogbreedsError as one line on
    stderr and status 1.

    Call it last in a stage script: it does not return (`end_process`).
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        main()
    except DogbreedsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    end_process(0)


def end_process(status: int) -> NoReturn:
    """Exit as the interpreter would, less its teardown of every module (about a second of
    every stage that imports torch and MLflow: `python -m dogbreeds fixedcost`, "after last
    step"), unless a file is still open for writing: `compat.exit_now`."""
    exit_now(status)


def run_arguments(description: str) -> argparse.Namespace:
    """--arch, --schedule and --seed: the run a per-run stage (train@, evaluate@) works on, as
    dvc.yaml's matrix passes it; params.yaml must list each (checked where params are read)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--arch", required=True, help="a net listed in params train.archs")
    parser.add_argument("--schedule", required=True, help="a key of params train.schedules")
    parser.add_argument("--seed", required=True, type=int, help="one of params train.seeds")
    return parser.parse_args()
