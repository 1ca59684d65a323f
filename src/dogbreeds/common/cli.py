"""Shared shell for stage scripts: logging set-up and one-line errors with a non-zero exit."""

from __future__ import annotations

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
