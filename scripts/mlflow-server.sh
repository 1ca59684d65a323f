#!/usr/bin/env bash
# The team's MLflow tracking server: runs and the model registry in a database (PostgreSQL:
# scripts/postgres.sh), artifacts proxied by the server into $MLFLOW_ARTIFACTS (a folder, or
# s3://bucket/prefix), listening on 127.0.0.1 only, and nobody in without a user name and
# password: MLflow's basic-auth app (`mlflow server --app-name basic-auth`, the mlflow[auth]
# extra). Users and their permissions live in the database mlflow_auth beside the runs.
#
#   PGPASSWORD=... MLFLOW_AUTH_ADMIN_PASSWORD=... scripts/mlflow-server.sh      # or make mlflow-server
#   MLFLOW_TRACKING_URI=http://127.0.0.1:5000 MLFLOW_TRACKING_USERNAME=alice \
#     MLFLOW_TRACKING_PASSWORD=... dvc repro
#
# Secrets come from the environment only, never a command line or a file under git:
#   PGPASSWORD                  the database role mlflow's (libpq reads it; or ~/.pgpass)
#   MLFLOW_AUTH_ADMIN_PASSWORD  the first start creates user $MLFLOW_AUTH_ADMIN_USERNAME (admin)
#                               with it; later starts ignore it (change it with the auth
#                               client's update_user_password)
#   MLFLOW_FLASK_SERVER_SECRET_KEY  signs the sign-up form's CSRF token; a random one per start
#                               unless set (set the same one on every server behind one name)
# The auth app's config file holds no secret: it is written at start into a temporary folder
# and removed when the server stops. MLFLOW_AUTH_DEFAULT_PERMISSION (READ) is what every user
# may do with an experiment or model nobody granted them anything on: READ lets the team see
# each other's runs; NO_PERMISSIONS hides them. The user who creates an experiment or a
# registered model gets MANAGE on it. The admin adds users (docs/reliability.md):
#
#   MLFLOW_TRACKING_USERNAME=admin MLFLOW_TRACKING_PASSWORD=... \
#     python scripts/mlflow-user.py alice --permission EDIT          # asks for alice's password
#
# What the auth app does not do: encrypt. Basic auth sends the password with every request, so
# beyond loopback put a TLS proxy (nginx, Caddy) in front. Extra arguments go to `mlflow server`.
set -euo pipefail

PGPORT=${PGPORT:-5432}
MLFLOW_BACKEND_URI=${MLFLOW_BACKEND_URI:-postgresql+psycopg2://mlflow@127.0.0.1:$PGPORT/mlflow}
MLFLOW_AUTH_DATABASE_URI=${MLFLOW_AUTH_DATABASE_URI:-postgresql+psycopg2://mlflow@127.0.0.1:$PGPORT/mlflow_auth}
MLFLOW_ARTIFACTS=${MLFLOW_ARTIFACTS:-$PWD/mlflow-server-artifacts}
MLFLOW_PORT=${MLFLOW_PORT:-5000}
for uri in "$MLFLOW_BACKEND_URI" "$MLFLOW_AUTH_DATABASE_URI"; do
  case "$uri" in
    *://*:*@*) echo "error: put the database password in PGPASSWORD or ~/.pgpass, not in MLFLOW_BACKEND_URI or MLFLOW_AUTH_DATABASE_URI" >&2
      exit 2 ;;
  esac
done
case "${MLFLOW_AUTH_DEFAULT_PERMISSION:=READ}" in
  READ | EDIT | MANAGE | NO_PERMISSIONS) ;;
  *) echo "error: MLFLOW_AUTH_DEFAULT_PERMISSION must be READ, EDIT, MANAGE or NO_PERMISSIONS, got '$MLFLOW_AUTH_DEFAULT_PERMISSION'" >&2
    exit 2 ;;
esac

export MLFLOW_DISABLE_TELEMETRY=true
# No job runner (8 processes for GenAI evaluation jobs; the study runs none): set it to true
# to have them.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}
if [ -z "${MLFLOW_FLASK_SERVER_SECRET_KEY:-}" ]; then
  MLFLOW_FLASK_SERVER_SECRET_KEY=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
  export MLFLOW_FLASK_SERVER_SECRET_KEY
fi
config_dir=$(mktemp -d "${TMPDIR:-/tmp}/mlflow-auth.XXXXXX")
trap 'rm -rf "$config_dir"' EXIT
export MLFLOW_AUTH_CONFIG_PATH="$config_dir/basic_auth.ini"
cat >"$MLFLOW_AUTH_CONFIG_PATH" <<INI
[mlflow]
default_permission = $MLFLOW_AUTH_DEFAULT_PERMISSION
database_uri = $MLFLOW_AUTH_DATABASE_URI
admin_username = ${MLFLOW_AUTH_ADMIN_USERNAME:-admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI

# Not exec: the trap removes the config when the server stops (Ctrl-C, TERM to the group).
mlflow server --app-name basic-auth \
  --backend-store-uri "$MLFLOW_BACKEND_URI" \
  --artifacts-destination "$MLFLOW_ARTIFACTS" \
  --host 127.0.0.1 --port "$MLFLOW_PORT" \
  "$@" &
server=$!
trap 'kill -TERM "$server" 2>/dev/null || true' INT TERM
status=0
wait "$server" || status=$?
if kill -0 "$server" 2>/dev/null; then  # woken by a signal: wait for the server to stop
  wait "$server" || status=$?
fi
exit "$status"
