"""Shared shell for stage scripts: logging set-up and one-line errors with a non-zero exit."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from dogbreeds import DogbreedsError


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main; a DogbreedsError becomes one line on stderr and exit status 1."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        main()
    except DogbreedsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
