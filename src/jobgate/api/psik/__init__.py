"""psik_api-compatible jobs API (psik_api 1.0 routes, states and callbacks)."""

from jobgate.api.psik.routes import make_router

__all__ = ["make_router"]
