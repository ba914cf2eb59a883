# Sourced by the scripts: makes .venv with the project (editable) and its dev tools, once.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# ensure_venv DIR PYTHON SPEC: a venv at DIR made by PYTHON with `pip install -e SPEC`, made
# again when pyproject.toml changes.
ensure_venv() {
  local dir=$1 python=$2 spec=$3
  local stamp
  stamp="$dir/.installed-$(sha1sum "$ROOT/pyproject.toml" | cut -c1-12)"
  if [ ! -f "$stamp" ]; then
    "$python" -m venv "$dir"
    "$dir/bin/pip" install -q --disable-pip-version-check -e "$spec"
    rm -f "$dir"/.installed-* && touch "$stamp"
  fi
}

# ensure_plugins DIR PROJECT...: the plugin packages PROJECT... installed (editable) into the
# venv at DIR, again when one of their pyproject.toml files changes.
ensure_plugins() {
  local dir=$1
  shift
  local stamp project
  stamp="$dir/.plugins-$(for project in "$@"; do cat "$project/pyproject.toml"; done \
    | sha1sum | cut -c1-12)"
  if [ ! -f "$stamp" ]; then
    local specs=()
    for project in "$@"; do specs+=(-e "$project"); done
    "$dir/bin/pip" install -q --disable-pip-version-check --no-deps "${specs[@]}"
    rm -f "$dir"/.plugins-* && touch "$stamp"
  fi
}

VENV="$ROOT/.venv"
ensure_venv "$VENV" "${PYTHON:-python3}" "$ROOT[dev]"
# the example plugin and the test-only one, which the tests use (docs/plugins.md)
ensure_plugins "$VENV" "$ROOT/examples/plugins" "$ROOT/tests/plugins"
export PATH="$VENV/bin:$PATH"
