"""A test-only IR schema 5, one step ahead of this build's schema 4.

In schema 5 a listener's ``address`` is called ``bind`` (so the two forms, and their hashes,
differ), and a Gateway's ``tracing`` is said only from schema 5: a downgrade of a snapshot
that uses it refuses. ``python -m tests.support.ir_schema_next ARGS...`` runs
``propylon ARGS...`` as a build whose own schema is 5 (a control plane one release ahead of
the proxies started with ``-m propylon``).
"""

from __future__ import annotations

from typing import Any

from propylon.ir import schema
from propylon.ir.schema import SchemaError, Schemas, Step

Data = dict[str, Any]


def _listeners(data: Data, old: str, new: str) -> Data:
    gateways = []
    for gateway in data["gateways"]:
        listeners = [{(new if k == old else k): v for k, v in listener.items()}
                     for listener in gateway["listeners"]]
        gateways.append({**gateway, "listeners": listeners})
    return {**data, "gateways": gateways}


def upgrade(data: Data) -> Data:
    return _listeners(data, "address", "bind")


def downgrade(data: Data) -> Data:
    for gateway in data["gateways"]:
        if gateway.get("tracing") is not None:
            raise SchemaError(f"Gateway {gateway['key']} uses tracing, which IR schema 4 "
                              "cannot express")
    return _listeners(data, "bind", "address")


NEXT = Schemas(native=5, steps={**schema.CURRENT.steps,
                                5: Step(5, upgrade, downgrade, "listener address -> bind")})
OLD = schema.CURRENT  # this build: schema 4 (and 3, its N-1)

if __name__ == "__main__":
    schema.CURRENT = NEXT
    from propylon.cli.main import main

    main()
