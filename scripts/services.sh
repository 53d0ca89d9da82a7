#!/usr/bin/env bash
# Throwaway PostgreSQL and Redis on loopback for the tests.
#   eval "$(scripts/services.sh start)"   prints the env vars to export (and SERVICES_DIR)
#   scripts/services.sh stop DIR          stops them and removes DIR
# Beside Debian's PostgreSQL (the main test database), a second PostgreSQL with pgvector from
# the pgserver wheel in the virtualenv ($VENV, .venv by default), when it is installed:
# PARLEY_TEST_PGVECTOR_URL points at it, with `CREATE EXTENSION vector` done.
set -euo pipefail
VENV=${VENV:-.venv}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start() {
  local dir pgbin pgport redisport as_pg=()
  dir=$(mktemp -d /tmp/parley-services.XXXXXX)
  chmod 755 "$dir"
  pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  if [ "$(id -u)" = 0 ]; then
    chown postgres "$dir"
    as_pg=(runuser -u postgres --)
  fi
  pgport=$(free_port)
  "${as_pg[@]}" "$pgbin/initdb" -D "$dir/pg" -A trust -U postgres >"$dir/initdb.log" 2>&1
  "${as_pg[@]}" "$pgbin/pg_ctl" -D "$dir/pg" -l "$dir/pg.log" -w -o \
    "-p $pgport -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
    start >/dev/null
  redisport=$(free_port)
  redis-server --port "$redisport" --bind 127.0.0.1 --save "" --appendonly no \
    --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --dir "$dir"
  pgvector "$dir"
  echo "export SERVICES_DIR=$dir"
  echo "export PARLEY_TEST_POSTGRES_URL=postgresql+asyncpg://postgres@127.0.0.1:$pgport/postgres"
  echo "export PARLEY_TEST_REDIS_URL=redis://127.0.0.1:$redisport/0"
}

pgvector_bin() {
  "$VENV/bin/python" -c 'import pathlib, pgserver; print(pathlib.Path(pgserver.__file__).parent / "pginstall" / "bin")' 2>/dev/null
}

# Not fatal: without it, the pgvector tests skip (or fail under PARLEY_TEST_REQUIRE_SERVICES=1).
pgvector() {
  local dir=$1 bin port as_pg=()
  bin=$(pgvector_bin) || return 0
  [ -x "$bin/initdb" ] || return 0
  if [ "$(id -u)" = 0 ]; then
    as_pg=(runuser -u postgres --)
    # The postgres user may not reach a virtualenv under a private home: run a copy.
    if ! runuser -u postgres -- test -x "$bin/postgres"; then
      cp -a "$(dirname "$bin")" "$dir/pgvector-install"
      chown -R postgres "$dir/pgvector-install"
      bin="$dir/pgvector-install/bin"
    fi
  fi
  port=$(free_port)
  "${as_pg[@]}" "$bin/initdb" -D "$dir/pgvector" -A trust -U postgres >"$dir/pgvector-initdb.log" 2>&1 || return 0
  "${as_pg[@]}" "$bin/pg_ctl" -D "$dir/pgvector" -l "$dir/pgvector.log" -w -o \
    "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100" \
    start >/dev/null || return 0
  "$bin/psql" -q -h 127.0.0.1 -p "$port" -U postgres -d template1 -c 'CREATE EXTENSION IF NOT EXISTS vector' >/dev/null || return 0
  echo "$bin" >"$dir/pgvector.bin"
  echo "export PARLEY_TEST_PGVECTOR_URL=postgresql+asyncpg://postgres@127.0.0.1:$port/postgres"
}

stop() {
  local dir=$1 pgbin bin as_pg=()
  [ -d "$dir" ] || return 0
  pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  [ "$(id -u)" = 0 ] && as_pg=(runuser -u postgres --)
  [ -d "$dir/pg" ] && "${as_pg[@]}" "$pgbin/pg_ctl" -D "$dir/pg" -m immediate -w stop >/dev/null 2>&1 || true
  if [ -f "$dir/pgvector.bin" ]; then
    bin=$(cat "$dir/pgvector.bin")
    "${as_pg[@]}" "$bin/pg_ctl" -D "$dir/pgvector" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  [ -f "$dir/redis.pid" ] && kill "$(cat "$dir/redis.pid")" 2>/dev/null || true
  rm -rf "$dir"
}

case "${1:-}" in
  start) start ;;
  stop) stop "${2:?usage: $0 stop DIR}" ;;
  *) echo "usage: $0 start | stop DIR" >&2; exit 2 ;;
esac
