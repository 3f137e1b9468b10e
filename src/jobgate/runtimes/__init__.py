"""Runtimes: how one executor's command becomes a host process (sandbox, container, plain)."""
