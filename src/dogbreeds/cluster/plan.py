"""Which stages `dvc repro` would run, in dependency order, and what each needs from the others.

A stage is planned when it has changed (`dvc status` lists it: a dep, param, command or output
differs from dvc.lock, or an output is missing) or when it is downstream of a planned stage, whose
outputs may change under it. That is every stage `dvc repro` could run; a planned stage whose
deps turn out unchanged costs its worker a status check, nothing more.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import chdir
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Step:
    stage: str  # DVC's address, e.g. train@cnn-s20_14_6-0 (dir/dvc.yaml:name outside the root)
    name: str  # its key in the lock file
    lockfile: str  # that lock file, relative to the repository root
    after: tuple[str, ...]  # the planned stages whose outputs it reads: their tasks come first
    reads: tuple[str, ...]  # every stage whose outputs it reads, planned or not: pulled first
    uncached: tuple[str, ...]  # its `cache: false` outputs: they travel with the task's result


def plan(root: Path, targets: Sequence[str] = ()) -> list[Step]:
    """The stages to run for `dvc repro [targets]` in `root`, dependencies first."""
    import networkx as nx
    from dvc.repo import Repo

    from dogbreeds.compat import repro_planner

    collect_stages, get_active_graph, plan_repro = repro_planner()

    root = Path(root).resolve()
    with chdir(root), Repo(str(root)) as repo, repo.lock:  # addresses relative to the root
        graph = get_active_graph(repo.index.graph)  # an edge runs from a stage to one it reads
        wanted = collect_stages(repo, list(targets)) if targets else None
        order = plan_repro(graph, wanted)  # post-order: every stage after those it reads
        planned = {stage for stage in order if stage.changed()}
        for stage in list(planned):
            planned |= nx.ancestors(graph, stage) & set(order)  # the stages downstream of it
        steps = []
        for stage in order:
            if stage not in planned:
                continue
            upstream = sorted(up.addressing for up in graph.successors(stage))
            steps.append(
                Step(
                    stage.addressing,
                    stage.name,
                    os.path.relpath(stage.dvcfile.path.removesuffix(".yaml") + ".lock", root),
                    tuple(u.addressing for u in graph.successors(stage) if u in planned),
                    tuple(upstream),
                    tuple(os.path.relpath(o.fs_path, root) for o in stage.outs if not o.use_cache),
                )
            )
        return steps
