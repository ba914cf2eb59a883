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
    # the compiled hot path is built in place below, when its sources change
    PROPYLON_NO_EXTENSIONS=1 "$dir/bin/pip" install -q --disable-pip-version-check -e "$spec"
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

# ensure_extensions DIR: the hot path compiled by mypyc beside its sources (setup.py,
# propylon/_extensions.py) and the YAML module (config/_libyaml.c, when libyaml's headers are
# there), again when a module of the package, the compiler or those headers change (the
# compiled code checks the types other modules declare). Takes a minute or more; a failed
# build leaves the pure-Python modules in use, and scripts/test stops on it. The extensions
# are touched: a source newer than them makes propylon import every compiled module from
# source.
ensure_extensions() {
  local dir=$1
  local stamp
  stamp="$dir/.extensions-$(cd "$ROOT" && "$dir/bin/python" - <<'PY'
import hashlib
from pathlib import Path

import mypy.version

digest = hashlib.sha1(mypy.version.__version__.encode())
# libyaml's headers (Debian's libyaml-dev) decide whether config/_libyaml.c is built
digest.update(str(Path("/usr/include/yaml.h").exists()).encode())
sources = [*Path("propylon").rglob("*.py"), *Path("propylon").rglob("*.c")]
for path in ["setup.py", *sorted(str(p) for p in sources)]:
    digest.update(path.encode() + Path(path).read_bytes())
print(digest.hexdigest()[:12])
PY
)"
  if [ ! -f "$stamp" ]; then
    echo "building the compiled hot path (mypyc, a few minutes) ..." >&2
    find "$ROOT/propylon" -name '*.so' -delete  # what a failed build leaves: none
    (cd "$ROOT" && env -u PROPYLON_NO_EXTENSIONS "$dir/bin/python" setup.py -q build_ext \
      --inplace >"$dir/extensions-build.log" 2>&1) || true
    find "$ROOT/propylon" -name '*.so' -exec touch {} +
    if env -u PROPYLON_NO_EXTENSIONS "$dir/bin/python" -c \
        'import propylon, sys; sys.exit(not propylon.EXTENSIONS)'; then
      rm -f "$dir"/.extensions-* && touch "$stamp"
    else
      echo "compiled hot path not built, see $dir/extensions-build.log" >&2
    fi
  fi
}

VENV="$ROOT/.venv"
ensure_venv "$VENV" "${PYTHON:-python3}" "$ROOT[dev]"
# the example plugin and the test-only one, which the tests use (docs/plugins.md)
ensure_plugins "$VENV" "$ROOT/examples/plugins" "$ROOT/tests/plugins"
# scripts/test builds them itself, beside the checks that need only the Python modules
if [ "${BUILD_EXTENSIONS:-now}" = now ]; then
  ensure_extensions "$VENV"
fi
# the package's bytecode, as pip writes it for an installed package: with
# PYTHONDONTWRITEBYTECODE set, every command compiled each module it imported from source
# (0.1-0.25 s of `propylon validate` at 10,000 Routes); a stale file is only not used
(cd "$ROOT" && env -u PYTHONDONTWRITEBYTECODE "$VENV/bin/python" -m compileall -q propylon \
  >/dev/null) || true
export PATH="$VENV/bin:$PATH"
