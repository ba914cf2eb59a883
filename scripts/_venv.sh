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

VENV="$ROOT/.venv"
ensure_venv "$VENV" "${PYTHON:-python3}" "$ROOT[dev]"
export PATH="$VENV/bin:$PATH"
