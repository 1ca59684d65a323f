"""From one laptop to a team: the tiny study on a real MLflow server on PostgreSQL that asks
who you are (MLflow's basic-auth app), its data and models through DVC remotes (a folder, and
S3 on moto), experiments through `dvc exp push/pull`, the registry's champion served over REST,
and the MLflow UI in headless Chromium.

One module-scoped study (`team`): PostgreSQL and the MLflow server start once, the admin adds
the study's user, the tiny study runs once as that user (`MLFLOW_TRACKING_URI`,
`MLFLOW_TRACKING_USERNAME`, `MLFLOW_TRACKING_PASSWORD`), and every test reads from it, signed in
as that user unless it says otherwise. The experiment test, which adds a commit and an
experiment, runs last.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import BIN, ROOT, make_project, run, set_params
from mlflow import MlflowClient
from PIL import Image
from servers import (
    MlflowServer,
    Postgres,
    add_user,
    has_postgres,
    headless_chromium,
    mlflow_server,
    moto_s3,
    postgres,
    require,
    served_model,
    signed_in,
)

from dogbreeds.params import read_yaml

pytestmark = [pytest.mark.slow, pytest.mark.team]

ARCHS = ("cnn", "dsc", "deformable")
# One schedule: every check here is about where runs, models and files go, which three nets
# show as well as nine, and each cell dropped is a train and an evaluate stage less to wait for.
SCHEDULE = "s20_14_6"
RUN_NAMES = {f"{arch}-{SCHEDULE}-0" for arch in ARCHS}  # seeds [0]
TRAININGS = len(RUN_NAMES)
# The DVC matrix names a stage by its values: train@cnn-s20_14_6-0 trains run cnn-s20_14_6-0.
STAGE_NAMES = {name: "train@" + name.replace("-seed", "-") for name in RUN_NAMES}
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
# A database password that must never leave the server's environment.
PASSWORD = f"pw-{secrets.token_hex(8)}"
# The MLflow server's users: the admin (the server's first start creates it), the study's user
# (the admin adds it; it creates the experiment and the registered models, so it MANAGEs them)
# and a reader (READ on both). No password may reach a log, a param, a tag or a DVC file.
ADMIN_PASSWORD = f"admin-{secrets.token_hex(8)}"
STUDY_USER, STUDY_PASSWORD = "study", f"study-{secrets.token_hex(8)}"
READER, READER_PASSWORD = "reader", f"reader-{secrets.token_hex(8)}"
SECRETS = {"database": PASSWORD, "admin": ADMIN_PASSWORD, "study": STUDY_PASSWORD,
           "reader": READER_PASSWORD}  # fmt: skip
UP_TO_DATE = "Data and pipelines are up to date."


@dataclass
class Team:
    db: Postgres
    server: MlflowServer
    repo: Path
    repro_log: str  # what dvc repro and python -m dogbreeds register printed
    base: Path

    def client(self) -> MlflowClient:
        """A client of the server, signed in as whoever the test is (the study's user)."""
        return MlflowClient(tracking_uri=self.server.url)

    def experiment_id(self) -> str:
        return self.client().get_experiment_by_name("dogbreeds").experiment_id


@pytest.fixture(scope="module")
def team(tmp_path_factory) -> Iterator[Team]:
    """PostgreSQL + MLflow server with authentication, and the tiny study reproduced against
    them as its user, committed. The tests' clients and commands sign in as that user."""
    require("PostgreSQL", has_postgres())
    base = tmp_path_factory.mktemp("team")
    with (
        postgres(base / "db", PASSWORD) as db,
        mlflow_server(db, base, ADMIN_PASSWORD) as server,
    ):
        add_user(server, STUDY_USER, STUDY_PASSWORD)
        repo = make_project(base / "repo")
        set_params(repo, **{"train.schedules": {SCHEDULE: schedule_of(repo)}})
        run(["git", "commit", "-qam", "one schedule"], repo)
        env = {
            "MLFLOW_TRACKING_URI": server.url,
            "MLFLOW_TRACKING_USERNAME": STUDY_USER,
            "MLFLOW_TRACKING_PASSWORD": STUDY_PASSWORD,
            **ONE_THREAD,
        }
        repro = run(["dvc", "repro"], repo, env=env)
        # each net's best run becomes models:/dogbreeds-<arch>@champion (the README's step;
        # --force: the tiny study's data are synthetic)
        register = run([str(BIN / "python"), "-m", "dogbreeds", "register", "--force"], repo,
                       env={**env, "PYTHONPATH": "src"})  # fmt: skip
        commit(repo, "the study")
        log = repro.stdout + repro.stderr + register.stdout + register.stderr
        with signed_in(STUDY_USER, STUDY_PASSWORD):
            yield Team(db, server, repo, log, base)


def schedule_of(repo: Path) -> dict:
    """The tiny preset's SCHEDULE, as the project's params.yaml has it."""
    return read_yaml(repo / "params.yaml")["train"]["schedules"][SCHEDULE]


def commit(repo: Path, message: str) -> None:
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", message], repo)


def basic_auth(user: str, password: str) -> str:
    """The HTTP Authorization header's value for `user` (RFC 7617)."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def request_of(url: str, body: dict | None, user: tuple[str, str] | None) -> urllib.request.Request:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if user is not None:
        headers["Authorization"] = basic_auth(*user)
    return urllib.request.Request(url, data, headers)


def rest(
    server: MlflowServer,
    path: str,
    body: dict | None = None,
    user: tuple[str, str] | None = (STUDY_USER, STUDY_PASSWORD),
) -> dict:
    """One call of MLflow's REST API (GET, or POST with a JSON body), as `user`."""
    request = request_of(f"{server.url}/api/2.0/mlflow/{path}", body, user)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def http_status(url: str, body: dict | None = None, user: tuple[str, str] | None = None) -> int:
    """The status a request gets (GET, or POST with a JSON body); anonymous by default."""
    try:
        with urllib.request.urlopen(request_of(url, body, user), timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def study_runs(team: Team) -> list[dict]:
    """The study's trainings (not those of DVC experiments, nor the study run that holds them
    as its children) through the REST API."""
    experiment = rest(team.server, "experiments/get-by-name?experiment_name=dogbreeds")
    experiment_id = experiment["experiment"]["experiment_id"]
    found = rest(
        team.server, "runs/search", {"experiment_ids": [experiment_id], "max_results": 100}
    )
    return [r for r in found["runs"] if not {"dvc_exp_name", "dogbreeds.study"} & set(tags_of(r))]


def tags_of(rest_run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in rest_run["data"].get("tags", [])}


def encoded(colour, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (50, 40), colour).save(buffer, format=fmt)
    return buffer.getvalue()


def file_count(pattern: str, text: str) -> int:
    """The N of DVC's `N files pushed` (or fetched, ...) in a command's output."""
    found = re.search(rf"(\d+) files? {pattern}", text)
    assert found, f"no '{pattern}' count in:\n{text}"
    return int(found.group(1))


# ----------------------------------------------------------------------------- the server


def test_every_run_lands_in_postgresql(team: Team):
    runs = study_runs(team)
    assert {r["info"]["run_name"] for r in runs} == RUN_NAMES and len(runs) == TRAININGS
    counted = team.db.psql(
        "SELECT count(*) FROM runs JOIN experiments USING (experiment_id) "
        "WHERE experiments.name = 'dogbreeds' AND run_uuid NOT IN "
        "(SELECT run_uuid FROM tags WHERE key IN ('dvc_exp_name', 'dogbreeds.study'))"
    )
    assert counted == str(TRAININGS)  # the trainings; the study run that holds them is apart
    print(f"runs: {len(runs)} through REST, {counted} counted in PostgreSQL")
    assert not (team.repo / "mlflow.db").exists()  # nothing went to a local store

    prepared_md5 = dvc_lock_md5(team.repo, "data/prepared")
    for r in runs:
        tags = tags_of(r)
        assert r["info"]["status"] == "FINISHED"
        assert r["info"]["artifact_uri"].startswith("mlflow-artifacts:/")  # proxied by the server
        assert tags["mlflow.source.name"] == STAGE_NAMES[r["info"]["run_name"]]
        assert tags["mlflow.source.git.commit"]
        [dataset] = r["inputs"]["dataset_inputs"]
        assert dataset["dataset"]["name"] == f"prepared@{prepared_md5[:12]}"
        metrics = {m["key"] for m in r["data"]["metrics"]}
        assert {"val_acc", "test_acc", "clean_test_acc"} <= metrics

    experiment = team.client().get_experiment_by_name("dogbreeds")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_no_password_in_logs_params_tags_files_or_command_lines(team: Team):
    """The database, admin and study passwords: nowhere but in the environments that need them."""
    texts = {
        "dvc repro's output": team.repro_log,
        "the MLflow server's log": team.server.log.read_text(),
        "PostgreSQL's log": (team.db.data / "server.log").read_text(errors="replace"),
    }
    for r in study_runs(team):
        values = [p["value"] for p in r["data"].get("params", [])] + list(tags_of(r).values())
        texts[f"run {r['info']['run_name']}'s params and tags"] = "\n".join(values)
    for folder in (team.repo, team.base / "artifacts"):  # git, DVC's cache and lock, metrics
        for path in (p for p in folder.rglob("*") if p.is_file()):
            texts[str(path)] = path.read_bytes().decode(errors="replace")
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):  # the server and its workers, psql ...
        with contextlib.suppress(OSError):  # a process that ended meanwhile
            texts[f"the command line of {cmdline.parent.name}"] = cmdline.read_bytes().decode()
    for who, secret in SECRETS.items():
        leaks = [where for where, text in texts.items() if secret in text]
        assert not leaks, f"the {who} password is in {leaks}"
    print(f"no password in {len(texts)} logs, runs, files and command lines")
    # the server did use them: PostgreSQL takes the mlflow role only with its password, and
    # MLflow the study's user only with its own
    assert team.db.psql("SELECT current_user") == "mlflow"
    wrong = (STUDY_USER, "not-the-password")
    url = f"{team.server.url}/api/2.0/mlflow/experiments/get-by-name?experiment_name=dogbreeds"
    assert (http_status(url, user=(STUDY_USER, STUDY_PASSWORD)), http_status(url, user=wrong)) == (
        200,
        401,
    )


# ----------------------------------------------------------------------------- who may do what


def test_an_anonymous_client_is_refused_reading_and_writing(team: Team):
    """No user name, no answer: 401 and a Basic challenge, for the API, the UI and sign-up."""
    experiment_id = team.experiment_id()
    [some_run, *_] = study_runs(team)
    api = f"{team.server.url}/api/2.0/mlflow"
    refused = {
        "read the experiment": (f"{api}/experiments/get-by-name?experiment_name=dogbreeds", None),
        "search runs": (f"{api}/runs/search", {"experiment_ids": [experiment_id]}),
        "read the champion": (f"{api}/registered-models/alias?name=dogbreeds-cnn&alias=champion",
                              None),
        "open the UI": (f"{team.server.url}/", None),
        "sign up": (f"{team.server.url}/signup", None),
        "create a user": (f"{api}/users/create", {"username": "mallory", "password": "x" * 12}),
        "create a run": (f"{api}/runs/create", {"experiment_id": experiment_id}),
        "log a metric": (f"{api}/runs/log-metric", {"run_id": some_run["info"]["run_id"],
                         "key": "val_acc", "value": 1.0, "timestamp": 0, "step": 0}),
        "delete a run": (f"{api}/runs/delete", {"run_id": some_run["info"]["run_id"]}),
        "move the champion": (f"{api}/registered-models/alias",
                              {"name": "dogbreeds-cnn", "alias": "champion", "version": "1"}),
    }  # fmt: skip
    statuses = {what: http_status(url, body) for what, (url, body) in refused.items()}
    assert statuses == dict.fromkeys(refused, 401)
    request = request_of(refused["read the experiment"][0], None, None)
    with pytest.raises(urllib.error.HTTPError) as refusal:
        urllib.request.urlopen(request, timeout=30)
    assert refusal.value.headers["WWW-Authenticate"] == 'Basic realm="mlflow"'
    assert len(study_runs(team)) == TRAININGS  # nothing was written
    print(f"anonymous: {', '.join(refused)}: 401 each")


def test_a_reader_reads_but_cannot_log_or_move_the_champion(team: Team):
    from mlflow.exceptions import MlflowException

    experiment_id = team.experiment_id()
    added = run(  # the documented way: the admin runs scripts/mlflow-user.py
        [str(BIN / "python"), str(ROOT / "scripts" / "mlflow-user.py"), READER, "--permission",
         "READ"],
        team.base,
        env={"MLFLOW_TRACKING_URI": team.server.url, "MLFLOW_TRACKING_USERNAME": "admin",
             "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD, "NEW_MLFLOW_PASSWORD": READER_PASSWORD},
    ).stdout  # fmt: skip
    assert added.splitlines() == [
        f"{READER}: created",
        f"{READER}: READ on experiment dogbreeds",
        *(f"{READER}: READ on registered model dogbreeds-{arch}" for arch in ARCHS),
    ]
    champion = team.client().get_model_version_by_alias("dogbreeds-cnn", "champion")
    versions = team.client().search_model_versions("name = 'dogbreeds-cnn'")
    other = next((v.version for v in versions if v.version != champion.version), "1")
    run_id = champion.run_id
    history = curve(team.client(), run_id)

    with signed_in(READER, READER_PASSWORD):
        reader = MlflowClient(tracking_uri=team.server.url)
        runs = reader.search_runs([experiment_id], max_results=100)
        assert len(runs) >= TRAININGS  # reading: yes
        assert reader.get_model_version_by_alias("dogbreeds-cnn", "champion").version == (
            champion.version
        )
        writes = {
            "create a run": lambda: reader.create_run(experiment_id),
            "log a metric": lambda: reader.log_metric(run_id, "val_acc", 1.0),
            "set a tag": lambda: reader.set_tag(run_id, "verdict", "best"),
            "delete a run": lambda: reader.delete_run(run_id),
            "move the champion": lambda: reader.set_registered_model_alias(
                "dogbreeds-cnn", "champion", other
            ),
            "drop the champion": lambda: reader.delete_registered_model_alias(
                "dogbreeds-cnn", "champion"
            ),
        }
        statuses = {}
        for what, write in writes.items():
            with pytest.raises(MlflowException) as refusal:
                write()
            statuses[what] = refusal.value.get_http_status_code()
    assert statuses == dict.fromkeys(writes, 403)

    after = team.client()
    assert after.get_model_version_by_alias("dogbreeds-cnn", "champion").version == (
        champion.version
    )
    logged = after.get_run(run_id)
    assert logged.info.lifecycle_stage == "active" and "verdict" not in logged.data.tags
    assert curve(after, run_id) == history  # no val_acc logged
    assert len(study_runs(team)) == TRAININGS
    print(f"reader: reads the runs and the champion; {', '.join(writes)}: 403 each")


def curve(client: MlflowClient, run_id: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, "val_acc"))


def test_the_study_logged_as_its_user(team: Team):
    """The study's user created the experiment and the registered models (MLflow gives their
    creator MANAGE); anyone else has the server's default permission, READ."""
    from mlflow.server import get_app_client

    with signed_in("admin", ADMIN_PASSWORD):
        auth = get_app_client("basic-auth", tracking_uri=team.server.url)
        experiment = auth.get_user_permission(STUDY_USER, "experiment", team.experiment_id())
        models = {
            arch: auth.get_user_permission(STUDY_USER, "registered_model", f"dogbreeds-{arch}")
            for arch in ARCHS
        }
        auth.create_user("newcomer", f"newcomer-{secrets.token_hex(8)}")
        default = auth.get_user_permission("newcomer", "experiment", team.experiment_id())
    assert experiment.permission == "MANAGE"
    assert {arch: p.permission for arch, p in models.items()} == dict.fromkeys(ARCHS, "MANAGE")
    assert default.permission == "READ"


def dvc_lock_md5(repo: Path, out: str) -> str:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    for stage in lock["stages"].values():
        for entry in stage.get("outs", []):
            if entry["path"] == out:
                return entry["md5"]
    raise AssertionError(f"{out} not in dvc.lock")


# ----------------------------------------------------------------------------- models


def test_each_net_has_a_champion_and_it_answers_over_rest(team: Team):
    client = team.client()
    for arch in ARCHS:
        champion = client.get_model_version_by_alias(f"dogbreeds-{arch}", "champion")
        best = max(
            (r for r in study_runs(team) if tags_of(r)["arch"] == arch),
            key=lambda r: next(m["value"] for m in r["data"]["metrics"] if m["key"] == "val_acc"),
        )
        best_acc = next(m["value"] for m in best["data"]["metrics"] if m["key"] == "val_acc")
        champion_acc = client.get_run(champion.run_id).data.metrics["val_acc"]
        assert champion_acc == best_acc  # the best val_acc (ties: either run of that value)

    images = [encoded((190, 140, 90), "PNG"), encoded((60, 60, 60), "JPEG")]
    body = {
        "dataframe_split": {
            "columns": ["image"],
            "data": [[base64.b64encode(image).decode()] for image in images],
        }
    }
    uri = "models:/dogbreeds-cnn@champion"
    with served_model(uri, team.server.url, team.base) as invocations:
        request = urllib.request.Request(
            invocations, json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            predictions = json.loads(response.read())["predictions"]
    breeds = read_yaml(team.repo / "params.yaml")["data"]["breeds"]
    assert len(predictions) == 2
    print(f"served {uri}: {predictions[0]}")
    for row in predictions:
        assert list(row) == breeds
        assert abs(sum(row.values()) - 1) < 1e-5

    # the predict command reads the same champion and agrees with the served model
    (team.base / "dog.png").write_bytes(images[0])
    predicted = run(
        [str(BIN / "python"), "-m", "dogbreeds", "predict", str(team.base / "dog.png"),
         "--model", uri],
        team.repo, env={"MLFLOW_TRACKING_URI": team.server.url, "PYTHONPATH": "src"},
    ).stdout  # fmt: skip
    top_breed = max(predictions[0], key=predictions[0].get)
    assert predicted.startswith(f"{team.base / 'dog.png'}: {top_breed} ")


# ----------------------------------------------------------------------------- the UI


def test_the_ui_shows_the_study_run_and_its_training_runs(team: Team, tmp_path):
    """What a user sees in headless Chromium, through the link the README and the logs give.

    MLflow 3.17 decides between its GenAI pages and its model-training pages from the URL's
    `workflowType`, else the sidebar's "GenAI | Model training" switch, remembered per browser in
    localStorage (`mlflow.workflowType_v1`) and "GenAI" for a new user: the experiment's
    `mlflow.experimentKind` tag does not change that (the UI never reads it). So the link we
    publish carries `workflowType=machine_learning`, and one click on "Model training" makes the
    plain link open on the runs too.
    """
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = headless_chromium("--window-size=1600,1000")
    # The server asks every request who it is: the browser answers as the study's user (the
    # header a login dialog would send, set through the DevTools protocol: headless has no
    # dialog).
    driver.execute_cdp_cmd("Network.enable", {})
    authorization = {"Authorization": basic_auth(STUDY_USER, STUDY_PASSWORD)}
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": authorization})
    wait = WebDriverWait(driver, 90)
    body = lambda: driver.find_element(By.TAG_NAME, "body").text  # noqa: E731
    experiment_id = team.client().get_experiment_by_name("dogbreeds").experiment_id
    runs_page = tracking_ui_url(team.server.url, experiment_id)
    try:
        # A new user with the plain link lands on the GenAI overview; one click on the switch.
        plain = f"{team.server.url}/#/experiments/{experiment_id}"
        driver.get(plain)
        wait.until(lambda _: "workflowType=" in driver.current_url)
        assert "workflowType=genai" in driver.current_url, "the UI now reads the kind tag?"
        switch = driver.find_element(By.XPATH, "//*[normalize-space(text())='Model training']")
        driver.execute_script("arguments[0].click()", switch)  # a tooltip may cover it
        wait.until(lambda _: "/runs" in driver.current_url)
        # The browser remembers the switch, so the plain link now opens on the runs.
        stored = "return window.localStorage.getItem('mlflow.workflowType_v1')"
        assert driver.execute_script(stored) == '"machine_learning"'
        driver.get("about:blank")
        driver.get(plain)
        found = rest(team.server, "runs/search", {"experiment_ids": [experiment_id]})["runs"]
        [study_run] = [r["info"]["run_name"] for r in found if "dogbreeds.study" in tags_of(r)]
        wait.until(lambda _: "/runs" in driver.current_url and study_run in body())
        assert "workflowType=machine_learning" in driver.current_url

        # The published link: the study run, and the trainings nested under it once its row
        # is expanded, with their Source (stage) and Dataset (DVC hash).
        driver.get(runs_page)
        expander = (
            f"//*[normalize-space(text())='{study_run}']/ancestor::*[@role='gridcell'][1]//button"
        )
        wait.until(lambda _: driver.find_elements(By.XPATH, expander))
        driver.execute_script("arguments[0].click()", driver.find_element(By.XPATH, expander))
        wait.until(lambda _: all(name in body() for name in RUN_NAMES))
        text = body()
        assert (
            "/runs" in driver.current_url and "workflowType=machine_learning" in driver.current_url
        )
        assert f"{TRAININGS + 1} matching runs" in text  # the trainings and the study run
        assert all(stage in text for stage in STAGE_NAMES.values())  # the Source column
        assert "prepared@" in text  # the Dataset column
        driver.save_screenshot(str(tmp_path / "mlflow-runs.png"))

        # The charts link the logs give: every training's val_acc curve on one chart, though
        # the trainings are the study run's children (the link sorts by val_acc, which lists
        # runs flat; sorted by start time, the UI's default, it charts only rows on show).
        # The UI draws only the charts in view, so the user's search puts val_acc's on top.
        driver.get(tracking_charts_url(team.server.url, experiment_id))
        search = (By.CSS_SELECTOR, "input[placeholder='Search metric charts']")
        wait.until(lambda _: driver.find_elements(*search))
        driver.find_element(*search).send_keys("val_acc")
        legend = {f"{name} (val_acc)" for name in RUN_NAMES}  # a line per training
        wait.until(lambda _: legend <= set(body().splitlines()))
        assert "val_acc" in body().splitlines()  # the chart's title
        driver.save_screenshot(str(tmp_path / "mlflow-charts.png"))
        print(f"screenshots: {tmp_path}")
    finally:
        driver.quit()


def tracking_ui_url(server: str, experiment_id: str) -> str:
    from dogbreeds.tracking import store

    return store.ui_url(server, experiment_id)


def tracking_charts_url(server: str, experiment_id: str) -> str:
    from dogbreeds.tracking import store

    return store.charts_url(server, experiment_id)


# ----------------------------------------------------------------------------- DVC remotes


def clone_and_pull(team: Team, name: str, env: dict | None = None) -> tuple[Path, str]:
    """A second clone of the study that pulls data and models; (clone, pull output)."""
    clone = team.base / name
    run(["git", "clone", "-q", str(team.repo), str(clone)], team.base)
    assert not (clone / "models").exists()
    pulled = run(["dvc", "pull"], clone, env=env)
    return clone, pulled.stdout + pulled.stderr


def assert_nothing_to_retrain(clone: Path, env: dict | None = None) -> None:
    assert UP_TO_DATE in run(["dvc", "status"], clone, env=env).stdout
    assert len(list((clone / "models").glob("*.pt"))) == TRAININGS
    assert (clone / "data" / "prepared" / "train.pt").is_file()


def test_a_second_clone_pulls_everything_from_a_folder_remote(team: Team):
    storage = team.base / "dvc-storage"
    run(["dvc", "remote", "add", "--default", "--force", "storage", str(storage)], team.repo)
    commit(team.repo, "DVC remote: a folder")
    pushed = run(["dvc", "push"], team.repo)
    count = file_count("pushed", pushed.stdout + pushed.stderr)
    assert count > TRAININGS  # data, prepared tensors and the models

    clone, pulled = clone_and_pull(team, "clone-folder")
    assert file_count("fetched", pulled) == count
    print(f"folder remote: {count} files pushed, {count} fetched by the second clone")
    assert_nothing_to_retrain(clone)


def test_a_second_clone_pulls_everything_from_s3(team: Team):
    import boto3

    credentials = {
        "AWS_ACCESS_KEY_ID": "testing",  # moto accepts any; kept out of .dvc/config
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    with moto_s3() as endpoint:
        boto3.client("s3", endpoint_url=endpoint, **lower(credentials)).create_bucket(
            Bucket="dogbreeds"
        )
        run(["dvc", "remote", "add", "--default", "--force", "s3", "s3://dogbreeds/dvc"], team.repo)
        run(["dvc", "remote", "modify", "s3", "endpointurl", endpoint], team.repo)
        commit(team.repo, "DVC remote: S3")
        pushed = run(["dvc", "push"], team.repo, env=credentials)
        count = file_count("pushed", pushed.stdout + pushed.stderr)
        assert count > TRAININGS

        clone, pulled = clone_and_pull(team, "clone-s3", env=credentials)
        assert file_count("fetched", pulled) == count
        print(f"S3 remote (moto): {count} files pushed, {count} fetched by the second clone")
        assert_nothing_to_retrain(clone, env=credentials)
    assert "testing" not in (team.repo / ".dvc" / "config").read_text()


def lower(credentials: dict) -> dict:
    return {
        "aws_access_key_id": credentials["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": credentials["AWS_SECRET_ACCESS_KEY"],
        "region_name": credentials["AWS_DEFAULT_REGION"],
    }


# ----------------------------------------------------------------------------- experiments


def test_an_experiment_travels_through_git_and_dvc_remotes(team: Team):
    repo, origin = team.repo, team.base / "origin.git"
    storage = team.base / "dvc-exp-storage"
    run(["git", "init", "-q", "--bare", str(origin)], team.base)
    run(["git", "remote", "add", "origin", str(origin)], repo)
    run(["dvc", "remote", "add", "--default", "--force", "storage", str(storage)], repo)
    commit(repo, "DVC remote for experiments")
    branch = run(["git", "branch", "--show-current"], repo).stdout.strip()
    run(["git", "push", "-q", "origin", branch], repo)
    run(["dvc", "push"], repo)

    lr = "train.schedules.s20_14_6.max_lr=[0.005,0.0005,0.00005]"
    run(["dvc", "exp", "run", "--temp", "-n", "cool-cnn", "-S", "train.archs=[cnn]", "-S", lr],
        repo, env=ONE_THREAD)  # fmt: skip
    run(["dvc", "exp", "push", "origin", "cool-cnn"], repo)  # git refs and the DVC cache

    clone = team.base / "clone-exp"
    run(["git", "clone", "-q", "--branch", branch, str(origin), str(clone)], team.base)
    assert "cool-cnn" not in run(["dvc", "exp", "show", "--csv"], clone).stdout
    run(["dvc", "exp", "pull", "origin", "cool-cnn"], clone)
    assert "cool-cnn" in run(["dvc", "exp", "show", "--csv"], clone).stdout

    run(["dvc", "exp", "apply", "cool-cnn"], clone)
    run(["dvc", "pull"], clone)
    assert UP_TO_DATE in run(["dvc", "status"], clone).stdout
    model = clone / "models" / "cnn-s20_14_6-0.pt"
    assert model.is_file()
    assert md5(model) == dvc_lock_md5(clone, "models/cnn-s20_14_6-0.pt")  # the experiment's
    assert md5(model) != dvc_lock_md5(repo, "models/cnn-s20_14_6-0.pt")  # not the study's
    repro = run(["dvc", "repro"], clone)
    assert "Running stage" not in repro.stdout + repro.stderr  # nothing to train


def md5(path: Path) -> str:
    import hashlib

    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("variable", ["MLFLOW_BACKEND_URI", "MLFLOW_AUTH_DATABASE_URI"])
def test_the_server_script_refuses_a_password_in_a_database_uri(variable: str):
    """The password belongs in PGPASSWORD or ~/.pgpass, where no log or run can show it."""
    env = {**os.environ, variable: f"postgresql+psycopg2://mlflow:{PASSWORD}@127.0.0.1:1/mlflow"}
    import subprocess

    proc = subprocess.run(
        [str(ROOT / "scripts" / "mlflow-server.sh")], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "PGPASSWORD" in proc.stderr and PASSWORD not in proc.stderr
