#!/usr/bin/env bash
# The team's MLflow tracking server: runs and the model registry in a database (PostgreSQL:
# scripts/postgres.sh), artifacts proxied by the server into $MLFLOW_ARTIFACTS (a folder, or
# s3://bucket/prefix), listening on 127.0.0.1 only. Clients need nothing but the URL:
#
#   MLFLOW_TRACKING_URI=http://127.0.0.1:5000 dvc repro
#
# The database password is never part of the URI: libpq reads it from PGPASSWORD (or
# ~/.pgpass), so it cannot leak into logs, runs or tags. Extra arguments go to `mlflow server`.
set -euo pipefail

MLFLOW_BACKEND_URI=${MLFLOW_BACKEND_URI:-postgresql+psycopg2://mlflow@127.0.0.1:${PGPORT:-5432}/mlflow}
MLFLOW_ARTIFACTS=${MLFLOW_ARTIFACTS:-$PWD/mlflow-server-artifacts}
MLFLOW_PORT=${MLFLOW_PORT:-5000}
case "$MLFLOW_BACKEND_URI" in
  *://*:*@*) echo "error: put the database password in PGPASSWORD or ~/.pgpass, not in MLFLOW_BACKEND_URI" >&2
    exit 2 ;;
esac

export MLFLOW_DISABLE_TELEMETRY=true
exec mlflow server \
  --backend-store-uri "$MLFLOW_BACKEND_URI" \
  --artifacts-destination "$MLFLOW_ARTIFACTS" \
  --host 127.0.0.1 --port "$MLFLOW_PORT" \
  "$@"
