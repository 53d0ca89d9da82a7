#!/usr/bin/env bash
# A local cluster (make cluster): a throwaway PostgreSQL and Redis on loopback, two API processes and
# two workers sharing them. Prints the URLs; Ctrl-C stops everything and removes the databases.
#   PARLEY_MODEL (default scripted:echo?delay_ms=30), API_PORTS (8001 8002), WORKER_METRICS_PORTS (9101 9102)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
API_PORTS=${API_PORTS:-"8001 8002"}
WORKER_METRICS_PORTS=${WORKER_METRICS_PORTS:-"9101 9102"}
LOGS=${PARLEY_DATA_DIR:-.parley}/cluster
mkdir -p "$LOGS"

eval "$(scripts/services.sh start)"
pids=()
stop() {
  trap - INT TERM EXIT
  echo "cluster: stopping" >&2
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  scripts/services.sh stop "$SERVICES_DIR"
}
trap stop INT TERM EXIT

export PARLEY_DATABASE_URL=$PARLEY_TEST_POSTGRES_URL PARLEY_REDIS_URL=$PARLEY_TEST_REDIS_URL
export PARLEY_MODEL=${PARLEY_MODEL:-scripted:echo?delay_ms=30}
"$VENV/bin/parley" db upgrade >/dev/null
# Until URL answers (at most 2 minutes); fails at once if the process PID has exited.
ready() {
  local url=$1 pid=$2 log=$3
  for _ in $(seq 600); do
    curl -fsS "$url" >/dev/null 2>&1 && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "cluster: a process exited while starting; its log, $log:" >&2
      tail -n 20 "$log" >&2
      return 1
    fi
    sleep 0.2
  done
  echo "cluster: $url did not answer within 2 minutes; see $log" >&2
  return 1
}
checks=()
for port in $API_PORTS; do
  PARLEY_WORKER=off "$VENV/bin/parley" serve --port "$port" >"$LOGS/api-$port.log" 2>&1 &
  pids+=($!)
  checks+=("http://127.0.0.1:$port/readyz $! $LOGS/api-$port.log")
done
for port in $WORKER_METRICS_PORTS; do
  "$VENV/bin/parley" worker --metrics-port "$port" >"$LOGS/worker-$port.log" 2>&1 &
  pids+=($!)
  checks+=("http://127.0.0.1:$port/metrics $! $LOGS/worker-$port.log")
done
for check in "${checks[@]}"; do
  # shellcheck disable=SC2086 # three words: URL, PID, log
  ready $check || exit 1
done
echo "cluster: PostgreSQL $PARLEY_DATABASE_URL, Redis $PARLEY_REDIS_URL"
for port in $API_PORTS; do echo "cluster: API     http://127.0.0.1:$port"; done
for port in $WORKER_METRICS_PORTS; do echo "cluster: worker  http://127.0.0.1:$port/metrics"; done
echo "cluster: logs in $LOGS; Ctrl-C stops everything"
wait -n "${pids[@]}" || true
echo "cluster: a process exited; see $LOGS" >&2
