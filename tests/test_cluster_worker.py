"""What a cluster task carries and the environment its stage gets (dogbreeds.cluster.worker,
dogbreeds.cluster.repro), without a cluster: the loopback cluster is tests/test_cluster.py."""

from __future__ import annotations

import pytest

from dogbreeds.cluster.plan import Step
from dogbreeds.cluster.repro import forwarded_env
from dogbreeds.cluster.worker import StageJob, stage_env

SECRET = "s3cret-0f1e2d"
STEP = Step("train@cnn-s20_14_6-0", "train@cnn-s20_14_6-0", "dvc.lock", (), ("deform",), ())


def test_a_jobs_repr_names_its_stage_but_not_the_forwarded_password():
    """Dask's worker logs `repr(task)` when a task fails ("Compute Failed ... Task: ...")."""
    job = StageJob(STEP, "/srv/git/dogbreeds.git", "0" * 40,
                   env={"MLFLOW_TRACKING_PASSWORD": SECRET})  # fmt: skip
    text = repr(job)
    assert "train@cnn-s20_14_6-0" in text and "0" * 40 in text
    assert SECRET not in text
    assert job.env["MLFLOW_TRACKING_PASSWORD"] == SECRET  # still carried to the stage


def test_the_workers_own_credentials_serve_when_the_caller_forwards_none(monkeypatch):
    """docs/team.md: keep the password in each worker's environment, out of the caller's."""
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "worker-user")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", SECRET)
    env = stage_env({"MLFLOW_TRACKING_URI": "http://mlflow.internal"})
    assert env["MLFLOW_TRACKING_PASSWORD"] == SECRET
    assert env["MLFLOW_TRACKING_USERNAME"] == "worker-user"
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow.internal"
    # what the caller forwards wins over the worker's own
    assert stage_env({"MLFLOW_TRACKING_USERNAME": "alice"})["MLFLOW_TRACKING_USERNAME"] == "alice"


@pytest.mark.parametrize("caller_has_password", [True, False])
def test_the_caller_forwards_the_tracking_variables_it_has(monkeypatch, caller_has_password):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal")
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    if caller_has_password:
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", SECRET)
    monkeypatch.setenv("AWS_PROFILE", "team")
    env = forwarded_env(["AWS_PROFILE", "CUDA_VISIBLE_DEVICES=0", "NOT_SET_ANYWHERE"])
    want = {"MLFLOW_TRACKING_URI": "http://mlflow.internal", "AWS_PROFILE": "team",
            "CUDA_VISIBLE_DEVICES": "0"}  # fmt: skip
    if caller_has_password:
        want["MLFLOW_TRACKING_PASSWORD"] = SECRET
    assert env == want
