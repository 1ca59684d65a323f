"""Real servers on loopback for the team tests: PostgreSQL, the MLflow tracking server, a served
MLflow model, and moto's S3. Each starts on a free port, is waited for until it answers, and is
stopped with everything it started (its own process group).

PostgreSQL and the MLflow server are started through the same scripts a team uses
(`scripts/postgres.sh`, `scripts/mlflow-server.sh`), so the tests check those too.

Without PostgreSQL or Chromium on the machine the tests that need them are skipped, except
where `DOGBREEDS_REQUIRE_SERVERS=1` (as in `.ci/run`): there a missing tool is a failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import BIN, ROOT

LOOPBACK = "127.0.0.1"


def require(tool: str, found: bool) -> None:
    """Skip (locally) or fail (CI) when a tool a test needs is not installed."""
    if found:
        return
    message = f"{tool} is not installed (.ci/run installs it)"
    if os.environ.get("DOGBREEDS_REQUIRE_SERVERS") == "1":
        pytest.fail(message)
    pytest.skip(message)


def has_postgres() -> bool:
    return bool(shutil.which("initdb") or list(Path("/usr/lib/postgresql").glob("*/bin/initdb")))


def chromium() -> tuple[str, str] | None:
    """(browser, chromedriver) paths of the system's Chromium, or None."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def headless_chromium(*extra_args: str):
    """A selenium driver of the system's headless Chromium (the test skips or fails, as
    `require` decides, without one), with the flags a sandboxed VM needs plus `extra_args`."""
    found = chromium()
    require("Chromium and chromedriver", found is not None)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = found
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    flags = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--disable-background-networking", "--disable-component-update")  # fmt: skip
    for arg in (*flags, *extra_args):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver_path), options=options)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def server_env(**extra: str) -> dict[str, str]:
    """The environment for a server: the venv first on PATH, no telemetry, no inherited store."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.update(MLFLOW_DISABLE_TELEMETRY="true", DVC_NO_ANALYTICS="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(extra)
    return env


def wait_for(url: str, process: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    """Poll `url` until it answers 200; fail with the server's log if it dies or never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{process.args} exited {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer in {timeout}s:\n{log.read_text()}")


@contextmanager
def background(cmd: list[str], log: Path, health: str, env: dict, cwd: Path) -> Iterator[None]:
    """Run a server in its own process group until the block ends."""
    with log.open("w") as out:
        process = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
        )
    try:
        wait_for(health, process, log)
        yield
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)  # mlflow server may ignore TERM, or take its time
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@dataclass
class Postgres:
    port: int
    password: str
    data: Path

    def psql(self, sql: str) -> str:
        """Run one query as the mlflow role over TCP (password from PGPASSWORD); its output."""
        proc = subprocess.run(
            ["psql", "-h", LOOPBACK, "-p", str(self.port), "-U", "mlflow", "-d", "mlflow",
             "-At", "-c", sql],
            env={**os.environ, "PGPASSWORD": self.password},
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return proc.stdout.strip()


@contextmanager
def postgres(folder: Path, password: str) -> Iterator[Postgres]:
    """A fresh cluster in `folder` (scripts/postgres.sh), stopped at the end."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:  # the postgres user must be able to reach its data folder
        for parent in (folder, *folder.parents):
            if not parent.stat().st_mode & 0o001:
                parent.chmod(parent.stat().st_mode | 0o001)  # traverse only, no listing
    db = Postgres(free_port(), password, folder / "pgdata")
    env = server_env(PGDATA=str(db.data), PGPORT=str(db.port), PGPASSWORD=password)
    script = ROOT / "scripts" / "postgres.sh"
    subprocess.run([script, "start"], env=env, check=True, capture_output=True, cwd=folder)
    try:
        yield db
    finally:
        subprocess.run([script, "stop"], env=env, capture_output=True, cwd=folder)


@dataclass
class MlflowServer:
    url: str
    log: Path
    admin_password: str


@contextmanager
def mlflow_server(db: Postgres, folder: Path, admin_password: str) -> Iterator[MlflowServer]:
    """scripts/mlflow-server.sh on PostgreSQL `db`, artifacts proxied into folder/artifacts,
    with MLflow's basic-auth app: its first start creates user `admin` with `admin_password`."""
    port = free_port()
    log = folder / "mlflow-server.log"
    env = server_env(
        PGPASSWORD=db.password,
        PGPORT=str(db.port),
        MLFLOW_PORT=str(port),
        MLFLOW_ARTIFACTS=str(folder / "artifacts"),
        MLFLOW_AUTH_ADMIN_PASSWORD=admin_password,
    )
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(name, None)
    cmd = [str(ROOT / "scripts" / "mlflow-server.sh"), "--workers", "1"]
    url = f"http://{LOOPBACK}:{port}"
    with background(cmd, log, f"{url}/health", env, folder):
        yield MlflowServer(url, log, admin_password)


@contextmanager
def signed_in(username: str, password: str) -> Iterator[None]:
    """MLflow clients in this process send `username`'s credentials (MLflow reads them from
    MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD at every request) until the block ends."""
    names = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(zip(names, (username, password), strict=True))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def add_user(server: MlflowServer, username: str, password: str) -> None:
    """The documented way (docs/team.md): the admin creates a user through the auth client."""
    from mlflow.server import get_app_client

    with signed_in("admin", server.admin_password):
        get_app_client("basic-auth", tracking_uri=server.url).create_user(username, password)


@contextmanager
def served_model(model_uri: str, tracking_uri: str, folder: Path) -> Iterator[str]:
    """`mlflow models serve` of `model_uri` in this environment; yields its invocations URL."""
    port = free_port()
    cmd = [str(BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
           "-h", LOOPBACK, "-p", str(port), "--workers", "1"]  # fmt: skip
    env = server_env(MLFLOW_TRACKING_URI=tracking_uri)
    url = f"http://{LOOPBACK}:{port}"
    with background(cmd, folder / "serve.log", f"{url}/ping", env, folder):
        yield f"{url}/invocations"


@contextmanager
def moto_s3() -> Iterator[str]:
    """moto's S3 server in this process on loopback; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address=LOOPBACK, port=free_port(), verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()
