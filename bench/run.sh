#!/usr/bin/env bash
# Propylon beside nginx, HAProxy and Caddy, same cores, same run (../shared/bench/peers).
# Two Propylon targets: one worker, one route, metrics on (always), access log off, and the
# same with the JSON access log on (written to a file). Extra arguments go to run-peers.sh
# (e.g. -d 3 -r 1 for a smoke run). Results: bench/results/<date>/summary.md
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PEERS=${PEERS_DIR:-$ROOT/../shared/bench/peers}
# shellcheck source=scripts/_venv.sh
source scripts/_venv.sh
OUT="$ROOT/bench/results/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT"
PY="$ROOT/.venv/bin/python"
bash "$PEERS/run-peers.sh" --out "$OUT" "$@" \
  --cmd propylon "$PY -m propylon run $ROOT/bench/gateway.yaml --access-log off --admin 127.0.0.1:19901 --no-watch --log-level warning" \
  --cmd propylon-log "$PY -m propylon run $ROOT/bench/gateway-log.yaml --access-log $OUT/access.log --admin 127.0.0.1:19902 --no-watch --log-level warning" \
  propylon=http://127.0.0.1:18090/ propylon-log=http://127.0.0.1:18091/
echo "summary: $OUT/summary.md"
