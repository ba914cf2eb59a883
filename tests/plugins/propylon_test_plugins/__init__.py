"""Plugins for Propylon's tests only (tests/plugins/README.md)."""
