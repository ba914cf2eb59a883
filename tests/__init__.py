"""Propylon test suite (a package so that ``tests.support`` imports under plain ``pytest``)."""
