"""Shared shell for stage scripts: logging set-up and one-line errors with a non-zero exit."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import NoReturn

from dogbreeds import DogbreedsError


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
    """Exit as the interpreter would, less its teardown of every module.

    What an exit does first still happens, in CPython's order: threading's exit hooks (which
    stop idle `concurrent.futures` workers, such as MLflow's artifact uploads) and the join of
    every non-daemon thread (`threading._shutdown`, the interpreter's own call), then the atexit
    handlers (MLflow's, logging's flush), then stdout and stderr flushed. Then `os._exit` skips
    the garbage collection of torch's and MLflow's thousands of modules and their C++ static
    destructors, about a second of every stage that imports them (`python -m dogbreeds
    fixedcost`, "after last step").
    """
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a reader gone, a stream closed
            stream.flush()
    os._exit(status)
