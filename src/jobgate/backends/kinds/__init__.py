"""jobgate's own backend kinds, declared in ``pyproject.toml`` (see ``backends/registry.py``).

Each module publishes ``KIND``: its config model and how to build its backend.
"""
