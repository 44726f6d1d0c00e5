"""The FastAPI application: the JSON API of ``docs/web.md`` and the page in ``static/``.

The handlers add no policy of their own: budgets go through :func:`trompe.api.check_budget`,
options through the attack class itself (:meth:`~trompe.attacks.AttackInfo.create`), targets
through the model's :class:`~trompe.labels.Labels`, images through
:func:`trompe.images.load_image`. What is the server's own is its limits
(:class:`~trompe.web.config.ServerConfig`): which models it serves, the steps and queries it
runs, the bytes and pixels it reads, and who may post to it.

Limits that must act before anything is buffered live in :class:`_Guard`, an ASGI middleware
that sees the request before FastAPI parses its form: the origin check, the 429 of a full queue,
and the byte count of the body (a ``Content-Length`` over the limit is refused unread; a body
without one is counted as it streams in). Attacks run in the job manager's worker processes;
what runs here (classify, the class names) runs in the thread pool, never in the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import math
import re
import shutil
import socket
import tempfile
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn
from urllib.parse import urlsplit

from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from trompe._version import __version__
from trompe.errors import ImageError, InvalidArgumentError, TrompeError, UnknownLabelError
from trompe.images import DEFAULT_MAX_PIXELS
from trompe.web.config import ServerConfig
from trompe.web.jobs import INPUT_NAME, Job, JobManager, JobRequest, QueueFull, ServerBusy

if TYPE_CHECKING:
    import uvicorn

    from trompe.labels import Labels
    from trompe.models import Classifier

__all__ = ["GRACEFUL_SHUTDOWN_S", "create_app", "make_server", "serve"]

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Where the page lives, inside the installed package.
STATIC_DIR = Path(__file__).parent / "static"
#: What a multipart body may hold besides the image: the boundaries and the text fields.
FORM_ALLOWANCE = 64 * 1024
#: The options whose values the server caps, with the ServerConfig field and CLI flag of each.
_CAPPED = {"steps": ("max_steps", "--max-steps"), "queries": ("max_queries", "--max-queries")}
#: How often an event stream looks at its job, in seconds.
_POLL_S = 0.15
#: A comment line on an idle event stream this often, so that proxies keep it open.
_KEEPALIVE_S = 15.0
#: Models the server process keeps for classify and labels (the workers have their own).
_CACHED_MODELS = 2
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}
_NO_CACHE = {"Cache-Control": "no-cache"}
_MEDIA_TYPES = {".png": "image/png", ".json": "application/json"}


# -- errors ------------------------------------------------------------------------------------


def _invalid(field: str | tuple[str, ...], message: str) -> NoReturn:
    """A 422 in FastAPI's format, one entry naming the field (``options.steps`` -> its path)."""
    loc = ("body", *(field if isinstance(field, tuple) else tuple(field.split("."))))
    raise RequestValidationError([{"loc": loc, "msg": message, "type": "value_error"}])


def _json_error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return JSONResponse({"detail": message}, status_code=status, headers=dict(headers or {}))


class _BodyTooLarge(HTTPException):
    """Raised by the counting ``receive`` when a body passes its limit (FastAPI re-raises an
    HTTPException met while parsing a form, so this reaches the client as a 413)."""

    def __init__(self, message: str) -> None:
        super().__init__(status_code=413, detail=message)


def _mb(n: int) -> str:
    """A size as ``trompe serve --max-upload`` takes it (MiB), or in bytes below one MiB."""
    return f"{n / (1 << 20):g} MiB" if n >= 1 << 20 else f"{n:,} bytes"


def _too_large_message(limit: int) -> str:
    return f"the upload is larger than this server's limit of {_mb(limit)}; send a smaller image"


# -- the guard: origin, queue, body size -------------------------------------------------------


