"""MLflow tracking: where the store is, first creation under concurrency, run bookkeeping."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import threading

import pytest
from conftest import ROOT, race

from dogbreeds.tracking import runs as tracking
from dogbreeds.tracking import store


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("DVC_ROOT", "DVC_EXP_NAME", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)


def test_store_is_at_the_dvc_repo_root_above_cwd(tmp_path, monkeypatch):
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "stages").mkdir()
    monkeypatch.chdir(tmp_path / "stages")
    assert store.store_root() == tmp_path
    assert store.tracking_uri(tmp_path) == f"sqlite:///{tmp_path}/mlflow.db"


def test_dvc_root_wins_so_temp_copies_log_to_the_main_repo(tmp_path, monkeypatch):
    main, copy = tmp_path / "main", tmp_path / "main/.dvc/tmp/exps/tmp123"
    copy.mkdir(parents=True)
    (copy / ".dvc").mkdir()
    monkeypatch.chdir(copy)
    monkeypatch.setenv("DVC_ROOT", str(main))
    assert store.store_root() == main


def test_mlflow_tracking_uri_overrides_the_sqlite_file(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert store.tracking_uri(tmp_path) == "http://mlflow.example:5000"


def test_experiment_keeps_its_artifacts_under_the_root(tmp_path):
    client, experiment_id = store.open_experiment(tmp_path)
    experiment = client.get_experiment(experiment_id)
    assert experiment.name == store.EXPERIMENT
    assert experiment.artifact_location == (tmp_path / "mlartifacts").as_uri()
    assert store.open_experiment(tmp_path)[1] == experiment_id  # found, not created again


def test_a_run_logs_params_steps_tags_and_artifacts(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "bushy-lion")
    artifact = tmp_path / "history.tsv"
    artifact.write_text("epoch\tval_acc\n1\t0.5\n")
    with tracking.training_run("cnn-s1", tracking.run_tags("cnn", "s1"), tmp_path) as run:
        run.log_params({"train": {"seed": 0, "schedules": {"s1": {"epochs": [1, 2]}}}})
        for step in (1, 2, 3):
            run.log_metrics({"val_acc": step / 10}, step=step)
        run.log_artifact(artifact)

    logged = run.client.get_run(run.run_id)
    assert logged.info.run_name == "cnn-s1" and logged.info.status == "FINISHED"
    assert logged.data.params == {"train.seed": "0", "train.schedules.s1.epochs": "[1, 2]"}
    history = run.client.get_metric_history(run.run_id, "val_acc")
    assert [(m.step, m.value) for m in history] == [(1, 0.1), (2, 0.2), (3, 0.3)]
    assert logged.data.tags["arch"] == "cnn" and logged.data.tags["schedule"] == "s1"
    assert logged.data.tags["dvc_exp_name"] == "bushy-lion"
    assert (tmp_path / "mlartifacts" / run.run_id / "artifacts" / "history.tsv").exists()


def test_metrics_at_many_steps_go_in_one_write(tmp_path, monkeypatch):
    writes = []
    real_write = tracking.write
    monkeypatch.setattr(tracking, "write", lambda *a: writes.append(a[2]) or real_write(*a))
    with tracking.training_run("cnn-s1", {}, tmp_path) as run:
        writes.clear()
        curves = {"blur": {0.0: 0.9, 0.5: 0.6}, "elastic": {0.0: 0.9, 0.25: 0.7, 1.0: 0.2}}
        run.log_steps(
            (round(s * 100), {f"robust_acc_{kind}": acc})
            for kind, curve in curves.items()
            for s, acc in curve.items()
        )
        run.log_steps([])  # nothing to log: no write
    assert writes == ["metrics", "end"]
    for kind, curve in curves.items():
        history = run.client.get_metric_history(run.run_id, f"robust_acc_{kind}")
        assert [(m.step, m.value) for m in history] == [
            (round(s * 100), acc) for s, acc in curve.items()
        ]


def test_a_failing_block_marks_the_run_failed(tmp_path):
    with pytest.raises(RuntimeError), tracking.training_run("x", {}, tmp_path) as run:
        raise RuntimeError("boom")
    assert run.client.get_run(run.run_id).info.status == "FAILED"


def test_git_commit_is_none_outside_git(tmp_path):
    assert tracking.git_commit(tmp_path) is None


def test_two_processes_creating_the_store_at_once_both_succeed(tmp_path):
    """Both start their first run at the same instant on a store that does not exist yet."""
    outputs = race(
        "from dogbreeds.tracking import runs as tracking\n",  # the slow part: importing mlflow
        'print(tracking.start_run("racer", {}, root).run_id)\n',
        tmp_path,
    )
    client, experiment_id = store.open_experiment(tmp_path)
    assert len(client.search_experiments()) == 2  # "Default" and ours, created once
    runs = client.search_runs([experiment_id])
    assert sorted(r.info.run_id for r in runs) == sorted(outputs)


def test_four_writers_at_once_lose_nothing(tmp_path):
    """What `dvc queue start -j N` does to the store: writers at the same instant, every run
    complete, no "database is locked" (every write holds the lock beside mlflow.db)."""
    script = textwrap.dedent("""
        import sys, time
        from pathlib import Path
        from dogbreeds.tracking import store
        from dogbreeds.tracking import runs as tracking
        root, me = Path(sys.argv[1]), sys.argv[2]
        client, _ = store.open_experiment(root)
        (root / f"ready-{me}").touch()
        while len(list(root.glob("ready-*"))) < 4:
            time.sleep(0.001)
        with tracking.training_run(f"writer-{me}", {}, root) as run:
            run.log_params({"train": {"seed": me}})
            for step in range(1, 31):
                run.log_metrics({"val_acc": step / 30, "train_loss": 1 / step}, step=step)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop("MLFLOW_TRACKING_URI", None)
    store.open_experiment(tmp_path)  # the store exists: this test is about writes
    writers = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path), str(i)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(4)
    ]  # fmt: skip
    outputs = [writer.communicate(timeout=300) for writer in writers]

    assert [writer.returncode for writer in writers] == [0] * 4, outputs
    assert not [err for _, err in outputs if "database is locked" in err]
    client, experiment_id = store.open_experiment(tmp_path)
    runs = client.search_runs([experiment_id])
    assert sorted(r.info.run_name for r in runs) == [f"writer-{i}" for i in range(4)]
    for r in runs:
        assert r.info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "val_acc")]
        assert sorted(steps) == list(range(1, 31))


