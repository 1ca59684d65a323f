"""Add a user to the team's MLflow server (scripts/mlflow-server.sh, MLflow's basic-auth app),
or change a user's permission on the study's experiment and registered models.

Run it as the admin; the new user's password is read from the terminal (or from
NEW_MLFLOW_PASSWORD), never from the command line:

    MLFLOW_TRACKING_URI=http://127.0.0.1:5000 MLFLOW_TRACKING_USERNAME=admin \\
      MLFLOW_TRACKING_PASSWORD=... python scripts/mlflow-user.py alice --permission EDIT

--permission grants alice that permission on the experiment `dogbreeds` and on the registered
models dogbreeds-<arch> that exist: EDIT to log runs and move champions, READ to look only.
Without it she has the server's default permission (MLFLOW_AUTH_DEFAULT_PERMISSION, READ). An
existing user keeps her password and gets the permission.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys

PERMISSIONS = ("READ", "EDIT", "MANAGE", "NO_PERMISSIONS")
EXPERIMENT = "dogbreeds"
ARCHS = ("cnn", "dsc", "deformable")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("username")
    parser.add_argument(
        "--permission", choices=PERMISSIONS, help="on the study's experiment and models"
    )
    args = parser.parse_args()
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri.startswith(("http://", "https://")):
        sys.exit("error: set MLFLOW_TRACKING_URI to the server (http://host:port)")
    if not os.environ.get("MLFLOW_TRACKING_USERNAME") or not os.environ.get(
        "MLFLOW_TRACKING_PASSWORD"
    ):
        sys.exit(
            "error: sign in as the admin: MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
        )
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from mlflow.server import get_app_client

    auth = get_app_client("basic-auth", tracking_uri=uri)
    try:
        auth.get_user(args.username)
        print(f"{args.username}: exists, password unchanged")
    except MlflowException:
        password = os.environ.get("NEW_MLFLOW_PASSWORD") or getpass.getpass(
            f"password for {args.username}: "
        )
        auth.create_user(args.username, password)
        print(f"{args.username}: created")
    if args.permission:
        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name(EXPERIMENT)
        if experiment is not None:
            auth.grant_user_permission(
                args.username, "experiment", experiment.experiment_id, args.permission
            )
            print(f"{args.username}: {args.permission} on experiment {EXPERIMENT}")
        for name in (f"dogbreeds-{arch}" for arch in ARCHS):
            try:
                client.get_registered_model(name)
            except MlflowException:
                continue  # not registered yet: its creator will MANAGE it
            auth.grant_user_permission(args.username, "registered_model", name, args.permission)
            print(f"{args.username}: {args.permission} on registered model {name}")


if __name__ == "__main__":
    main()
