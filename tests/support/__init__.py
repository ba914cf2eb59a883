"""Shared helpers for the integration tests: real processes, real sockets, bounded waits."""
