#!/usr/bin/env bash
# A PostgreSQL cluster for the team's MLflow server, from the machine's own PostgreSQL binaries
# (Debian: apt-get install postgresql). `start` creates it on first use: initdb into $PGDATA,
# listening on 127.0.0.1:$PGPORT only, with a role `mlflow` whose password is $PGPASSWORD
# (scram-sha-256 over TCP) and its databases `mlflow` (runs, registry) and `mlflow_auth` (the
# server's users and permissions). The superuser is reachable only through the Unix
# socket inside $PGDATA. PostgreSQL refuses to run as root: as root, the cluster belongs to
# the `postgres` user.
#
#   PGPASSWORD=... scripts/postgres.sh start    # then: make mlflow-server
#   scripts/postgres.sh stop
set -euo pipefail

PGDATA=$(realpath -m "${PGDATA:-$PWD/.pgdata}")
PGPORT=${PGPORT:-5432}
export PGDATA PGPORT

# initdb/pg_ctl: on PATH, else Debian's versioned folder.
if ! command -v initdb >/dev/null; then
  bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$bindir" ] || { echo "error: PostgreSQL not found (apt-get install postgresql)" >&2; exit 1; }
  PATH="$bindir:$PATH"
fi

as_owner() {  # run a command as the cluster's owner: the postgres user when we are root
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || { echo "error: as root, a 'postgres' user must own the cluster (apt-get install postgresql creates it)" >&2; exit 1; }
    runuser -u postgres -- env PATH="$PATH" PGDATA="$PGDATA" PGPORT="$PGPORT" "$@"
  else
    "$@"
  fi
}

start() {
  : "${PGPASSWORD:?set PGPASSWORD: the password of the database role mlflow}"
  if [ ! -f "$PGDATA/PG_VERSION" ]; then
    mkdir -p "$PGDATA"
    [ "$(id -u)" -ne 0 ] || chown postgres: "$PGDATA"
    out=$(as_owner initdb --pgdata="$PGDATA" --username=postgres --auth-local=trust \
      --auth-host=scram-sha-256 --encoding=UTF8 --no-instructions 2>&1) || {
      echo "$out" >&2; echo "error: initdb into $PGDATA failed" >&2; exit 1; }
  fi
  as_owner pg_ctl start --wait --log="$PGDATA/server.log" \
    -o "-c listen_addresses=127.0.0.1 -p $PGPORT -k $PGDATA" >/dev/null
  # Role and database, idempotently; the password goes in through stdin, never a command line.
  as_owner psql -q -h "$PGDATA" -U postgres -d postgres -v ON_ERROR_STOP=1 \
    -v pw="$PGPASSWORD" >/dev/null <<'SQL'
SELECT 'CREATE ROLE mlflow LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mlflow')
\gexec
ALTER ROLE mlflow PASSWORD :'pw';
SELECT 'CREATE DATABASE mlflow OWNER mlflow'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'mlflow')
\gexec
SELECT 'CREATE DATABASE mlflow_auth OWNER mlflow'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'mlflow_auth')
\gexec
SQL
  echo "PostgreSQL on 127.0.0.1:$PGPORT (data in $PGDATA)"
  echo "backend store: postgresql+psycopg2://mlflow@127.0.0.1:$PGPORT/mlflow (password: PGPASSWORD)"
  echo "users and permissions: postgresql+psycopg2://mlflow@127.0.0.1:$PGPORT/mlflow_auth"
}

stop() {
  [ -f "$PGDATA/postmaster.pid" ] || { echo "no PostgreSQL running in $PGDATA"; return 0; }
  as_owner pg_ctl stop --wait --mode=fast >/dev/null
  echo "PostgreSQL in $PGDATA stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: scripts/postgres.sh start|stop" >&2; exit 2 ;;
esac