def _origin_of(url: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of an origin or URL, default ports filled in; ``None`` if it
    is not one (``null``, garbage)."""
    try:
        parts = urlsplit(url.strip().lower())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


#: Headers on every response: no sniffing of types, no framing, no referrer to other sites.
_SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)


def _with_headers(send: Send) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), *_SECURITY_HEADERS]
        await send(message)

    return sending


class _Guard:
    """ASGI middleware that applies the server's request limits before the app reads a byte.

    - POST and DELETE from a page of another origin (``Origin`` neither the server's own nor
      allowed, or ``Sec-Fetch-Site: cross-site``) -> 403. Requests without ``Origin`` (curl,
      scripts) pass: they carry no browser's cookies or ambient access.
    - A server bound to loopback answers only to loopback host names (``Host``), so that a
      page of another site cannot reach it by re-pointing its DNS name at 127.0.0.1.
    - ``POST /api/jobs`` while the queue is full -> 429 with ``Retry-After``, unread.
    - POST bodies: a ``Content-Length`` over the limit -> 413 unread; otherwise the bytes are
      counted as they arrive (chunked bodies too) and the request fails with 413 past it.
    """

    def __init__(self, app: ASGIApp, config: ServerConfig, manager: JobManager) -> None:
        self.app = app
        self.config = config
        self.manager = manager
        self.allowed = {o for o in map(_origin_of, config.allowed_origins) if o is not None}
        self.loopback_only = _is_loopback(config.host)
        self.allowed_hosts = {o[1] for o in self.allowed}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = _with_headers(send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        if scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        limit = self.config.max_upload_bytes + FORM_ALLOWANCE
        length = headers.get("content-length")
        if length is not None:
            if not length.strip().isdigit():
                await _json_error(400, "the Content-Length header is not a number")(
                    scope, receive, send
                )
                return
            if int(length) > limit:
                message = _too_large_message(self.config.max_upload_bytes)
                await _json_error(413, message, {"Connection": "close"})(scope, receive, send)
                return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge(_too_large_message(self.config.max_upload_bytes))
            return message

        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge as error:
            if started:
                raise
            await _json_error(413, str(error.detail), {"Connection": "close"})(scope, receive, send)

    def _refusal(self, scope: Scope, headers: Mapping[str, str]) -> Response | None:
        """The response that refuses this request at once, or ``None`` to let it in."""
        host = headers.get("host", "")
        own = _origin_of(f"{scope.get('scheme', 'http')}://{host}") if host else None
        if (
            self.loopback_only
            and host
            and (own is None or not (_is_loopback(own[1]) or own[1] in self.allowed_hosts))
        ):
            return _json_error(
                400,
                f"this server answers only to 127.0.0.1 and localhost, not {host[:80]!r}; "
                "start it with --host to serve other names",
            )
        if scope["method"] in ("POST", "DELETE", "PUT", "PATCH"):
            if headers.get("sec-fetch-site", "").lower() == "cross-site":
                return _json_error(403, "requests from pages of other sites are refused")
            origin = headers.get("origin")
            if origin is not None:
                given = _origin_of(origin)
                if given is None or (given != own and given not in self.allowed):
                    return _json_error(
                        403,
                        f"requests from the origin {origin[:80]!r} are refused; start the "
                        "server with --allow-origin to allow it",
                    )
        if scope["method"] == "POST" and scope["path"] == "/api/jobs" and self.manager.is_full():
            wait = self.manager.retry_after()
            return _json_error(
                429,
                f"the queue is full; try again in {wait} s",
                {"Retry-After": str(wait)},
            )
        return None


# -- models in the server process --------------------------------------------------------------


class _Models:
    """The few models that classify and the class-name search need, loaded once and shared by
    the thread pool under one lock (the workers load their own)."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.served = config.served_models()
        if config.default_model not in self.served:
            self.served.append(config.default_model)
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, Classifier] = OrderedDict()

    def resolve(self, name: str | None, field: str = "model") -> str:
        """The served model id that ``name`` means (built-in names in any case); 422 else."""
        if name is None or not name.strip():
            return self.config.default_model
        name = name.strip()
        if name in self.served:
            return name
        from trompe.models import get_spec

        try:
            canonical = get_spec(name).name
        except TrompeError:
            canonical = None
        if canonical in self.served:
            return str(canonical)
        shown = ", ".join(self.served[:6]) + (", ..." if len(self.served) > 6 else "")
        _invalid(
            field,
            f"model {name[:80]!r} is not served here; choose one of {shown} (GET /api/models)",
        )

    def labels(self, name: str) -> Labels:
        """The class names of a served model; a built-in's without loading it."""
        from trompe.labels import Labels, imagenet_labels
        from trompe.models import get_spec

        try:
            spec = get_spec(name)
        except TrompeError:
            return self.load(name).labels
        return imagenet_labels() if spec.labels is None else Labels(list(spec.labels))

    def load(self, name: str) -> Classifier:
        """The model, from the cache or loaded (on the CPU: the workers have the device)."""
        from trompe.models import load_model

        with self._lock:
            model = self._cache.get(name)
            if model is None:
                model = load_model(name)
                self._cache[name] = model
                while len(self._cache) > _CACHED_MODELS:
                    self._cache.popitem(last=False)
            self._cache.move_to_end(name)
            return model

    def classify(self, name: str, path: Path, k: int, max_pixels: int) -> dict[str, Any]:
        """The top ``k`` classes of the image at ``path`` (an upload or a sample)."""
        with _DECODING:
            image = _load(path, max_pixels)
            model = self.load(name)
            k = min(k, model.num_classes)
            with self._lock:
                top = model.predict(image, k=k)[0]
        return {
            "model": name,
            "width": int(image.shape[-1]),
            "height": int(image.shape[-2]),
            "top": [{"index": p.index, "label": p.label, "prob": p.prob} for p in top],
        }


