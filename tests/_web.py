"""A real ``trompe serve`` for the web tests: uvicorn on 127.0.0.1, a free port, in a thread.

Imported as ``from _web import live_server`` (this folder is on ``sys.path``, see _helpers.py)::

    with live_server(ServerConfig(workers=1, default_model="digits_robust")) as base:
        httpx.get(f"{base}/api/health")

The server is the one ``trompe serve`` runs (:func:`trompe.web.app.make_server`), with its
lifespan: the job manager starts before the first request and is closed (jobs cancelled,
workers stopped, a temporary results folder removed) when the block ends, even on an error.
"""

from __future__ import annotations

import contextlib
import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trompe.web.config import ServerConfig

__all__ = ["CHROMIUM_ARGS", "alive", "descendants", "digit_png", "digits_config", "live_server"]

#: Chromium's flags for a headless run on a closed network (no sandbox: CI runs as root).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

#: How long the server may take to start (the job manager starts its workers: spawn + torch).
START_TIMEOUT_S = 120.0
#: How long it may take to stop (cancel, stop the workers, remove the results folder).
STOP_TIMEOUT_S = 60.0


def digits_config(**changes: Any) -> ServerConfig:
    """A small server for fast tests: the 8x8 digits model by default, one worker."""
    settings: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "default_model": "digits_robust",
        "workers": 1,
    }
    settings.update(changes)
    return ServerConfig(**settings)


@contextlib.contextmanager
def live_server(config: ServerConfig | None = None, **uvicorn_options: Any) -> Iterator[str]:
    """Run the app on 127.0.0.1 (port 0: a free one) in a thread; yields its base URL
    (``http://127.0.0.1:PORT``, no trailing slash) and stops it when the block ends.

    Args:
        config: the server's settings; its host is forced to 127.0.0.1 and its port to 0.
        **uvicorn_options: more :class:`uvicorn.Config` arguments.

    Raises:
        RuntimeError: the server did not start in time, or did not stop in time.
    """
    from trompe.web.app import make_server

    config = (config or digits_config()).replace(host="127.0.0.1", port=0)
    options: dict[str, Any] = {"lifespan": "on", **uvicorn_options}
    server = make_server(config, **options)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run()
        except BaseException as error:  # SystemExit of a failed startup included
            failure.append(error)

    thread = threading.Thread(target=run, name="trompe-live-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if failure or not thread.is_alive():
            thread.join(5)
            raise RuntimeError(f"the server did not start: {failure[:1]!r}")
        if time.monotonic() > deadline:
            server.should_exit = True
            thread.join(STOP_TIMEOUT_S)
            raise RuntimeError(f"the server did not start within {START_TIMEOUT_S:g} s")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(STOP_TIMEOUT_S)
        if thread.is_alive():
            server.force_exit = True
            thread.join(10)
            raise RuntimeError(f"the server did not stop within {STOP_TIMEOUT_S:g} s")


def descendants(pid: int) -> list[int]:
    """The living descendants of a process, from ``/proc`` (children first)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], list(children.get(pid, []))
    while todo:
        current = todo.pop(0)
        found.append(current)
        todo += children.get(current, [])
    return found


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def digit_png() -> bytes:
    """A test digit of scikit-learn's set (the first seven) as an 8x8 PNG."""
    from trompe.images import to_pil
    from trompe.models.digits import load_digits

    data = load_digits()
    index = int((data.test_labels == 7).nonzero()[0])
    buffer = io.BytesIO()
    to_pil(data.test_images[index]).save(buffer, format="PNG")
    return buffer.getvalue()