def test_a_locked_store_is_retried_with_backoff_and_other_errors_are_not(monkeypatch):
    monkeypatch.setattr(tracking.time, "sleep", lambda s: None)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("(sqlite3.OperationalError) database is locked")
        return "written"

    assert store.write("http://server", flaky, "test") == "written" and len(calls) == 3
    with pytest.raises(ValueError, match="other"):
        store.write("http://server", lambda: (_ for _ in ()).throw(ValueError("other")), "x")


def test_no_credential_reaches_params_tags_or_logs(tmp_path, monkeypatch, caplog):
    token = "fake-kaggle-token-5f3a9c"
    monkeypatch.setenv("KAGGLE_KEY", token)
    secret_url = "https://alice:hunter2pw@data.example/images.tar"
    with tracking.training_run("secrets", {"source": secret_url}, tmp_path) as run:
        run.log_params({"data": {"stanford": {"url": secret_url}, "note": f"key {token}"}})
        run.set_tags({"echo": f"token={token}"})
    client, _ = store.open_experiment(tmp_path)
    stored = client.get_run(run.run_id).data
    values = [*stored.params.values(), *stored.tags.values(), caplog.text]
    assert not [v for v in values if token in v or "hunter2pw" in v]
    assert stored.params["data.stanford.url"] == "https://alice:***@data.example/images.tar"
    assert stored.params["data.note"] == "key ***"


BUSY_TIMEOUT_S = 20


