"""The live dashboard page served by the supervisor's HTTP server at /dashboard."""

from mdpipe.dashboard.routes import Dashboard

__all__ = ["Dashboard"]