#: Images held decoded at once in the server process: a decoded image takes 12 bytes a pixel,
#: so that many concurrent uploads wait for their turn rather than add up.
_DECODING = threading.BoundedSemaphore(2)


def _check_image(path: Path, max_pixels: int) -> None:
    """Read an upload once (then let it go), to refuse what is not an image before it queues."""
    with _DECODING:
        _load(path, max_pixels)


def _load(path: Path, max_pixels: int) -> Any:
    """The image of an upload, or the HTTP error that says why not: 422 over the pixel cap,
    415 for anything that is not an image of the allowed formats. Messages never show the
    server's path. Callers hold :data:`_DECODING`."""
    from trompe.images import load_image

    try:
        return load_image(path, max_pixels=max_pixels)
    except ImageError as error:
        message = str(error).replace(f"'{path}'", "the upload").replace(str(path), "the upload")
        message = message.replace("pass max_pixels (CLI: --max-pixels) if you trust it", "")
        message = message.rstrip("; ")
        if "pixels, over the limit" in message:
            _invalid("image", f"{message}; send a smaller image")
        raise HTTPException(415, message) from None


# -- the request fields ------------------------------------------------------------------------


def _check_options(text: str | None) -> dict[str, Any]:
    if text is None or not text.strip():
        return {}
    try:
        options = json.loads(text)
    except ValueError as error:
        _invalid("options", f'options must be a JSON object, e.g. {{"steps": 50}}: {error}')
    if not isinstance(options, dict):
        _invalid("options", 'options must be a JSON object, e.g. {"steps": 50}')
    return options


