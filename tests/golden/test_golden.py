"""Translation golden tests: each ``cases/NAME.yaml`` translates to ``cases/NAME.json``.

The expected file is the snapshot's JSON (``propylon.ir.dumps``), pretty-printed. Regenerate
with ``pytest tests/golden --update-golden`` and review the diff. A ``contained_*`` case holds
resources that fail validation: they are contained as standalone mode does, not refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from propylon import ir
from propylon.config import load_paths
from propylon.translate import translate_with_issues

CASES = Path(__file__).parent / "cases"


def render(case: Path) -> str:
    loaded = load_paths([case])
    contained = case.stem.startswith("contained_")
    errors = loaded.unattributed if contained else loaded.errors
    assert not errors, "\n".join(map(str, errors))
    assert loaded.rejected or not contained, "a contained_ case needs a rejected resource"
    snapshot = translate_with_issues(loaded.resources, loaded.rejected).snapshot
    assert ir.loads(ir.dumps(snapshot)) == snapshot
    return json.dumps(json.loads(ir.dumps(snapshot)), indent=2, sort_keys=True) + "\n"


@pytest.mark.parametrize("case", sorted(CASES.glob("*.yaml")), ids=lambda p: p.stem)
def test_golden(case: Path, update_golden: bool) -> None:
    expected_file = case.with_suffix(".json")
    actual = render(case)
    if update_golden:
        expected_file.write_text(actual, encoding="utf-8")
        return
    assert expected_file.exists(), f"missing {expected_file.name}: run with --update-golden"
    assert actual == expected_file.read_text(encoding="utf-8")
