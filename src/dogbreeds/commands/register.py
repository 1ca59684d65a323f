"""`python -m dogbreeds register`: make each net's best run of the study its registered champion.

Run it in the workspace after `dvc repro` (or after `dvc exp apply <exp>` of the experiment you
want to ship): it reads the train stages' outputs for the current params.yaml, picks per net
the run with the highest final val_acc and points `models:/dogbreeds-<arch>@champion` at its
logged model (`dogbreeds.serving.registry`), with a model card as the version's description.
Running it twice changes nothing. A study on synthetic data is refused unless `--force`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dogbreeds.common.cli import run_stage
from dogbreeds.params import load_params
from dogbreeds.serving.registry import register_study


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m dogbreeds register", description=__doc__.split("\n")[0].split(": ")[1]
    )
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/train"))
    parser.add_argument(
        "--force",
        action="store_true",
        help="register nets trained on synthetic data too (refused without it)",
    )
    args = parser.parse_args(argv)

    def register() -> None:
        champions = register_study(load_params(args.params), args.metrics, force=args.force)
        for champion in champions.values():
            print(
                f"{champion.uri}: version {champion.version}, run {champion.run_name} "
                f"({champion.run_id}), val_acc {champion.val_acc:.4f}"
            )

    run_stage(register)


if __name__ == "__main__":
    main()
