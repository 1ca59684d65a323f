"""The study in MLflow as a user searches it: one parent run per study holding the report, the
trainings its children with system metrics, and models ranked by their linked test metrics.

A tiny study at the stage-function level (two cnn trainings and their evaluations on the
`prepared` fixture's 16 px images, then the report stage's hook on stand-in report outputs):
a full `dvc repro` of the tiny project is tests/test_study.py's, and minutes long.
"""

from __future__ import annotations

import time

import pytest
from conftest import race
from datagen import tiny_params

from dogbreeds.common.fs import write_json
from dogbreeds.data.robustness import make_robustness_sets
from dogbreeds.pipeline import evaluate, train
from dogbreeds.serving import registry
from dogbreeds.tracking import runs as tracking
from dogbreeds.tracking import store, study

EXPERIMENT = "tiny-exp"  # what DVC_EXP_NAME is in every stage of `dvc exp run -n tiny-exp`
PARAMS = tiny_params(
    **{
        "train.archs": ["cnn"],
        "train.seeds": [0, 1],
        "robustness.kinds": ["elastic"],
        "robustness.strengths": [0, 1],
    }
)
SAMPLE_WAIT_S = 120  # a bound for a loaded machine; a quiet one samples in under a second


def sampled_before_stopping(stop):
    """`stop_system_metrics`, once MLflow's monitor has written its first sample into the run.

    The monitor writes a sample one interval after it starts (its first write goes to the store at
    once); a 16 px training can end before that on a loaded machine, and the run then has no
    system/ metrics at all, with nothing wrong in our wiring. Waiting here keeps the check about
    where the samples land, not about how fast the machine is."""

    def stop_after_a_sample(run, status):
        deadline = time.monotonic() + SAMPLE_WAIT_S
        while time.monotonic() < deadline:
            metrics = run.client.get_run(run.run_id).data.metrics
            if any(key.startswith("system/") for key in metrics):
                break
            time.sleep(0.1)
        stop(run, status)

    return stop_after_a_sample


HEADLINE = {"cnn": {"tiny": {"test_acc": 0.25, "clean_test_acc": 0.5, "val_acc": 0.375}}}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("DVC_ROOT", "DVC_STAGE", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DVC_EXP_NAME", EXPERIMENT)


def report_outputs(metrics):
    """What the report stage writes and its hook logs: report.md, headline.json, figures."""
    (metrics / "figures").mkdir(parents=True, exist_ok=True)
    (metrics / "report.md").write_text("# the tiny study\n")
    write_json(metrics / "headline.json", HEADLINE)
    for name in ("robustness.png", "cnn-tiny-0-accuracy.png"):
        (metrics / "figures" / name).write_bytes(b"\x89PNG\r\n\x1a\n")


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """Two trainings, their evaluations and the report's hook, in a DVC repo root of their own
    (its MLflow store is `mlflow.db` there); system metrics sampled every 0.2 s."""
    from conftest import prepared as make_prepared  # the fixture's body, at module scope

    root = tmp_path_factory.mktemp("study")
    (root / ".dvc").mkdir()
    with pytest.MonkeyPatch.context() as env:
        env.chdir(root)
        for name in ("DVC_ROOT", "DVC_STAGE", "MLFLOW_TRACKING_URI"):
            env.delenv(name, raising=False)
        env.setenv("DVC_EXP_NAME", EXPERIMENT)
        env.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
        env.setattr(
            tracking, "stop_system_metrics", sampled_before_stopping(tracking.stop_system_metrics)
        )
        prepared = make_prepared.__wrapped__(root)
        robustness = PARAMS.robustness
        make_robustness_sets(PARAMS.deform, robustness.kinds, robustness.strengths, prepared)
        results = {}
        for seed in PARAMS.train.seeds:
            train.run_training(PARAMS, "cnn", "tiny", seed, prepared=prepared)
            results[seed] = evaluate.run_evaluation(PARAMS, "cnn", "tiny", seed, prepared=prepared)
        report_outputs(root / "metrics")
        study.log_report(root / "metrics")
        study.log_report(root / "metrics")  # the report stage again: nothing new
    client, experiment_id = store.open_experiment(root)
    return root, client, experiment_id, results


def test_one_study_run_holds_the_report_and_the_trainings_are_its_children(tiny_study):
    root, client, experiment_id, results = tiny_study
    [parent] = client.search_runs([experiment_id], f"tags.`{study.STUDY_TAG}` = '{EXPERIMENT}'")
    assert parent.info.run_name == EXPERIMENT and parent.info.status == "FINISHED"
    assert parent.data.metrics == {
        "cnn.tiny.test_acc": 0.25, "cnn.tiny.clean_test_acc": 0.5, "cnn.tiny.val_acc": 0.375
    }  # fmt: skip
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"report.md", "headline.json", "figures"} <= artifacts
    figures = {a.path for a in client.list_artifacts(parent.info.run_id, "figures")}
    assert figures == {"figures/robustness.png", "figures/cnn-tiny-0-accuracy.png"}
    assert "dvc_exp_name" not in parent.data.tags  # that tag finds trainings only

    children = client.search_runs(
        [experiment_id], f"tags.`{study.PARENT_TAG}` = '{parent.info.run_id}'"
    )
    assert sorted(r.info.run_name for r in children) == ["cnn-tiny-0", "cnn-tiny-1"]
    assert len(client.search_runs([experiment_id])) == 3  # the study run and its 2 trainings
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["dvc_exp_name"] == EXPERIMENT
        system = {k for k in child.data.metrics if k.startswith("system/")}
        assert "system/cpu_utilization_percentage" in system, child.info.run_name
        assert "system/system_memory_usage_megabytes" in system
        assert "test_acc" in child.data.metrics  # the evaluation logged into the training's run