def _build_request(
    config: ServerConfig,
    models: _Models,
    *,
    model: str | None,
    attack: str | None,
    target: str | None,
    eps: float | None,
    norm: str | None,
    confidence: float | None,
    min_eps: bool,
    resolution: str | None,
    options: str | None,
    source: str,
) -> JobRequest:
    """Validate the fields of a job, as :func:`trompe.attack` would, plus the server's caps."""
    from trompe.api import check_budget, default_budget
    from trompe.attacks import get_attack
    from trompe.attacks._options import check_option_names

    model_id = models.resolve(model)
    # check_budget below refuses an unknown norm; cut here, a long one stays a short sentence.
    chosen_norm = norm.strip().lower()[:40] if norm else None
    if eps is not None and not (math.isfinite(eps) and eps >= 0):
        _invalid("eps", f"eps must be a budget of at least 0 in [0, 1] units, got {eps}")
    if confidence is not None and not 0 < confidence < 1:
        _invalid("confidence", f"confidence must be strictly between 0 and 1, got {confidence}")
    resolution = (resolution or "full").strip().lower()
    if resolution not in ("full", "model"):
        _invalid("resolution", f"resolution must be 'full' or 'model', got {resolution[:40]!r}")
    name = (attack or "pgd").strip()
    try:
        info = get_attack(name)
    except TrompeError as error:
        _invalid("attack", str(error))
    try:
        budget = check_budget(info.name, norm=chosen_norm, eps=eps, min_eps=min_eps)
    except TrompeError as error:
        field = "min_eps" if "min_eps" in str(error) and eps is None else "norm"
        if "takes no eps" in str(error):
            field = "eps"
        _invalid(field, str(error))
    chosen = _check_options(options)
    known = {o.name: o for o in info.options()}
    for key in chosen:
        try:
            check_option_names(info.cls, [str(key)[:40]])
        except TrompeError as error:
            _invalid(("options", str(key)[:40]), str(error))
    for key, (attr, flag) in _CAPPED.items():
        if key not in known:
            continue
        cap: int = getattr(config, attr)
        value = chosen.get(key)
        if value is None:
            default = known[key].default
            if isinstance(default, int) and not isinstance(default, bool) and default > cap:
                chosen[key] = cap  # the attack's default is more than this server runs
        elif isinstance(value, int | float) and not isinstance(value, bool) and value > cap:
            _invalid(
                ("options", key),
                f"{key} must be at most {cap:,} on this server (its {flag}), got {value}",
            )
    # The budget trompe.attack will use: the one given, else its default.
    effective = None if info.minimum_norm else budget.eps
    if effective is None:
        effective = default_budget(info.name, budget.norm)
    try:
        info.create(eps=effective, norm=budget.norm, **chosen)
    except (TypeError, TrompeError, ValueError) as error:
        text = str(error)
        named = next((k for k in chosen if re.search(rf"\b{re.escape(k)}\b", text)), None)
        _invalid(("options", named) if named else "options", text.split("\n")[0])
    index: int | None = None
    if target is not None and target.strip():
        if not info.targeted:
            _invalid("target", f"attack {info.name!r} is untargeted; leave target empty")
        labels = models.labels(model_id)
        try:
            index = labels.index(target.strip())
        except (UnknownLabelError, InvalidArgumentError) as error:
            _invalid("target", str(error))
    return JobRequest(
        model=model_id,
        attack=info.name,
        target=index,
        eps=budget.eps,
        norm=budget.norm,
        confidence=confidence,
        min_eps=min_eps,
        resolution=resolution,
        options=chosen,
        source=source,
    )


def _check_image_fields(image: UploadFile | None, sample: str | None) -> str | None:
    """Exactly one of an upload and a sample; returns the sample's name (``None``: upload)."""
    from trompe.images import EXAMPLES

    has_sample = sample is not None and sample.strip() != ""
    if image is None and not has_sample:
        _invalid("image", "send an image file (field image) or a sample's name (field sample)")
    if image is not None and has_sample:
        _invalid("sample", "send either an image file or a sample's name, not both")
    if not has_sample:
        return None
    key = str(sample).strip().lower()
    key = {"cat": "chelsea"}.get(key, key)
    if key not in EXAMPLES:
        _invalid(
            "sample",
            f"unknown sample {str(sample)[:40]!r}; the samples are {', '.join(EXAMPLES)}",
        )
    return key


def _store_upload(image: UploadFile, target: Path, limit: int) -> None:
    """Copy the upload into ``target`` counting bytes; 413 past ``limit``."""
    written = 0
    with open(target, "wb") as out:
        while chunk := image.file.read(256 * 1024):
            written += len(chunk)
            if written > limit:
                raise HTTPException(413, _too_large_message(limit))
            out.write(chunk)


def _sample_path(name: str) -> Path:
    from trompe.images import example_path

    return example_path(name)


# -- the application ---------------------------------------------------------------------------


def _job_json(manager: JobManager, job: Job) -> dict[str, Any]:
    return job.to_json(position=manager.position(job.id))


