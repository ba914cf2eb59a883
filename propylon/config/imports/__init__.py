"""``propylon import --from gloo|apisix|kong|flex|ingress``: other gateways' configuration as
``propylon.dev/v1`` resources. One module per source product; each reads the documents of a
file (``Source`` keeps every node's line) and writes resources and warnings into an
``Output`` (``common.py``). What cannot be mapped is a warning naming ``file:line``, never
dropped silently."""

from propylon.config.imports.common import IMPORTERS, Output, import_paths

__all__ = ["IMPORTERS", "Output", "import_paths"]
