"""Test-only proxies of earlier releases, over this build's steps.

``PREV``, the previous release: reads IR schemas 2 and 3 (its own), not 4. It polls with
``schemas=2,3`` and never reads a schema 4 text, as the release before rules carried only
their own policies (schema 4: the Gateway's default policies apply where a rule has none of
a type); a control plane of this build sends it the schema 3 form, whose rules list the
Gateway's policies themselves. ``PREV_2``, the release before listener sections (schema 3),
reads schemas 1 and 2. Both decode over this build's model (an older form lifts to it),
which a real proxy of that release would decode over its own; the control plane cannot tell
them apart. ``python -m tests.support.ir_schema_prev ARGS...`` runs ``propylon ARGS...`` as
``PREV``.
"""

from __future__ import annotations

from propylon.ir import schema
from propylon.ir.schema import Schemas

PREV = Schemas(native=3, steps=schema.CURRENT.steps)
PREV_2 = Schemas(native=2, steps=schema.CURRENT.steps)

if __name__ == "__main__":
    schema.CURRENT = PREV
    from propylon.cli.main import main

    main()
