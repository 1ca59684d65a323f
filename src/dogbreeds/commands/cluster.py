"""`python -m dogbreeds cluster repro --address tcp://host:8786`: `dvc repro` on a Dask cluster.

Each stage that `dvc repro` would run becomes one Dask task, ordered by the pipeline: a worker
runs it in its own clone at this workspace's commit (`dvc repro --pull <stage>`) and pushes its
outputs and run-cache entry to the DVC remote (`dvc push --run-cache <stage>`). At the end this
workspace restores every stage from the run cache (`dvc repro --pull`, nothing runs here) and
`dvc status` is clean. The workspace must be committed and pushed, and a default DVC remote
configured (docs/team.md). MLFLOW_TRACKING_URI, MLFLOW_TRACKING_USERNAME and
MLFLOW_TRACKING_PASSWORD go to every stage through its environment.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

from dogbreeds.common.cli import run_stage


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m dogbreeds cluster", description=__doc__.split("\n")[0].split(": ")[1]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    repro = commands.add_parser("repro", help="run the stages dvc repro would run on the cluster")
    repro.add_argument("targets", nargs="*", help="stages, as for dvc repro (default: all)")
    repro.add_argument("--address", required=True, help="the Dask scheduler, tcp://host:8786")
    repro.add_argument("--git-remote", help="where workers fetch the commit (default: origin)")
    repro.add_argument(
        "--worker-dir",
        help="the folder on each worker for its clone, as <dir>/<worker name> "
        "(default: the worker's Dask local directory)",
    )
    repro.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME[=VALUE]",
        help="one more variable for the stages, e.g. OMP_NUM_THREADS=8 (Dask sets 1 in workers) "
        "or AWS_ACCESS_KEY_ID (forwarded from here); repeatable",
    )
    repro.add_argument("--retries", type=int, default=0, help="reruns of a stage that fails")
    repro.add_argument(
        "--gpu-stages",
        action="append",
        default=[],
        metavar="PATTERN",
        help="stages (shell pattern on the address, e.g. 'train@*') that run only on workers "
        "started with --resources GPU=1, one at a time each; repeatable",
    )
    args = parser.parse_args(argv)

    lock = threading.Lock()  # the stages' lines arrive on Dask's thread

    def say(line: str) -> None:
        with lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def cluster() -> None:
        from dogbreeds.cluster.repro import cluster_repro

        cluster_repro(
            args.address, args.targets, Path("."), args.git_remote, args.worker_dir, args.env,
            args.retries, say, args.gpu_stages,
        )  # fmt: skip

    run_stage(cluster)


if __name__ == "__main__":
    main()
