"""The admin API under /api/v1 (bearer-token authenticated; docs/auth.md)."""

from gateway.api.routes import api_routes

__all__ = ["api_routes"]
