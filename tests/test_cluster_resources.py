"""Dask resource annotations: a stage named by `--gpu-stages` runs only on a worker that offers
the GPU resource, on a loopback cluster of two in-process workers (one started as
`dask worker --resources GPU=1` would be); the others run anywhere."""

from __future__ import annotations

import threading

import pytest

from dogbreeds.cluster import repro
from dogbreeds.cluster.plan import Step
from dogbreeds.cluster.worker import StageResult

distributed = pytest.importorskip("distributed")


def step(stage: str, after: tuple[str, ...] = ()) -> Step:
    return Step(stage, stage.split("@")[0], "dvc.lock", after, after, ())


def fake_run_stage(job, *upstream) -> StageResult:
    """Stands in for worker.run_stage: records which worker ran the stage, runs nothing."""
    name = distributed.get_worker().name
    threading.Event().wait(0.05)  # long enough that both workers are asked for work
    return StageResult(job.step.stage, name, 0.0, [job.step.stage], [], "", "dvc.lock",
                       job.step.name, {}, {}, ())  # fmt: skip


def test_stage_resources_match_shell_patterns_on_the_stage_address():
    assert repro.stage_resources("train@cnn-s20_14_6-0", ["train@*"]) == {"GPU": 1}
    assert repro.stage_resources("evaluate@cnn-s20_14_6-0", ["train@*"]) is None
    assert repro.stage_resources("train@cnn-s20_14_6-0", []) is None


def test_gpu_stages_run_only_on_the_worker_with_the_gpu_resource(monkeypatch):
    from distributed import Client, Scheduler, SpecCluster, Worker

    monkeypatch.setattr(repro, "run_stage", fake_run_stage)
    trainings = [f"train@cnn-s{i}" for i in range(6)]
    steps = [step("split")] + [step(t, ("split",)) for t in trainings] + [
        step(f"evaluate@cnn-s{i}", (f"train@cnn-s{i}",)) for i in range(6)
    ]  # fmt: skip
    resources = {s.stage: repro.stage_resources(s.stage, ["train@*"]) for s in steps}
    workers = {
        "cpu": {"cls": Worker, "options": {"nthreads": 1, "name": "cpu"}},
        "gpu": {"cls": Worker, "options": {"nthreads": 1, "name": "gpu",
                                           "resources": {"GPU": 1}}},
    }  # fmt: skip
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": ":0", "host": "127.0.0.1"}}
    results: dict[str, StageResult] = {}
    with SpecCluster(workers=workers, scheduler=scheduler) as cluster, Client(cluster) as client:
        repro.run_steps(client, steps, "remote", "c0ffee", {}, None, 0, results,
                        lambda result: None, resources)  # fmt: skip
    assert set(results) == {s.stage for s in steps}
    assert {results[t].worker for t in trainings} == {"gpu"}
    # the other stages were free to go anywhere, and the idle CPU worker took some of them
    assert "cpu" in {r.worker for stage, r in results.items() if stage not in trainings}
