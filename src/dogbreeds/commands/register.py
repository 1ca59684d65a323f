"""`python -m dogbreeds register`: make each net's best run of the study its registered champion.

Run it in the workspace after `dvc repro` (or after `dvc exp apply <exp>` of the experiment you
want to ship): it reads the train stages' outputs for the current params.yaml, picks per net
the run with the highest final val_acc (or, with `--rank-by test_acc`, the highest value of a
metric the evaluate stage linked to the logged models) and points
`models:/dogbreeds-<arch>@champion` at its logged model (`dogbreeds.serving.registry`), with a
model card as the version's description. Running it twice changes nothing. A study on
synthetic data is refused unless `--force`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dogbreeds.common.cli import run_stage
from dogbreeds.params import load_params
from dogbreeds.serving.registry import SELECT_BY, register_study


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
    parser.add_argument(
        "--rank-by",
        default=SELECT_BY,
        metavar="METRIC",
        help=f"rank by this metric of the logged models, as the evaluate stage linked it "
        f"(test_acc, clean_test_acc, ...; MLflow's search_logged_models ranks them) instead of "
        f"the final {SELECT_BY}: a test metric chooses on the test set (default: {SELECT_BY})",
    )
    args = parser.parse_args(argv)

    def register() -> None:
        champions = register_study(
            load_params(args.params), args.metrics, force=args.force, rank_by=args.rank_by
        )
        for champion in champions.values():
            ranked = (
                f", {champion.ranked_by} {champion.score:.4f}"
                if champion.ranked_by != SELECT_BY
                else ""
            )
            print(
                f"{champion.uri}: version {champion.version}, run {champion.run_name} "
                f"({champion.run_id}), val_acc {champion.val_acc:.4f}{ranked}"
            )

    run_stage(register)


if __name__ == "__main__":
    main()