def test_logged_models_rank_by_their_linked_test_accuracy(tiny_study):
    root, client, experiment_id, results = tiny_study
    ranked = client.search_logged_models(
        [experiment_id], order_by=[{"field_name": "metrics.test_acc", "ascending": False}]
    )
    assert len(ranked) == 2
    accs = [registry.latest_value(m.metrics, "test_acc") for m in ranked]
    assert accs == sorted(accs, reverse=True)
    runs = {r["mlflow_run_id"]: r for r in results.values()}
    for model, acc in zip(ranked, accs, strict=True):
        assert acc == pytest.approx(runs[model.source_run_id]["test_acc"])
        linked = {m.key for m in model.metrics}
        assert {"test_acc", "clean_test_acc", "test_loss"} <= linked
        # MLflow's model logging links the run's step-0 metrics to the model too (wall_time_s,
        # the first system/ sample): the per-epoch curves stay the run's
        assert not [key for key in linked if key.startswith(("val_", "train_"))]


def test_register_ranks_by_a_linked_metric_and_says_so(tiny_study, monkeypatch):
    root, client, experiment_id, results = tiny_study
    monkeypatch.chdir(root)
    ranked = client.search_logged_models(
        [experiment_id], order_by=[{"field_name": "metrics.test_acc", "ascending": False}]
    )
    # MLflow's first, unless tied with an earlier seed (ties go to params order)
    best = max(results.values(), key=lambda r: r["test_acc"])
    champions = registry.register_study(
        PARAMS, root / "metrics" / "train", root, rank_by="test_acc"
    )
    champion = champions["cnn"]
    assert champion.ranked_by == "test_acc"
    assert champion.score == pytest.approx(best["test_acc"])
    assert champion.run_id == best["mlflow_run_id"]
    assert champion.run_id in {m.source_run_id for m in ranked}
    version = client.get_model_version("dogbreeds-cnn", champion.version)
    assert version.tags["test_acc"] == f"{best['test_acc']:.4f}"
    assert "by the highest test_acc linked to its logged model in MLflow" in version.description
    assert "test accuracy never chooses" not in version.description

    with pytest.raises(registry.RegistryError, match="has the metric 'no_such_metric'"):
        registry.register_study(PARAMS, root / "metrics" / "train", root, rank_by="no_such_metric")


