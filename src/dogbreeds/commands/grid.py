"""Queue MobileNet's width x resolution grid as DVC experiments, one per (alpha, side).

MobileNet's Tables 6-7 vary the width multiplier alpha (1, 0.75, 0.5, 0.25) and the input side
(224, 192, 160, 128). Here every grid point is one `dvc exp run --queue` with
`-S model.width_mult=<alpha> -S model.resolution=<side>`, so it trains every net in
`train.archs` at that size; `dvc queue start -j N` runs the queue and `python -m
dogbreeds.commands.compare` draws accuracy against cost afterwards.

The grid runs one schedule. `-S 'train.schedules={...}'` would be merged into the existing
mapping (DVC applies overrides the way Hydra does), so the other schedules are removed with
Hydra's delete syntax instead: `-S '~train.schedules.<name>'`.

    python -m dogbreeds grid --resolutions 64 56 48 40 --schedule s20_14_6 --dry-run
"""

from __future__ import annotations

import argparse
import logging
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from dogbreeds import DogbreedsError
from dogbreeds.params import read_yaml

log = logging.getLogger(__name__)

WIDTHS = (1.0, 0.75, 0.5, 0.25)  # MobileNet's alpha, Table 6
RESOLUTIONS = (224, 192, 160, 128)  # MobileNet's 224 * rho, Table 7


class GridError(DogbreedsError):
    """The grid cannot be queued as asked (unknown schedule, bad multiplier, dvc failed)."""


@dataclass(frozen=True)
class GridPoint:
    """One experiment of the grid: every net of train.archs at one width and input side."""

    width_mult: float
    resolution: int

    @property
    def label(self) -> str:
        return f"a{self.width_mult:g}-r{self.resolution}"


def grid_points(widths: list[float], resolutions: list[int]) -> list[GridPoint]:
    """Every (alpha, side) pair, in the order that lets a half-run queue answer MobileNet's
    own tables first: Table 6 (every alpha at the largest side), then Table 7 (the largest
    alpha at every side), then the rest; widest and largest first within each."""
    for width in widths:
        if width <= 0:
            raise GridError(f"--widths: every width multiplier must be > 0, got {width:g}")
    for side in resolutions:
        if side < 16:  # the nets halve the side four times
            raise GridError(f"--resolutions: every side must be >= 16 px, got {side}")
    widths, resolutions = sorted(widths, reverse=True), sorted(resolutions, reverse=True)
    points = [GridPoint(w, r) for w in widths for r in resolutions]

    def table(point: GridPoint) -> int:
        if point.resolution == resolutions[0]:
            return 6  # MobileNet's Table 6: width multipliers
        return 7 if point.width_mult == widths[0] else 8  # Table 7: resolutions; the rest

    return sorted(points, key=table)  # stable: keeps widest and largest first


def schedule_overrides(params_file: Path, keep: str) -> list[str]:
    """The `-S` overrides that leave only the schedule `keep` in train.schedules."""
    try:
        schedules = read_yaml(params_file)["train"]["schedules"]
    except (OSError, KeyError, TypeError, yaml.YAMLError) as exc:
        raise GridError(f"{params_file}: cannot read train.schedules ({exc})") from exc
    if keep not in schedules:
        known = ", ".join(schedules)
        raise GridError(f"--schedule: {keep!r} is not in {params_file} train.schedules ({known})")
    return [f"~train.schedules.{name}" for name in schedules if name != keep]


def queue_command(
    point: GridPoint,
    common: list[str],
    name_prefix: str | None,
) -> list[str]:
    """The `dvc exp run --queue` command line of one grid point."""
    command = [sys.executable, "-m", "dvc", "exp", "run", "--queue"]
    if name_prefix:
        command += ["--name", f"{name_prefix}-{point.label}"]
    overrides = [f"model.width_mult={point.width_mult:g}", f"model.resolution={point.resolution}"]
    for override in overrides + common:
        command += ["-S", override]
    return command


def queue_grid(
    points: list[GridPoint],
    common: list[str],
    name_prefix: str | None = None,
    dry_run: bool = False,
) -> list[list[str]]:
    """Queue one experiment per grid point (or only list the commands); returns the commands."""
    commands = [queue_command(point, common, name_prefix) for point in points]
    for command in commands:
        log.info("%s", shlex.join(["dvc", *command[3:]]))
        if dry_run:
            continue
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            raise GridError(f"dvc exp run --queue failed: {detail[-1] if detail else '?'}")
    return commands


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m dogbreeds grid",
        description="Queue the width x resolution grid as DVC experiments (then: dvc queue start).",
    )
    parser.add_argument("--widths", type=float, nargs="+", default=list(WIDTHS), help="alphas")
    parser.add_argument(
        "--resolutions", type=int, nargs="+", default=list(RESOLUTIONS), help="input sides (px)"
    )
    parser.add_argument(
        "--schedule", default="s20_14_6", help="the one train.schedules key to keep"
    )
    parser.add_argument("--archs", nargs="+", help="nets to train (default: params train.archs)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument(
        "--name-prefix", help="name experiments <prefix>-a<alpha>-r<side> (must be unused)"
    )
    parser.add_argument(
        "-S",
        "--set-param",
        dest="extra",
        action="append",
        default=[],
        help="one more override for every experiment, as for dvc exp run -S (repeatable)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        points = grid_points(args.widths, args.resolutions)
        common = schedule_overrides(args.params, args.schedule)
        if args.archs:
            common.append(f"train.archs=[{','.join(args.archs)}]")
        common += args.extra
        queue_grid(points, common, args.name_prefix, args.dry_run)
    except DogbreedsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    if not args.dry_run:
        log.info("queued %d experiments; run them with: dvc queue start -j 1", len(points))


if __name__ == "__main__":
    main()
