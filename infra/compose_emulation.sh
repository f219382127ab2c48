#!/usr/bin/env bash
# Redis and PostgreSQL from Debian's packages, on 127.0.0.1, standing in for the `redis` and `postgres`
# services of docker-compose.yml (tests/e2e/test_compose_emulation.py; no Docker engine needed).
#
#   infra/compose_emulation.sh install   apt-get install redis-server postgresql (only if missing)
#   infra/compose_emulation.sh start     install if needed, init (once), start both, wait until ready
#   infra/compose_emulation.sh stop      stop exactly what this script started (pid files), nothing else
#   infra/compose_emulation.sh status
#
# Idempotent: `start` twice is fine; the Postgres role and database are created only when missing.
# Settings (environment):
#   EMU_HOME        state: data, logs, pid files   (default data/compose-emulation, git-ignored)
#   EMU_REDIS_PORT  (default 16379)     EMU_PG_PORT (default 15432)
#   EMU_PG_USER / EMU_PG_PASSWORD / EMU_PG_DB   the role and database to create, as compose's
#                   POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB   (default mlflow / mlflow / mlflow)
#   EMU_READY_SECONDS  (default 60)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
EMU_HOME="${EMU_HOME:-$ROOT/data/compose-emulation}"
REDIS_PORT="${EMU_REDIS_PORT:-16379}"
PG_PORT="${EMU_PG_PORT:-15432}"
PG_USER="${EMU_PG_USER:-mlflow}"
PG_PASSWORD="${EMU_PG_PASSWORD:-mlflow}"
PG_DB="${EMU_PG_DB:-mlflow}"
READY_SECONDS="${EMU_READY_SECONDS:-60}"

REDIS_DIR="$EMU_HOME/redis"
REDIS_PID="$REDIS_DIR/redis.pid"
PG_DATA="$EMU_HOME/postgres/data"
PG_SOCK="$EMU_HOME/postgres/socket"
PG_LOG="$EMU_HOME/postgres/postgres.log"

say() { echo "[compose-emulation] $*" >&2; }

pg_bin() {
  local dir
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
  [[ -n "$dir" && -x "$dir/initdb" ]] || return 1
  echo "$dir"
}

install() {
  if command -v redis-server >/dev/null && command -v redis-cli >/dev/null && pg_bin >/dev/null; then
    return 0
  fi
  command -v apt-get >/dev/null || { say "apt-get not found: install redis-server and postgresql yourself"; exit 1; }
  say "installing redis-server and postgresql (Debian packages)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >"$EMU_HOME/apt.log" 2>&1 || { say "apt-get update failed; see $EMU_HOME/apt.log"; exit 1; }
  apt-get install -y -qq --no-install-recommends redis-server postgresql >>"$EMU_HOME/apt.log" 2>&1 \
    || { say "apt-get install failed; see $EMU_HOME/apt.log"; tail -20 "$EMU_HOME/apt.log" >&2; exit 1; }
}

as_postgres() {
  # initdb and the server refuse to run as root: use the `postgres` account the package creates.
  if [[ "$(id -u)" == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pid_alive() {  # pid_alive PIDFILE PATTERN: the pid in the file runs and its command line matches
  [[ -f "$1" ]] || return 1
  local pid; pid="$(head -1 "$1")"
  kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$2"
}

redis_running() { pid_alive "$REDIS_PID" "redis-server"; }
pg_running() { pid_alive "$PG_DATA/postmaster.pid" "$PG_DATA"; }

wait_until() {  # wait_until WHAT COMMAND...
  local what="$1"; shift
  local deadline=$((SECONDS + READY_SECONDS))
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS >= deadline )); then say "$what not ready after ${READY_SECONDS}s"; return 1; fi
    sleep 0.3
  done
}

start_redis() {
  if redis_running; then say "redis already running (pid $(cat "$REDIS_PID")) on 127.0.0.1:$REDIS_PORT"; return 0; fi
  mkdir -p "$REDIS_DIR"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --protected-mode yes --daemonize yes \
    --pidfile "$REDIS_PID" --dir "$REDIS_DIR" --logfile "$REDIS_DIR/redis.log" \
    --save "" --appendonly no
  wait_until "redis" redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping
  say "redis ready on 127.0.0.1:$REDIS_PORT (pid $(cat "$REDIS_PID"))"
}

psql_admin() {
  as_postgres "$(pg_bin)/psql" -h "$PG_SOCK" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qAt "$@"
}

start_postgres() {
  local bin; bin="$(pg_bin)"
  mkdir -p "$EMU_HOME/postgres" "$PG_SOCK"
  if [[ "$(id -u)" == 0 ]]; then chown -R postgres:postgres "$EMU_HOME/postgres"; fi
  if [[ ! -f "$PG_DATA/PG_VERSION" ]]; then
    say "initializing a PostgreSQL cluster in $PG_DATA"
    as_postgres "$bin/initdb" -D "$PG_DATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
      -E UTF8 --locale=C.UTF-8 >"$EMU_HOME/postgres/initdb.log" 2>&1 \
      || { say "initdb failed; see $EMU_HOME/postgres/initdb.log"; exit 1; }
  fi
  if pg_running; then
    say "postgres already running on 127.0.0.1:$PG_PORT"
  else
    as_postgres "$bin/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t "$READY_SECONDS" \
      -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_SOCK" start >/dev/null \
      || { say "postgres did not start; see $PG_LOG"; tail -20 "$PG_LOG" >&2; exit 1; }
  fi
  wait_until "postgres" "$bin/pg_isready" -h 127.0.0.1 -p "$PG_PORT"
  # The role and database compose's postgres image would create from POSTGRES_USER/PASSWORD/DB.
  local q_pw="${PG_PASSWORD//\'/\'\'}"
  if [[ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '$PG_USER'")" != 1 ]]; then
    psql_admin -c "CREATE ROLE \"$PG_USER\" LOGIN PASSWORD '$q_pw'"
  else
    psql_admin -c "ALTER ROLE \"$PG_USER\" LOGIN PASSWORD '$q_pw'"
  fi
  if [[ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")" != 1 ]]; then
    psql_admin -c "CREATE DATABASE \"$PG_DB\" OWNER \"$PG_USER\""
  fi
  say "postgres ready on 127.0.0.1:$PG_PORT (database $PG_DB, role $PG_USER)"
}

stop() {
  if redis_running; then
    local pid; pid="$(cat "$REDIS_PID")"
    say "stopping redis (pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    rm -f "$REDIS_PID"
  fi
  if pg_running; then
    say "stopping postgres"
    as_postgres "$(pg_bin)/pg_ctl" -D "$PG_DATA" -m fast -w -t 30 stop >/dev/null || true
  fi
}

status() {
  local rc=0
  if redis_running; then say "redis running on 127.0.0.1:$REDIS_PORT"; else say "redis not running"; rc=3; fi
  if pg_running; then say "postgres running on 127.0.0.1:$PG_PORT"; else say "postgres not running"; rc=3; fi
  return $rc
}

mkdir -p "$EMU_HOME"
case "${1:-}" in
  install) install ;;
  start) install; start_redis; start_postgres ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 {install|start|stop|status}" >&2; exit 2 ;;
esac
