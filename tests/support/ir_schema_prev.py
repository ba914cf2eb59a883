"""A test-only proxy of the previous release: reads IR schemas 1 and 2 (its own), not 3.

``PREV`` is this build's steps with schema 2 as its own: it polls with ``schemas=1,2`` and
never reads a schema 3 text, as the release before listener sections (schema 3). It decodes
over this build's model (a schema 2 form lifts to it unchanged), which a real proxy of that
release would decode over its own; the control plane cannot tell them apart.
``python -m tests.support.ir_schema_prev ARGS...`` runs ``propylon ARGS...`` as that build.
"""

from __future__ import annotations

from propylon.ir import schema
from propylon.ir.schema import Schemas

PREV = Schemas(native=2, steps=schema.CURRENT.steps)

if __name__ == "__main__":
    schema.CURRENT = PREV
    from propylon.cli.main import main

    main()
