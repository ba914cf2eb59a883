#!/usr/bin/env bash
# Propylon beside nginx, HAProxy and Caddy, same cores, same run (../shared/bench/peers).
# Two Propylon targets: one worker, one route, metrics on (always), access log off, and the
# same with the JSON access log on (written to a file). Extra arguments go to run-peers.sh
# (e.g. -d 3 -r 1 for a smoke run). Results: bench/results/<date>/summary.md
#
# AGAINST=/path/to/other/checkout bench/run.sh adds a target for that checkout's package (built
# in place, run by this venv's interpreter), access log off: an A/B in the same run, on the
# same core. Several checkouts, separated by ':' (AGAINST=/tmp/wt-a:/tmp/wt-b), each get a
# target (propylon-against-<folder name>): the points of a bisection measured in one run.
#
# ALT_PYTHON=/usr/bin/python3.11 bench/run.sh adds a third target: the same gateway (access log
# off) on another interpreter, in its own venv (.venv-alt-<interpreter name>). The
# interpreter's build matters: see docs/performance.md ("The interpreter").
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PEERS=${PEERS_DIR:-$ROOT/../shared/bench/peers}
# shellcheck source=scripts/_venv.sh
source scripts/_venv.sh
OUT="$ROOT/bench/results/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT"

# target NAME PYTHON PORT ADMIN_PORT ACCESS_LOG [TREE]: bench/gateway.yaml on PORT, started
# by the peers script with the package of TREE (this checkout by default); appends to
# TARGETS and URLS
TARGETS=()
URLS=()
target() {
  local name=$1 python=$2 port=$3 admin=$4 access_log=$5 tree=${6:-$ROOT}
  sed "s/port: 18090/port: $port/" bench/gateway.yaml > "$OUT/gateway-$name.yaml"
  TARGETS+=(--cmd "$name" "env -C $tree $python -m propylon run $OUT/gateway-$name.yaml --access-log $access_log --admin 127.0.0.1:$admin --no-watch --log-level warning")
  URLS+=("$name=http://127.0.0.1:$port/")
}
target propylon "$ROOT/.venv/bin/python" 18090 19901 off
target propylon-log "$ROOT/.venv/bin/python" 18091 19902 "$OUT/access.log"
if [ -n "${AGAINST:-}" ]; then
  IFS=: read -r -a AGAINST_TREES <<< "$AGAINST"
  if [ "${#AGAINST_TREES[@]}" = 1 ]; then
    target propylon-against "$ROOT/.venv/bin/python" 18093 19904 off "$(cd "$AGAINST" && pwd)"
  else
    n=0
    for tree in "${AGAINST_TREES[@]}"; do
      tree=$(cd "$tree" && pwd)
      target "propylon-against-$(basename "$tree")" "$ROOT/.venv/bin/python" $((18100 + n)) \
        $((19920 + n)) off "$tree"
      n=$((n + 1))
    done
  fi
fi
if [ -n "${ALT_PYTHON:-}" ]; then
  ALT_VENV="$ROOT/.venv-alt-$(basename "$ALT_PYTHON")"
  ensure_venv "$ALT_VENV" "$ALT_PYTHON" "$ROOT"
  "$ALT_VENV/bin/python" -c 'import sys; print("alternate interpreter:", sys.executable, sys.version)'
  target propylon-alt "$ALT_VENV/bin/python" 18092 19903 off
fi
bash "$PEERS/run-peers.sh" --out "$OUT" "$@" "${TARGETS[@]}" "${URLS[@]}"
echo "summary: $OUT/summary.md"
