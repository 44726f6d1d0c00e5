"""``trompe serve``: the web page and its JSON API (``docs/web.md``).

The flags become a :class:`~trompe.web.config.ServerConfig` (checked before anything heavy is
imported); FastAPI and uvicorn are imported only when the server starts, and without the ``web``
extra the command says how to install it. Ctrl-C (or SIGTERM) is the normal way to stop a
server: it finishes, cancels its jobs, stops its workers and exits with 0.
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

from trompe.cli import EXIT_OK, MAX_COUNT, device, positive_int
from trompe.cli._console import printable
from trompe.errors import MissingDependencyError

if TYPE_CHECKING:
    from trompe.cli import Parser, Verbs

__all__ = ["add_serve", "run_serve"]

_EPILOG = """examples:
  trompe serve                                  the page at http://127.0.0.1:8000
  trompe serve --port 8080 --workers 2          two attacks at a time
  trompe serve --model timm:resnet50            serve one more model besides the built-ins
  trompe serve --max-steps 200 --queue 4        a smaller share of a shared machine
the API: http://127.0.0.1:8000/docs; the contract: docs/web.md
"""

#: The unit of the size flags (--disk-quota, --max-upload): MiB.
MIB = 1 << 20


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(
            f"expected a port from 0 to 65535 (0: any free one), got {printable(repr(text))}"
        )
    return value


def _seconds(text: str) -> float:
    import math

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(
            f"expected a positive number of seconds, got {printable(repr(text))}"
        )
    return value


def _mib(text: str) -> int:
    import math

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0 and value * MIB <= MAX_COUNT * 1024):
        raise argparse.ArgumentTypeError(
            f"expected a positive size in MiB (e.g. 20 or 0.5), got {printable(repr(text))}"
        )
    return max(1, int(value * MIB))


def _origin(text: str) -> str:
    """An origin: ``scheme://host[:port]``, nothing after it."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(text.strip())
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError:
        parts = urlsplit("")
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username
    ):
        raise argparse.ArgumentTypeError(
            "expected an origin such as https://example.org or http://localhost:3000, got "
            f"{printable(repr(text))}"
        )
    return f"{parts.scheme}://{parts.netloc}".lower()


def _model_id(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a model id, got an empty string")
    return text.strip()


def add_serve(verbs: Verbs, common: Parser) -> None:
    """Add ``serve`` to the sub-commands."""
    from trompe.web.config import ServerConfig

    defaults = ServerConfig()
    parser = verbs.add_parser(
        "serve",
        parents=[common],
        help="the web page and its JSON API",
        description="Serve a web page that turns a photo into an adversarial image, and the\n"
        "JSON API under it, on 127.0.0.1 unless told otherwise. Attacks run in worker\n"
        "processes behind a bounded queue; every limit below is the server's, not the client's.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--host", default=defaults.host, help="address to listen on (default 127.0.0.1)")
    add("--port", type=_port, default=defaults.port, help="TCP port (default 8000; 0: any)")
    add(
        "--model",
        dest="models",
        action="append",
        type=_model_id,
        default=[],
        metavar="ID",
        help="serve this model id too (timm:resnet50, hf:...); repeatable",
    )
    add(
        "--default-model",
        type=_model_id,
        default=defaults.default_model,
        metavar="ID",
        help=f"the model the page starts with (default {defaults.default_model})",
    )
    add("--device", type=device, help="where the workers run the models (default cpu)")
    add(
        "--results",
        type=Path,
        metavar="DIR",
        help="where job folders live (default: a temporary folder, removed on exit)",
    )
    add(
        "--workers",
        type=positive_int,
        default=defaults.workers,
        metavar="N",
        help=f"worker processes, one attack each at a time (default {defaults.workers})",
    )
    add(
        "--queue",
        type=positive_int,
        metavar="N",
        default=defaults.queue_size,
        help=f"jobs that may wait (default {defaults.queue_size}); beyond it: 429",
    )
    add(
        "--job-timeout",
        type=_seconds,
        default=defaults.job_timeout_s,
        metavar="S",
        help=f"seconds a job may run (default {defaults.job_timeout_s:g})",
    )
    add(
        "--result-ttl",
        type=_seconds,
        default=defaults.result_ttl_s,
        metavar="S",
        help=f"seconds a finished job's files are kept (default {defaults.result_ttl_s:g})",
    )
    add(
        "--disk-quota",
        type=_mib,
        default=defaults.disk_quota_bytes,
        metavar="MIB",
        help=f"the most the job folders hold, in MiB (default {defaults.disk_quota_bytes // MIB})",
    )
    add(
        "--max-upload",
        type=_mib,
        default=defaults.max_upload_bytes,
        metavar="MIB",
        help=f"the largest upload, in MiB (default {defaults.max_upload_bytes // MIB})",
    )
    add(
        "--max-pixels",
        type=positive_int,
        metavar="N",
        default=defaults.max_pixels,
        help=f"the largest image in pixels (default {defaults.max_pixels:,})",
    )
    add(
        "--max-steps",
        type=positive_int,
        metavar="N",
        default=defaults.max_steps,
        help=f"the most steps a job may ask for (default {defaults.max_steps:,})",
    )
    add(
        "--max-queries",
        type=positive_int,
        metavar="N",
        default=defaults.max_queries,
        help=f"the most queries of a black-box job (default {defaults.max_queries:,})",
    )
    add(
        "--allow-origin",
        dest="allowed_origins",
        action="append",
        type=_origin,
        default=[],
        metavar="ORIGIN",
        help="let pages of this origin post to the server too (https://example.org); repeatable",
    )
    parser.set_defaults(run=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    """Start the server and run it until Ctrl-C or SIGTERM."""
    from trompe.web.config import ServerConfig

    models = tuple(dict.fromkeys(args.models))
    config = ServerConfig(
        host=args.host.strip(),
        port=args.port,
        models=models,
        default_model=args.default_model,
        device=args.device,
        results_dir=args.results,
        workers=args.workers,
        queue_size=args.queue,
        job_timeout_s=args.job_timeout,
        result_ttl_s=args.result_ttl,
        disk_quota_bytes=args.disk_quota,
        max_upload_bytes=args.max_upload,
        max_pixels=args.max_pixels,
        max_steps=args.max_steps,
        max_queries=args.max_queries,
        allowed_origins=tuple(dict.fromkeys(args.allowed_origins)),
    )
    if config.default_model not in config.served_models():
        config = config.replace(models=(*config.models, config.default_model))
    import importlib.util

    for module in ("fastapi", "uvicorn", "multipart"):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise MissingDependencyError(
                'the web page needs FastAPI and uvicorn: pip install "trompe[web]"'
            )
    from trompe.web import serve

    # Ctrl-C or SIGTERM: the server has stopped as asked (uvicorn raises the signal again
    # once it has shut down).
    with contextlib.suppress(KeyboardInterrupt):
        serve(config)
    return EXIT_OK
