"""Use cases shared by every front end (TES, native API, CLI, dashboard)."""