def test_a_queue_of_trainings_starting_at_once_finds_one_study_run(tmp_path):
    """`dvc queue start -j 2`: two trainings of one experiment ask for its run at one instant."""
    store.open_experiment(tmp_path)
    outputs = race(
        "from dogbreeds.tracking import study\n",
        "print(study.child_tags(root)[study.PARENT_TAG])\n",
        tmp_path,
        DVC_EXP_NAME="racers",
    )
    parents = set(outputs)
    client, experiment_id = store.open_experiment(tmp_path)
    [found] = study.study_runs(client, experiment_id, "racers")
    assert parents == {found.info.run_id}


def test_twins_on_a_server_store_are_merged_by_the_report(tmp_path, monkeypatch):
    """Two cluster workers both created the study run (a server has no lock of ours): the
    report stage keeps the earlier, moves the later one's children to it and deletes it."""
    monkeypatch.setenv("DVC_EXP_NAME", "twins")
    client, experiment_id = store.open_experiment(tmp_path)
    first = study.study_run(tmp_path)
    twin = client.create_run(experiment_id, run_name="twins", tags=study.study_tags("twins"))
    child = tracking.start_run("cnn-tiny-0", {study.PARENT_TAG: twin.info.run_id}, tmp_path)
    report_outputs(tmp_path / "metrics")

    kept = study.log_report(tmp_path / "metrics", tmp_path)
    assert kept.run_id == first.run_id
    [left] = study.study_runs(client, experiment_id, "twins")
    assert left.info.run_id == kept.run_id
    assert client.get_run(child.run_id).data.tags[study.PARENT_TAG] == first.run_id
    assert client.get_run(twin.info.run_id).info.lifecycle_stage == "deleted"


def test_the_workspace_study_is_named_after_the_commit(monkeypatch, tmp_path):
    monkeypatch.delenv("DVC_EXP_NAME")
    monkeypatch.setattr(study, "git_commit", lambda: "0123456789abcdef")
    assert study.study_name() == "workspace-0123456"
    monkeypatch.setattr(study, "git_commit", lambda: None)
    assert study.study_name() == "workspace"


def test_a_run_without_system_metrics_support_still_trains(tmp_path, monkeypatch, caplog):
    """No psutil (or any refusal of MLflow's monitor): a warning, and the run goes on."""
    import mlflow
    from mlflow.exceptions import MlflowException

    def refuse(**kwargs):
        raise MlflowException("Failed to start system metrics monitoring: no psutil")

    monkeypatch.setattr(mlflow, "start_run", refuse)
    with tracking.training_run("no-monitor", {}, tmp_path, system=True) as run:
        run.log_metrics({"val_acc": 0.5}, step=1)
    logged = run.client.get_run(run.run_id)
    assert logged.info.status == "FINISHED" and "no system metrics" in caplog.text
    assert mlflow.active_run() is None


def test_a_monitored_run_ends_failed_or_finished_once_and_leaves_no_active_run(
    tmp_path, monkeypatch
):
    import mlflow

    writes = []  # the store writes of our own: the monitor's end is MLflow's, so no "end" here
    real_write = tracking.write
    monkeypatch.setattr(tracking, "write", lambda *a: writes.append(a[2]) or real_write(*a))
    with pytest.raises(RuntimeError), tracking.training_run("x", {}, tmp_path, system=True) as run:
        raise RuntimeError("boom")
    assert run.client.get_run(run.run_id).info.status == "FAILED"
    assert mlflow.active_run() is None
    with tracking.training_run("y", {}, tmp_path, system=True) as run:
        pass
    assert run.client.get_run(run.run_id).info.status == "FINISHED"
    assert mlflow.active_run() is None
    assert "end" not in writes and writes.count("system metrics") == 2  # one end per run


def test_a_monitor_that_fails_to_stop_still_leaves_the_run_ended(tmp_path, monkeypatch, caplog):
    import mlflow

    def fail_to_end(status):
        raise OSError("disk full")

    with tracking.training_run("z", {}, tmp_path, system=True) as run:
        monkeypatch.setattr(mlflow, "end_run", fail_to_end)  # the training's own end stands
    assert run.client.get_run(run.run_id).info.status == "FINISHED"
    assert "system metrics not stopped cleanly" in caplog.text
    monkeypatch.undo()
    with store.global_tracking_uri(run.client.tracking_uri):
        mlflow.end_run()  # the fluent run the failed stop left behind, and its monitor
