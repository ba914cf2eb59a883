"""Delegation looks RouteTables up by label (``select.TableIndex``) instead of scanning them
all for each delegating rule: the same tables, in the same order, as the scan."""

from __future__ import annotations

import pytest

from propylon.config import RouteTable, Selector, load_text
from propylon.translate.select import TableIndex, select_route_tables


def _table(namespace: str, name: str, labels: dict[str, str]) -> str:
    shown = ", ".join(f"{k}: {v}" for k, v in labels.items())
    return (f"apiVersion: propylon.dev/v1\nkind: RouteTable\nmetadata: {{name: {name}, "
            f"namespace: {namespace}, labels: {{{shown}}}}}\nspec:\n  rules:\n"
            f"    - matches: [{{path: {{prefix: /{name}}}}}]\n"
            f"      directResponse: {{status: 200}}\n")


TABLES: list[RouteTable] = sorted(
    (r for r in load_text("---\n".join([
        _table("a", "t1", {"group": "g1", "tier": "x"}),
        _table("a", "t2", {"group": "g1"}),
        _table("a", "t3", {"group": "g2", "tier": "x"}),
        _table("b", "t4", {"group": "g1", "tier": "x"}),
        _table("b", "t5", {}),
    ])).resources if isinstance(r, RouteTable)), key=lambda t: t.key)


@pytest.mark.parametrize("selector", [
    pytest.param(Selector(match_labels={"group": "g1"}), id="one-label"),
    pytest.param(Selector(match_labels={"group": "g1", "tier": "x"}), id="two-labels"),
    pytest.param(Selector(match_labels={"tier": "x", "group": "g2"}), id="second-narrows"),
    pytest.param(Selector(match_labels={"group": "none"}), id="no-table-has-it"),
    pytest.param(Selector(), id="no-labels"),
    pytest.param(Selector(namespaces=["*"], match_labels={"group": "g1"}), id="any-namespace"),
    pytest.param(Selector(namespaces=["b"], match_labels={"tier": "x"}), id="other-namespace"),
    pytest.param(Selector(namespaces=["*"]), id="everything"),
])
def test_the_index_selects_what_the_scan_selects(selector: Selector) -> None:
    assert len(TABLES) == 5
    scanned = select_route_tables(selector, "a", TABLES)
    assert TableIndex(TABLES).select(selector, "a") == scanned
