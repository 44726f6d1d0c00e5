"""``trompe serve``: a web page that makes adversarial images, and the JSON API under it.

Needs the ``web`` extra (``pip install "trompe[web]"``: FastAPI, uvicorn, python-multipart).
Importing :mod:`trompe` never imports this package; ``trompe.web`` itself imports FastAPI only
in :func:`create_app`. The HTTP contract is in ``docs/web.md``.

- :mod:`trompe.web.config`: :class:`ServerConfig`, the settings and limits (no FastAPI).
- :mod:`trompe.web.jobs`: the queue, the worker processes, cancel, expiry (no FastAPI).
- :mod:`trompe.web.app`: the FastAPI application: validation, uploads, the API, the page.
- ``static/``: the page (HTML, CSS, JavaScript; nothing fetched from elsewhere).

The handlers add no policy of their own: budgets go through :func:`trompe.api.check_budget`,
options through the attack classes, images through :func:`trompe.images.load_image`, and the
attack and its files through :func:`trompe.api.attack` and :func:`trompe.report.save_result`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trompe.web.config import ServerConfig

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["ServerConfig", "create_app", "serve"]


def create_app(config: ServerConfig | None = None) -> FastAPI:
    """The FastAPI application of a server; its job manager starts and stops with the app's
    lifespan."""
    from trompe.web.app import create_app as _create_app

    return _create_app(config or ServerConfig())


def serve(config: ServerConfig | None = None, **uvicorn_options: Any) -> None:
    """Run the server in this process until interrupted (what ``trompe serve`` calls)."""
    from trompe.web.app import serve as _serve

    _serve(config or ServerConfig(), **uvicorn_options)
