#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on loopback for the MLflow and Prefect servers, and those
# servers on it (docs/scaling.md).
#
#   scripts/postgres.sh up        # initdb (first time) + start; databases mlflow, prefect; prints URLs
#   scripts/postgres.sh urls      # prints the URLs again (shell syntax: eval "$(... urls)")
#   scripts/postgres.sh status
#   scripts/postgres.sh down      # stops the cluster; its data stays in $PG_DIR
#   scripts/postgres.sh mlflow-server    # mlflow server on the cluster, proxied artifacts (foreground)
#   scripts/postgres.sh prefect-server   # prefect server on the cluster (foreground)
#
# Settings (environment):
#   PG_DIR      cluster folder (default .run/postgres); data in $PG_DIR/data, password in $PG_DIR/password
#   PG_PORT     loopback port (default 5433, beside a system cluster on 5432)
#   PG_BIN      PostgreSQL's bin folder (default: newest /usr/lib/postgresql/*/bin, else PATH)
#   PYTHON      interpreter with mlflow/prefect (default .venv/bin/python)
#   MLFLOW_PORT (5000), MLFLOW_ARTIFACTS (folder or s3://bucket/path; default .run/mlflow-artifacts)
#   PREFECT_PORT (4200)
#
# As root, PostgreSQL refuses to run: the cluster is initialised and started as the
# `postgres` user, so $PG_DIR must be reachable by that user (not under a 0700 folder).
set -euo pipefail

# Nothing this starts phones home.
export DO_NOT_TRACK=true PREFECT_SERVER_ANALYTICS_ENABLED=false MLFLOW_DISABLE_TELEMETRY=true

REPO="$(cd "$(dirname "$0")/.." && pwd)"
HOST=127.0.0.1
PG_USER=charflow
PG_DIR="$(realpath -m "${PG_DIR:-$REPO/.run/postgres}")"
PG_PORT="${PG_PORT:-5433}"
DATA="$PG_DIR/data"

die() { echo "postgres.sh: error: $*" >&2; exit 1; }
say() { echo "postgres.sh: $*" >&2; }

pg_bin() {
  if [[ -n "${PG_BIN:-}" ]]; then echo "$PG_BIN"; return; fi
  local newest
  newest="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  if [[ -n "$newest" ]]; then echo "$newest"; return; fi
  if command -v initdb >/dev/null; then dirname "$(command -v initdb)"; return; fi
  die "PostgreSQL server binaries (initdb, pg_ctl) not found; install them (Debian: apt-get install postgresql) or set PG_BIN"
}
BIN="$(pg_bin)"
[[ -x "$BIN/initdb" && -x "$BIN/pg_ctl" && -x "$BIN/psql" ]] \
  || die "no initdb/pg_ctl/psql in $BIN; install PostgreSQL or set PG_BIN"