def _docs_routes(app: FastAPI) -> None:
    """The OpenAPI page at ``/docs`` with Swagger UI's files served from this server (the
    ``fastapi-offline`` package ships them), never from a CDN."""
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html

    try:
        import fastapi_offline
    except ImportError:
        assets = None
    else:
        assets = Path(fastapi_offline.__file__).parent / "static"
        if not (assets / "swagger-ui-bundle.js").is_file():
            assets = None
    if assets is not None:
        app.mount("/docs-static", StaticFiles(directory=assets), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        if assets is None:
            return HTMLResponse(
                "<!doctype html><title>trompe API</title><p>The OpenAPI page needs the "
                'fastapi-offline package (<code>pip install "trompe[web]"</code>); the schema '
                'is at <a href="/openapi.json">/openapi.json</a>.</p>'
            )
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="trompe API",
            swagger_js_url="/docs-static/swagger-ui-bundle.js",
            swagger_css_url="/docs-static/swagger-ui.css",
            swagger_favicon_url="/docs-static/favicon.png",
            # No badge from validator.swagger.io: the page fetches nothing from elsewhere.
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        if assets is None:
            return await docs()
        return get_redoc_html(
            openapi_url="/openapi.json",
            title="trompe API",
            redoc_js_url="/docs-static/redoc.standalone.js",
            redoc_favicon_url="/docs-static/favicon.png",
            with_google_fonts=False,
        )


def create_app(config: ServerConfig) -> FastAPI:
    """The application; a :class:`~trompe.web.jobs.JobManager` runs during its lifespan.

    Args:
        config: the server's settings and limits.

    Returns:
        An ASGI application (run it with uvicorn, or :func:`serve`).
    """
    manager = JobManager(config)
    models = _Models(config)
    scratch: dict[str, Path] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(manager.start)
        scratch["dir"] = Path(tempfile.mkdtemp(prefix="trompe-classify-"))
        try:
            yield
        finally:
            shutil.rmtree(scratch.pop("dir"), ignore_errors=True)
            await run_in_threadpool(manager.close)

    app = FastAPI(
        title="trompe",
        version=__version__,
        summary="Adversarial images for image classifiers: the JSON API of `trompe serve`.",
        description="The page at `/` uses only this API; see docs/web.md for the contract.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.config = config
    app.state.manager = manager
    # Set when the server begins to stop (make_server): the event streams end at once.
    stopping = threading.Event()
    app.state.stopping = stopping

    @app.exception_handler(TrompeError)
    async def trompe_error(request: Request, error: TrompeError) -> Response:
        # What the handlers did not turn into a field's 422: a usage error is the client's
        # (422), anything else the server's (a served model whose weights are missing: 503).
        if error.exit_code == 2:
            return _json_error(422, str(error))
        return _json_error(503, f"the server cannot do this now: {error}")

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception) -> Response:
        logger.error("%s %s failed", request.method, request.url.path, exc_info=error)
        return _json_error(
            500, f"the server failed ({type(error).__name__}); its log has the details"
        )

    # The listings (labels: 72 kB, attacks: 33 kB) shrink 4-5x; Starlette leaves images and
    # event streams alone and compresses large bodies off the event loop.
    app.add_middleware(GZipMiddleware, minimum_size=1000, compresslevel=6)
    app.add_middleware(_Guard, config=config, manager=manager)  # outermost: runs first

    _docs_routes(app)
    if STATIC_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False, response_model=None)
    async def page() -> Response:
        index = STATIC_DIR / "index.html"
        if index.is_file():
            return FileResponse(
                index, media_type="text/html", headers={"Cache-Control": "no-cache"}
            )
        return HTMLResponse(
            "<!doctype html><title>trompe</title><p>The page is not installed; the API is at "
            '<a href="/docs">/docs</a>.</p>'
        )

    # -- catalogue ------------------------------------------------------------------------

    @app.get("/api/health", tags=["server"])
    async def health() -> dict[str, Any]:
        """Whether the server is up, and its queue (never waits on a worker)."""
        return {"status": "ok", "version": __version__, "queue": manager.stats()}

    @app.get("/api/models", tags=["catalogue"])
    def list_served_models() -> dict[str, Any]:
        """The models a job may use: the built-ins, then the ids the server was started with."""
        from trompe.models import list_models

        described = []
        builtin = set()
        for spec in list_models():
            builtin.add(spec.name)
            if spec.name in models.served:
                described.append({**spec.describe(), "served": True})
        for name in models.served:
            if name not in builtin:
                source = name.split(":", 1)[0] if ":" in name else "file"
                described.append(
                    {
                        "name": name,
                        "default": name == config.default_model,
                        "description": f"a model this server was started with (source: {source})",
                        "installed": True,
                        "served": True,
                    }
                )
        return {"default": config.default_model, "models": described}

    @app.get("/api/attacks", tags=["catalogue"])
    def list_registered_attacks() -> dict[str, Any]:
        """The attacks in registry order, with their options, help and default budget."""
        from trompe.api import default_budget
        from trompe.attacks import list_attacks

        attacks = []
        for info in list_attacks():
            entry = info.describe()
            by_norm = {n: default_budget(info.name, n) for n in info.norms}
            entry["default_eps"] = by_norm[info.norms[0]]
            entry["default_eps_by_norm"] = by_norm
            for option in entry["options"]:
                if option["name"] in _CAPPED:
                    cap = getattr(config, _CAPPED[option["name"]][0])
                    option["max"] = cap
                    if isinstance(option["default"], int) and option["default"] > cap:
                        option["default"] = cap
            attacks.append(entry)
        return {"default": "pgd", "attacks": attacks}

    @app.get("/api/labels", tags=["catalogue"])
    async def search_labels(
        model: str | None = None,
        q: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int | None, Query(ge=1, le=10_000)] = None,
    ) -> dict[str, Any]:
        """A model's classes: all of them without ``q``, else the best matches of ``q``."""
        model_id = models.resolve(model, field="model")

        def work() -> dict[str, Any]:
            labels = models.labels(model_id)
            query = (q or "").strip()
            if query:
                found = labels.search(query, limit=limit or 20)
            else:
                found = list(range(len(labels)))[: limit or len(labels)]
            return {
                "model": model_id,
                "count": len(labels),
                "labels": [
                    {"index": i, "name": labels[i], "synonyms": list(labels.synonyms(i))}
                    for i in found
                ],
            }

        return await run_in_threadpool(work)

    @app.get("/api/samples", tags=["catalogue"])
    async def list_samples() -> dict[str, Any]:
        """The bundled photos."""
        from trompe.images import EXAMPLES

        return {"samples": [{"name": n, "url": f"/api/samples/{n}"} for n in EXAMPLES]}

    @app.get("/api/samples/{name}", tags=["catalogue"], response_class=FileResponse)
    async def get_sample(name: str) -> Response:
        """One bundled photo, as PNG."""
        from trompe.images import EXAMPLES

        if name not in EXAMPLES:
            raise HTTPException(404, f"no sample {name[:40]!r}; see GET /api/samples")
        return FileResponse(_sample_path(name), media_type="image/png")

    # -- classify -------------------------------------------------------------------------

    @app.post("/api/classify", tags=["attack"])
    async def classify(
        image: Annotated[UploadFile | None, File(description="the photo")] = None,
        sample: Annotated[str | None, Form(description="or a sample's name")] = None,
        model: Annotated[str | None, Form()] = None,
        k: Annotated[int, Form(ge=1, le=10)] = 5,
    ) -> dict[str, Any]:
        """The model's top ``k`` classes of a photo (runs here, in the thread pool)."""
        name = _check_image_fields(image, sample)
        model_id = models.resolve(model)
        if name is not None:  # a bundled photo: trusted, and never over the default cap
            return await run_in_threadpool(
                models.classify, model_id, _sample_path(name), k, DEFAULT_MAX_PIXELS
            )
        assert image is not None
        with tempfile.TemporaryDirectory(dir=scratch["dir"]) as folder:
            path = Path(folder) / INPUT_NAME
            await run_in_threadpool(_store_upload, image, path, config.max_upload_bytes)
            return await run_in_threadpool(models.classify, model_id, path, k, config.max_pixels)

    # -- jobs -----------------------------------------------------------------------------

    @app.post("/api/jobs", tags=["attack"], status_code=202)
    async def submit(
        image: Annotated[UploadFile | None, File(description="the photo")] = None,
        sample: Annotated[str | None, Form(description="or a sample's name")] = None,
        model: Annotated[str | None, Form()] = None,
        attack: Annotated[str | None, Form(description="a registry name or alias")] = None,
        target: Annotated[str | None, Form(description="class name, synonym or index")] = None,
        eps: Annotated[float | None, Form(description="[0, 1] units; L0: pixels")] = None,
        norm: Annotated[str | None, Form(description="linf, l2, l1 or l0")] = None,
        confidence: Annotated[float | None, Form()] = None,
        min_eps: Annotated[bool, Form()] = False,
        resolution: Annotated[str | None, Form(description="full or model")] = None,
        options: Annotated[str | None, Form(description='JSON, e.g. {"steps": 50}')] = None,
    ) -> dict[str, Any]:
        """Queue an attack on a photo; 202 with the job (follow ``urls.events``)."""
        name = _check_image_fields(image, sample)
        request = await run_in_threadpool(
            _build_request,
            config,
            models,
            model=model,
            attack=attack,
            target=target,
            eps=eps,
            norm=norm,
            confidence=confidence,
            min_eps=min_eps,
            resolution=resolution,
            options=options,
            source="upload" if name is None else f"sample:{name}",
        )
        try:
            job_id, folder = await run_in_threadpool(manager.allocate)
        except ServerBusy as error:
            raise HTTPException(503, str(error)) from None
        try:
            path = folder / INPUT_NAME
            if name is not None:
                await run_in_threadpool(shutil.copyfile, _sample_path(name), path)
            else:
                assert image is not None
                await run_in_threadpool(_store_upload, image, path, config.max_upload_bytes)
                await run_in_threadpool(_check_image, path, config.max_pixels)
            job = await run_in_threadpool(manager.submit, job_id, request)
        except QueueFull as error:
            manager.discard(job_id)
            wait = str(error.retry_after)
            raise HTTPException(429, str(error), headers={"Retry-After": wait}) from None
        except ServerBusy as error:
            manager.discard(job_id)
            raise HTTPException(503, str(error)) from None
        except BaseException:
            manager.discard(job_id)
            raise
        return _job_json(manager, job)

    def _job_or_404(job_id: str) -> Job:
        job = manager.get(job_id)
        if job is None:
            raise HTTPException(404, "no such job; it may have expired")
        return job

    @app.get("/api/jobs/{job_id}", tags=["attack"])
    async def get_job(job_id: str) -> dict[str, Any]:
        """The job: status, progress, result and file URLs."""
        return _job_json(manager, _job_or_404(job_id))

    @app.delete("/api/jobs/{job_id}", tags=["attack"])
    async def cancel_job(job_id: str) -> dict[str, Any]:
        """Cancel a queued or running job (a finished one is returned as it is)."""
        job = await run_in_threadpool(manager.cancel, job_id)
        if job is None:
            raise HTTPException(404, "no such job; it may have expired")
        return _job_json(manager, job)

    @app.get("/api/jobs/{job_id}/events", tags=["attack"], response_class=StreamingResponse)
    async def job_events(job_id: str, request: Request) -> Response:
        """Server-Sent Events: ``progress`` with the job at every change, then one ``end``."""
        _job_or_404(job_id)

        async def stream() -> AsyncIterator[str]:
            seen = -1
            quiet = 0.0
            while True:
                job = manager.get(job_id)
                if job is None:
                    yield 'event: end\ndata: {"status": "expired"}\n\n'
                    return
                if job.version != seen or job.status.finished:
                    seen = job.version
                    quiet = 0.0
                    data = json.dumps(_job_json(manager, job))
                    if job.status.finished:
                        yield f"event: end\ndata: {data}\n\n"
                        return
                    yield f"event: progress\ndata: {data}\n\n"
                elif quiet >= _KEEPALIVE_S:
                    quiet = 0.0
                    yield ": keep-alive\n\n"
                if stopping.is_set() or await request.is_disconnected():
                    return
                await asyncio.sleep(_POLL_S)
                quiet += _POLL_S

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.get("/api/jobs/{job_id}/files/{name}", tags=["attack"], response_class=FileResponse)
    async def job_file(job_id: str, name: str, download: bool = False) -> Response:
        """One of a finished job's files; ``?download=1`` asks the browser to save it."""
        path = manager.file_path(job_id, name)
        if path is None:
            raise HTTPException(404, "no such file; see the job's files")
        media = _MEDIA_TYPES.get(Path(name).suffix, "application/octet-stream")
        headers = {"Cache-Control": "no-cache"}
        if download:
            headers["Content-Disposition"] = f'attachment; filename="{Path(name).name}"'
        return FileResponse(path, media_type=media, headers=headers)

    return app


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one), or a one-line error."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as error:
        raise InvalidArgumentError(f"cannot listen on {host!r}: {error.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as error:
        sock.close()
        reason = error.strerror or str(error)
        raise ServerBusy(
            f"cannot listen on {host}:{port}: {reason}; choose another --port"
        ) from None
    return sock


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


#: How long a stopping server waits for its requests to finish before it cancels them.
GRACEFUL_SHUTDOWN_S = 5.0


def make_server(
    config: ServerConfig,
    *,
    on_started: Callable[[int], None] | None = None,
    **uvicorn_options: Any,
) -> uvicorn.Server:
    """The uvicorn server of :func:`create_app`, as :func:`serve` runs it (tests run it too).

    When it stops, it first ends the open event streams (a page watching a job would otherwise
    hold the shutdown until the job ends), then waits at most :data:`GRACEFUL_SHUTDOWN_S` for
    the other requests, then stops the job manager (the app's lifespan).

    Args:
        config: the server's settings (``host``, ``port``: where uvicorn binds unless it is
            given sockets).
        on_started: called with the port once the server answers.
        **uvicorn_options: more :class:`uvicorn.Config` arguments.

    Returns:
        The server: ``server.run()`` (or ``run(sockets=[...])``) until ``should_exit``.
    """
    import uvicorn

    app = create_app(config)
    stopping: threading.Event = app.state.stopping
    options: dict[str, Any] = {
        "log_level": "warning",
        "access_log": False,
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_S,
    }
    options.update(uvicorn_options)

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if on_started is not None and not self.should_exit and self.servers:
                on_started(int(self.servers[0].sockets[0].getsockname()[1]))

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            stopping.set()
            await super().shutdown(sockets=sockets)

    return Server(uvicorn.Config(app, host=config.host, port=config.port, **options))


def serve(config: ServerConfig, **uvicorn_options: Any) -> None:
    """Run uvicorn on ``config.host:config.port`` until interrupted (SIGINT or SIGTERM: the
    server ends its event streams, finishes its responses, cancels its jobs and stops its
    workers).

    Prints ``trompe serve: http://HOST:PORT (Ctrl-C stops)`` on stdout once it answers (with
    the port it got, for port 0), and a warning on stderr when it listens beyond loopback.

    Args:
        config: the server's settings.
        **uvicorn_options: passed to :class:`uvicorn.Config` (``log_level``...).

    Raises:
        ServerBusy: the address cannot be bound (a port in use).
    """
    import sys

    sock = _listen(config.host, config.port)
    port = int(sock.getsockname()[1])
    if not _is_loopback(config.host):
        print(
            f"trompe serve: warning: listening on {config.host}, so anyone who can reach this "
            "machine can use the server and its CPU; use --host 127.0.0.1 unless you mean it",
            file=sys.stderr,
            flush=True,
        )
    shown = "127.0.0.1" if config.host in ("0.0.0.0", "::") else config.host

    def started(port: int) -> None:
        print(f"trompe serve: {_url(shown, port)} (Ctrl-C stops)", flush=True)

    server = make_server(config.replace(port=port), on_started=started, **uvicorn_options)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
