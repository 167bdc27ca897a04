#!/usr/bin/env bash
# `make demo`: the LoRA-vs-QLoRA comparison on the smoke preset through the real queue, on the embedded
# default (SQLite database, and the local Redis broker the project starts under var/broker). Starts a
# worker for the occasion and stops it, and the local broker, after.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
# The smoke models are tiny: one thread per process is faster than two fighting over two cores.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
mkdir -p var/logs

"$BIN/jobs" worker --queues gpu,cpu --hostname "demo-$$@%h" >var/logs/demo-worker.log 2>&1 &
worker=$!
stop_all() {
  kill "$worker" 2>/dev/null || true
  wait "$worker" 2>/dev/null || true
  "$BIN/jobs" broker stop >/dev/null 2>&1 || true
}
trap stop_all EXIT
echo "worker started (log: var/logs/demo-worker.log)"

"$BIN/jobs" submit compare --preset smoke --with-generation --wait
echo
"$BIN/jobs" report