@pytest.mark.slow
def test_a_lock_held_longer_than_sqlites_busy_timeout_is_waited_out(tmp_path, caplog):
    """Another program (a UI, a backup) holds the database for longer than the busy timeout
    MLflow 3.17 sets (20 s, mlflow/store/db/utils.py): the write fails with "database is
    locked" once, then succeeds on a retry."""
    with tracking.training_run("patient", {}, tmp_path) as run:
        db = sqlite3.connect(tmp_path / "mlflow.db", isolation_level=None, check_same_thread=False)
        db.execute("BEGIN EXCLUSIVE")
        release = threading.Timer(BUSY_TIMEOUT_S + 2, lambda: db.execute("COMMIT"))
        release.start()
        run.log_metrics({"val_acc": 0.5}, step=1)
        release.join()
        db.close()
    assert "MLflow store busy (metrics, try 1)" in caplog.text
    client, _ = store.open_experiment(tmp_path)
    assert client.get_run(run.run_id).data.metrics["val_acc"] == 0.5


def test_a_finished_run_dvc_never_recorded_is_failed_and_a_recorded_one_stays(tmp_path):
    """A stage killed between its run's end and DVC's commit: the next attempt marks that run
    FAILED; a run DVC recorded (in dvc.lock or the run cache) stays FINISHED, as does one
    nobody can tell about (no run cache), and a RUNNING one is FAILED either way."""
    from dogbreeds.tracking.lineage import dvc_records

    key = {tracking.RESUME_KEY_TAG: "k1"}
    ids = {}
    for name, md5 in (("in-lock", "a" * 32), ("in-run-cache", "b" * 32), ("unrecorded", "c" * 32)):
        with tracking.training_run(name, key, tmp_path) as run:
            run.set_tags({tracking.OUTPUT_MD5_TAG: md5})
        ids[name] = run.run_id
    running = tracking.start_run("killed", key, tmp_path)
    other_key = tracking.start_run("other", {tracking.RESUME_KEY_TAG: "k2"}, tmp_path)
    (tmp_path / "dvc.lock").write_text(f"stages:\n  train:\n    outs:\n    - md5: {'a' * 32}\n")
    entry = tmp_path / ".dvc" / "cache" / "runs" / "5c" / "5c1" / "e1"
    entry.parent.mkdir(parents=True)
    entry.write_text(f"cmd: x\nouts:\n- path: m.json\n  md5: {'b' * 32}\n")

    def recorded(md5):
        return dvc_records(md5, tmp_path, lock_file=tmp_path / "missing.lock")

    failed = tracking.fail_abandoned_runs("k1", recorded, tmp_path)
    assert set(failed) == {ids["unrecorded"], running.run_id}
    status = {n: running.client.get_run(i).info.status for n, i in ids.items()}
    assert status == {"in-lock": "FINISHED", "in-run-cache": "FINISHED", "unrecorded": "FAILED"}
    unrecorded = running.client.get_run(ids["unrecorded"])
    assert unrecorded.data.tags["failure"] == tracking.UNRECORDED
    assert running.client.get_run(other_key.run_id).info.status == "RUNNING"  # another key

    shutil.rmtree(tmp_path / ".dvc")  # no run cache: nobody can tell, the run stays
    with tracking.training_run("no-cache", key, tmp_path) as run:
        run.set_tags({tracking.OUTPUT_MD5_TAG: "d" * 32})
    assert dvc_records("d" * 32, tmp_path) is None
    assert tracking.fail_abandoned_runs("k1", recorded, tmp_path) == []


def test_an_experiment_another_machine_creates_meanwhile_is_used(tmp_path, monkeypatch):
    """A server's store has no lock of ours: two cluster workers can both find no experiment
    and both create it. The one whose create fails takes the other's."""
    from mlflow import MlflowClient

    _, created = store.open_experiment(tmp_path)  # the other machine's, a moment earlier
    lookup = MlflowClient.get_experiment_by_name
    calls = []

    def lookup_before_the_other_created_it(self, name):
        calls.append(name)
        return None if len(calls) == 1 else lookup(self, name)

    monkeypatch.setattr(MlflowClient, "get_experiment_by_name", lookup_before_the_other_created_it)
    _, experiment_id = store.open_experiment(tmp_path)
    assert experiment_id == created and len(calls) == 2
