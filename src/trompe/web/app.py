"""The FastAPI application: the JSON API of ``docs/web.md`` and the page in ``static/``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from trompe.web.config import ServerConfig

__all__ = ["create_app", "serve"]


def create_app(config: ServerConfig) -> FastAPI:
    """The application; a :class:`~trompe.web.jobs.JobManager` runs during its lifespan."""
    raise NotImplementedError


def serve(config: ServerConfig, **uvicorn_options: Any) -> None:
    """Run uvicorn on ``config.host:config.port`` until interrupted."""
    raise NotImplementedError
