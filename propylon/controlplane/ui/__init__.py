"""The control plane's dashboard at ``/ui/`` (``Dashboard``): server-rendered pages behind the
API's token, kept in an HttpOnly, SameSite=Strict cookie by the login page."""

from propylon.controlplane.ui.app import Dashboard, Explainer

__all__ = ["Dashboard", "Explainer"]
