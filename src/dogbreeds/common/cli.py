"""Shared shell for stage scripts: a run's arguments, logging set-up and one-line errors with a
non-zero exit."""

from __future__ import annotations

import argparse
import gc
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
    no_full_collections()
    try:
        main()
    except DogbreedsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    end_process(0)


def no_full_collections() -> None:
    """Keep the cyclic garbage collector to its young generations for the rest of the process.

    A stage process loads torch and MLflow (MLflow inside the stage, when a run opens): objects
    by the hundred thousand (docs/performance.md) that live until the process ends. CPython
    collects its oldest generation each time that grows by a quarter, so loading them walks an
    ever larger heap again and again; it was the largest part of a stage's fixed cost besides
    the imports themselves (`python -m dogbreeds fixedcost`; docs/performance.md, "A stage's
    fixed cost").
    Young collections go on, so the cycles a stage's loops leave behind are still freed; an
    object that became garbage in a cycle only after surviving two of them stays until the
    process ends, which for a one-shot stage process is the same thing. Only stage processes
    call this (tests, notebooks and `python -m dogbreeds` commands keep Python's defaults).
    """
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, NEVER)


NEVER = 2**31 - 1  # the largest threshold CPython takes: full collections are never due


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
