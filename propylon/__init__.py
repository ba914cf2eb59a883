"""Propylon, an API gateway.

``EXTENSIONS`` is true when this process runs the compiled hot path (propylon/_extensions.py).
"""

from propylon import _extensions

EXTENSIONS = _extensions.install()