# PostgreSQL will not run as root; run its server-side tools as `postgres` instead.
as_pg() {
  if [[ $EUID -eq 0 ]]; then
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

password() { cat "$PG_DIR/password"; }
port() { cat "$PG_DIR/port" 2>/dev/null || echo "$PG_PORT"; }

sql() {  # sql DATABASE STATEMENT -> unaligned rows
  PGPASSWORD="$(password)" "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$HOST" -p "$(port)" \
    -U "$PG_USER" -d "$1" -tAc "$2"
}

init() {
  [[ -f "$DATA/PG_VERSION" ]] && return
  mkdir -p "$DATA"
  if [[ $EUID -eq 0 ]]; then
    chown postgres: "$DATA"
    runuser -u postgres -- test -w "$DATA" \
      || die "user postgres cannot reach $DATA (a parent folder is private); choose another PG_DIR"
  fi
  chmod 700 "$DATA"
  # A fresh random password per cluster; the file stays readable by its owner only.
  (umask 077 && od -An -tx1 -N16 /dev/urandom | tr -d ' \n' >"$PG_DIR/password")
  local pwfile="$PG_DIR/initdb.pw"  # a copy initdb (run as postgres) can read; removed below
  (umask 077 && cp "$PG_DIR/password" "$pwfile")
  if [[ $EUID -eq 0 ]]; then chown postgres: "$pwfile"; fi
  say "initialising a cluster in $DATA"
  if ! as_pg "$BIN/initdb" -D "$DATA" -U "$PG_USER" --pwfile="$pwfile" \
      --auth=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$PG_DIR/initdb.log" 2>&1; then
    rm -f "$pwfile"
    die "initdb failed; see $PG_DIR/initdb.log: $(tail -n 3 "$PG_DIR/initdb.log")"
  fi
  rm -f "$pwfile"
  # Loopback TCP only: no Unix socket (its default folder belongs to the system cluster).
  cat >>"$DATA/postgresql.conf" <<EOF
listen_addresses = '$HOST'
unix_socket_directories = ''
EOF
}

running() { [[ -f "$DATA/PG_VERSION" ]] && as_pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }

urls() {
  local base="$PG_USER:$(password)@$HOST:$(port)"
  echo "PG_URL=postgresql://$base/postgres"
  # Explicit driver: SQLAlchemy 2.1 defaults postgresql:// to psycopg 3, psycopg2 is what is installed.
  echo "MLFLOW_BACKEND_STORE_URI=postgresql+psycopg2://$base/mlflow"
  echo "PREFECT_SERVER_DATABASE_CONNECTION_URL=postgresql+asyncpg://$base/prefect"
}

up() {
  init
  if running; then
    say "already running on $HOST:$(port) ($DATA)"
  else
    echo "$PG_PORT" >"$PG_DIR/port"
    as_pg "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -o "-p $PG_PORT" -w -t 60 start \
      >/dev/null || die "PostgreSQL did not start; see $DATA/server.log: $(tail -n 3 "$DATA/server.log")"
    say "started on $HOST:$PG_PORT ($DATA)"
  fi
  local db
  for db in mlflow prefect; do
    if [[ -z "$(sql postgres "SELECT 1 FROM pg_database WHERE datname = '$db'")" ]]; then
      sql postgres "CREATE DATABASE $db"
    fi
  done
  urls
}

down() {
  if running; then
    as_pg "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
    say "stopped ($DATA kept; delete it to start afresh)"
  else
    say "not running ($DATA)"
  fi
}

need_running() { running || die "PostgreSQL is not running in $PG_DIR; start it with: $0 up"; }

python_bin() {
  local py="${PYTHON:-$REPO/.venv/bin/python}"
  [[ -x "$py" ]] || py="$(command -v python3)"
  echo "$py"
}

mlflow_server() {
  need_running
  eval "$(urls)"
  local artifacts="${MLFLOW_ARTIFACTS:-$REPO/.run/mlflow-artifacts}"
  local port="${MLFLOW_PORT:-5000}"
  say "MLflow server on http://$HOST:$port (runs in PostgreSQL, artifacts in $artifacts)"
  # The store URI (with its password) goes by environment, never on a command line `ps` shows.
  # One worker: the server is I/O bound; MLflow's background job runners (GenAI features)
  # would add a dozen processes nothing here uses.
  MLFLOW_BACKEND_STORE_URI="$MLFLOW_BACKEND_STORE_URI" \
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}" \
    "$(python_bin)" -m mlflow server --serve-artifacts --artifacts-destination "$artifacts" \
    --host "$HOST" --port "$port" --workers "${MLFLOW_WORKERS:-1}"
}

prefect_server() {
  need_running
  eval "$(urls)"
  local port="${PREFECT_PORT:-4200}"
  say "Prefect server on http://$HOST:$port (state in PostgreSQL)"
  PREFECT_SERVER_DATABASE_CONNECTION_URL="$PREFECT_SERVER_DATABASE_CONNECTION_URL" \
    PREFECT_SERVER_API_HOST="$HOST" PREFECT_SERVER_API_PORT="$port" \
    "$(python_bin)" -m prefect server start --host "$HOST" --port "$port"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  urls) need_running; urls ;;
  status) if running; then say "running on $HOST:$(port) ($DATA)"; else say "not running ($DATA)"; exit 3; fi ;;
  mlflow-server) mlflow_server ;;
  prefect-server) prefect_server ;;
  *) die "usage: $0 up|down|urls|status|mlflow-server|prefect-server (got '${1:-}')" ;;
esac
