#!/usr/bin/env bash
# Propylon beside nginx, HAProxy and Caddy, same cores, same run (../shared/bench/peers).
# Two Propylon targets: one worker, one route, metrics on (always), access log off, and the
# same with the JSON access log on (written to a file). Extra arguments go to run-peers.sh
# (e.g. -d 3 -r 1 for a smoke run). Results: bench/results/<date>/summary.md
#
# ALT_PYTHON=/usr/bin/python3.11 bench/run.sh adds a third target: the same gateway (access log
# off) on another interpreter, in its own venv (.venv-alt). The interpreter's build matters:
# see docs/performance.md ("The interpreter").
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PEERS=${PEERS_DIR:-$ROOT/../shared/bench/peers}
# shellcheck source=scripts/_venv.sh
source scripts/_venv.sh
OUT="$ROOT/bench/results/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT"
PY="$ROOT/.venv/bin/python"
ARGS=(propylon=http://127.0.0.1:18090/ propylon-log=http://127.0.0.1:18091/)
ALT=()
if [ -n "${ALT_PYTHON:-}" ]; then
  ALT_VENV="$ROOT/.venv-alt"
  stamp="$ALT_VENV/.installed-$(sha1sum pyproject.toml | cut -c1-12)-$(basename "$ALT_PYTHON")"
  if [ ! -f "$stamp" ]; then
    rm -rf "$ALT_VENV"
    "$ALT_PYTHON" -m venv "$ALT_VENV"
    "$ALT_VENV/bin/pip" install -q --disable-pip-version-check -e "$ROOT"
    touch "$stamp"
  fi
  "$ALT_VENV/bin/python" -c 'import sys; print("alternate interpreter:", sys.executable, sys.version)'
  ALT=(--cmd propylon-alt "$ALT_VENV/bin/python -m propylon run $ROOT/bench/gateway-alt.yaml --access-log off --admin 127.0.0.1:19903 --no-watch --log-level warning")
  ARGS+=(propylon-alt=http://127.0.0.1:18092/)
fi
bash "$PEERS/run-peers.sh" --out "$OUT" "$@" \
  --cmd propylon "$PY -m propylon run $ROOT/bench/gateway.yaml --access-log off --admin 127.0.0.1:19901 --no-watch --log-level warning" \
  --cmd propylon-log "$PY -m propylon run $ROOT/bench/gateway-log.yaml --access-log $OUT/access.log --admin 127.0.0.1:19902 --no-watch --log-level warning" \
  "${ALT[@]}" "${ARGS[@]}"
echo "summary: $OUT/summary.md"
