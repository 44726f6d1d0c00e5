"""Attack jobs for the web server: a bounded queue, worker processes, cancel, limits, expiry.

No FastAPI here: the app (``app.py``) validates a request, places the upload in a folder that
:meth:`JobManager.allocate` gave it, and calls :meth:`JobManager.submit`. Everything that runs
an attack happens in worker processes (``multiprocessing``, spawn), never in the event loop:

- each worker loads a model once (by id, :func:`trompe.api.resolve_model`) and keeps it;
- it runs :func:`trompe.api.attack` and :func:`trompe.report.save_result` into the job's folder
  (the same calls as ``trompe attack``, so the page and the command line cannot disagree), plus
  ``original.png`` (the 8-bit image that was attacked);
- progress goes back at most ten times a second (the last step always), through a pipe of its
  own per worker (a killed worker cannot leave a shared queue's lock held);
- a cancel or the time limit makes the progress callback raise (the cancel flag is a shared
  integer, read without a lock), and a worker that does not stop within ``cancel_grace_s`` is
  killed and replaced; so is a worker that dies (out of memory), its job failed;
- a worker is replaced after ``max_jobs_per_worker`` jobs, returning its memory.

In the server process a pump thread applies the workers' messages to the :class:`Job` objects
and a janitor thread cancels abandoned jobs and deletes expired ones within the disk quota.
Job ids are 128-bit random hex strings; a job's files live only in ``results_dir/<id>/``, under
names of the server's choosing (:data:`FILES`).
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import enum
import logging
import math
import multiprocessing
import os
import re
import secrets
import shutil
import signal
import stat
import tempfile
import threading
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from trompe.errors import InvalidArgumentError, TrompeError
from trompe.web.config import ServerConfig

__all__ = [
    "FILES",
    "INPUT_NAME",
    "Job",
    "JobManager",
    "JobRequest",
    "JobStatus",
    "QueueFull",
    "ServerBusy",
]

log = logging.getLogger("trompe.web")

#: The file a job's upload is stored under, inside its folder (never the client's name).
INPUT_NAME = "input"

#: The files a finished job offers, by name: the CLI's four plus the image attacked.
FILES: tuple[str, ...] = (
    "adversarial.png",
    "perturbation.png",
    "report.png",
    "result.json",
    "original.png",
)


class QueueFull(TrompeError):
    """The queue holds ``queue_size`` waiting jobs already (HTTP 429).

    Attributes:
        retry_after: seconds after which a retry may be accepted (an estimate, at least 1).
    """

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServerBusy(TrompeError):
    """The server cannot take a job for another reason: its disk quota cannot be met, or it is
    stopping (HTTP 503)."""


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED)


@dataclass(frozen=True)
class JobRequest:
    """One attack, validated by the app, in the Python API's units.

    Attributes:
        model: a model id of :meth:`ServerConfig.served_models`.
        attack: a registered attack name.
        target: the target class index, or ``None`` for untargeted.
        eps: the budget in [0, 1] units (L0: pixels), or ``None`` for the attack's default.
        norm: ``"linf"``, ``"l2"``, ``"l1"``, ``"l0"`` or ``None`` for the attack's first.
        confidence: the probability the goal must reach, or ``None`` for the API's default.
        min_eps: search the smallest budget that works, up to ``eps``.
        resolution: ``"full"`` or ``"model"``, as :func:`trompe.attack` takes it.
        options: the attack's hyper-parameters (``steps``, ``seed``...), already capped.
        source: what the image was, for ``result.json``: ``"upload"`` or ``"sample:chelsea"``.
    """

    model: str
    attack: str
    target: int | None = None
    eps: float | None = None
    norm: str | None = None
    confidence: float | None = None
    min_eps: bool = False
    resolution: str = "full"
    options: Mapping[str, Any] = field(default_factory=dict)
    source: str = "upload"

    def attack_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`trompe.api.attack` (without image and progress)."""
        kwargs: dict[str, Any] = {
            "model": self.model,
            "attack": self.attack,
            "eps": self.eps,
            "norm": self.norm,
            "min_eps": self.min_eps,
            "resolution": self.resolution,
            **self.options,
        }
        if self.confidence is not None:
            kwargs["confidence"] = self.confidence
        return kwargs


@dataclass
class Job:
    """A job as the server process sees it; changed only by the manager's threads.

    :meth:`JobManager.get` returns a snapshot (a copy taken under the manager's lock), so that a
    handler never sees half of an update.

    Attributes:
        id: 32 lowercase hex digits (128 random bits).
        request: what was asked.
        status: where it stands.
        created, started, finished: ``time.time()`` stamps (``None`` until then).
        progress: the last progress, ``{"step", "steps", "done", "total", "goal_prob"}``.
        error: one sentence, for a failed or cancelled job.
        summary: the contents of its ``result.json`` once done.
        version: grows by one at every change (for event streams).
        last_seen: the last time a client asked about it.
        folder: the job's folder (``results_dir/<id>``), where its :data:`FILES` appear.
    """

    id: str
    request: JobRequest
    status: JobStatus = JobStatus.QUEUED
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    progress: dict[str, Any] | None = None
    error: str | None = None
    summary: dict[str, Any] | None = None
    version: int = 0
    last_seen: float = field(default_factory=time.time)
    folder: Path | None = field(default=None, repr=False)

    def to_json(self, position: int | None = None) -> dict[str, Any]:
        """The job as the API returns it: ``{"id", "status", "position", "progress",
        "error", "result", "files", "created", "started", "finished", "seconds", "urls"}``;
        ``files`` maps each available file name to its URL.

        Args:
            position: the job's place in the queue (:meth:`JobManager.position`); shown only
                while the job is queued.
        """
        base = f"/api/jobs/{self.id}"
        files: dict[str, str] = {}
        if self.folder is not None:
            for name in FILES:
                path = self.folder / name
                if not path.is_symlink() and path.is_file():
                    files[name] = f"{base}/files/{name}"
        seconds = None
        if self.started is not None and self.finished is not None:
            seconds = max(0.0, self.finished - self.started)
        return {
            "id": self.id,
            "status": self.status.value,
            "position": position if self.status is JobStatus.QUEUED else None,
            "progress": dict(self.progress) if self.progress is not None else None,
            "error": self.error,
            "result": self.summary if self.status is JobStatus.DONE else None,
            "files": files,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            "seconds": seconds,
            "urls": {"self": base, "events": f"{base}/events"},
        }


# -- the worker process ------------------------------------------------------------------------

#: The fewest seconds between two progress messages of a job (the last one is always sent).
PROGRESS_INTERVAL_S = 0.1

#: Models a worker keeps loaded, the most recently used first out of the door.
_MODELS_KEPT = 2


class _Cancelled(BaseException):
    """Raised by the progress callback when the job is to stop (a BaseException, so that no
    ``except Exception`` inside an attack swallows it)."""


class _Reporter:
    """The progress callback of one job: rate-limited messages, and the cancel check."""

    def __init__(self, ticket: int, cancel: Any, outbox: Connection) -> None:
        self.ticket = ticket
        self.cancel = cancel
        self.outbox = outbox
        self.sent = 0.0
        self.pending: dict[str, Any] | None = None

    def __call__(self, progress: Any) -> None:
        if self.cancel.value == self.ticket:
            raise _Cancelled
        self.pending = {
            "step": int(progress.step),
            "steps": int(progress.steps),
            "done": int(progress.done),
            "total": int(progress.total),
            "goal_prob": _finite(float(progress.goal_prob)),
        }
        now = time.monotonic()
        if now - self.sent >= PROGRESS_INTERVAL_S or progress.step >= progress.steps:
            self.flush(now)

    def check(self) -> None:
        """Stop here if the job was asked to stop (between the phases of a job)."""
        if self.cancel.value == self.ticket:
            raise _Cancelled

    def flush(self, now: float | None = None) -> None:
        """Send the progress not sent yet, if any."""
        if self.pending is not None:
            self.outbox.send(("progress", self.ticket, self.pending))
            self.pending = None
            self.sent = time.monotonic() if now is None else now


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _worker_main(
    config: ServerConfig, threads: int, inbox: Connection, outbox: Connection, cancel: Any
) -> None:
    """A worker process: runs the jobs it receives, one at a time, until told to stop.

    Messages in: ``(ticket, job_id, folder, request)``, or ``None`` to stop. Messages out:
    ``("ready", pid)``, ``("started", ticket, time)``, ``("progress", ticket, dict)``, then one
    of ``("done", ticket, summary)``, ``("failed", ticket, sentence, traceback or None)``,
    ``("cancelled", ticket)``. ``cancel.value == ticket`` asks the job to stop.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle
    with contextlib.suppress(OSError):
        os.nice(5)  # the server process answers first; attacks take what is left
    import torch

    torch.set_num_threads(threads)
    models: collections.OrderedDict[str, Any] = collections.OrderedDict()
    _warm_up(config, models)
    try:
        outbox.send(("ready", os.getpid()))
        while True:
            message = inbox.recv()
            if message is None:
                return
            ticket, _job_id, folder, request = message
            outbox.send(("started", ticket, time.time()))
            outbox.send(_run_job(config, models, ticket, Path(folder), request, cancel, outbox))
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return  # the server went away


def _warm_up(config: ServerConfig, models: collections.OrderedDict[str, Any]) -> None:
    """Import what a job needs and load the server's default model before the first job, so
    that it does not wait for them (seconds on a busy machine). A failure here is left for the
    job to report. (matplotlib, 1-2 s, stays lazy: only ``trompe.report.figure`` imports
    it.)"""
    import trompe.api
    import trompe.report

    try:
        models[config.default_model] = trompe.api.resolve_model(config.default_model, config.device)
    except Exception:  # a missing extra, no weights: the job that asks for it says so
        log.debug("the default model did not load in advance", exc_info=True)


def _run_job(
    config: ServerConfig,
    models: collections.OrderedDict[str, Any],
    ticket: int,
    folder: Path,
    request: JobRequest,
    cancel: Any,
    outbox: Connection,
) -> tuple[Any, ...]:
    """Run one job into ``folder``; the message that ends it."""
    reporter = _Reporter(ticket, cancel, outbox)
    try:
        summary = _attack_into(config, models, folder, request, reporter)
    except _Cancelled:
        return ("cancelled", ticket)
    except TrompeError as error:
        return ("failed", ticket, _scrub(str(error), folder), None)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        raise
    except Exception as error:
        name = type(error).__name__
        sentence = (
            f"the attack stopped on an unexpected error ({name}); the server's log has the "
            "details, and a report of it helps"
        )
        return ("failed", ticket, sentence, traceback.format_exc())
    return ("done", ticket, summary)


def _attack_into(
    config: ServerConfig,
    models: collections.OrderedDict[str, Any],
    folder: Path,
    request: JobRequest,
    reporter: _Reporter,
) -> dict[str, Any]:
    """The attack of one job and its files, as ``trompe attack`` makes them."""
    import json

    from trompe.api import attack, resolve_model
    from trompe.attacks import SweepResult
    from trompe.images import load_image, save_png
    from trompe.report import save_result

    _check_options(request)
    clf = models.pop(request.model, None)
    if clf is None:
        clf = resolve_model(request.model, config.device)
    models[request.model] = clf
    while len(models) > _MODELS_KEPT:
        models.popitem(last=False)
    image = load_image(folder / INPUT_NAME, max_pixels=config.max_pixels)
    reporter.check()  # loading a model can take long: a cancel meanwhile stops here
    kwargs = request.attack_kwargs()
    kwargs["model"] = clf
    outcome = attack(image, request.target, progress=reporter, **kwargs)
    reporter.flush()
    reporter.check()
    extra: dict[str, Any] = {"image": request.source, "seed": request.options.get("seed")}
    if isinstance(outcome, SweepResult):
        # As the CLI: the files show the smallest budget that worked (else the last tried).
        result = outcome.results[-1]
        extra["sweep"] = {"norm": outcome.norm, "budgets": outcome.table()}
    else:
        result = outcome
    paths = save_result(result, folder, model=clf, extra=extra)
    save_png(result.original[0], folder / "original.png")
    summary: dict[str, Any] = json.loads(Path(paths["json"]).read_text())
    return summary


def _check_options(request: JobRequest) -> None:
    """Refuse options the attack does not take, in a sentence (the attack's own constructor
    would raise a TypeError)."""
    from trompe.attacks import get_attack
    from trompe.attacks._options import check_option_names

    # precision: the budget search's own option (trompe.attacks.MinimalEps)
    also = ("precision",) if request.min_eps else ()
    check_option_names(get_attack(request.attack).cls, request.options, also=also)


def _scrub(message: str, folder: Path) -> str:
    """An error sentence without the server's paths (the upload is "the image")."""
    upload = str(folder / INPUT_NAME)
    message = message.replace(f"'{upload}'", "the image").replace(upload, "the image")
    return message.replace(str(folder), "the job's folder")


# -- the server side ---------------------------------------------------------------------------

_ID = re.compile(r"[0-9a-f]{32}")

#: A job's duration guessed before any job has finished (for Retry-After).
_FIRST_GUESS_S = 10.0


def _valid_id(job_id: object) -> bool:
    return isinstance(job_id, str) and _ID.fullmatch(job_id) is not None


@dataclass
class _Entry:
    """The manager's bookkeeping of one job."""

    job: Job
    folder: Path
    ticket: int = 0
    worker: _Worker | None = None
    deadline: float | None = None  # monotonic: the time limit of a running job
    kill_at: float | None = None  # monotonic: when a job asked to stop is killed
    stop: tuple[JobStatus, str] | None = None  # how a job asked to stop ends


@dataclass(eq=False)
class _Worker:
    """One worker process and its pipes, as the manager holds them."""

    process: BaseProcess
    inbox: Connection  # the manager writes
    outbox: Connection  # the manager reads
    cancel: Any  # a shared int: the ticket of the job to stop
    ticket: int | None = None
    jobs: int = 0
    pid: int | None = None  # set when it says it is ready
    exitcode: int | None = None  # once stopped
    dead: bool = False
    respawn_at: float | None = None  # an empty slot: when to start its next worker


class JobManager:
    """The queue and the workers of one server.

    Use as a context manager or call :meth:`start` and :meth:`close`. Thread-safe: the app's
    handlers call it from the event loop and from its thread pool. No method waits on a worker:
    the lock is held only for bookkeeping, never while a process starts, stops or a folder is
    deleted.

    Clients that follow a job (polling or an event stream) should call :meth:`get`, which marks
    the job seen; a queued or running job nobody asked about for ``abandon_after_s`` is
    cancelled.
    """

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._ctx = multiprocessing.get_context("spawn")
        self._jobs: dict[str, _Entry] = {}
        self._tickets: dict[int, _Entry] = {}
        self._queue: collections.deque[str] = collections.deque()
        self._allocated: dict[str, tuple[Path, float]] = {}
        self._workers: list[_Worker] = []
        self._retiring: list[tuple[BaseProcess, float]] = []
        self._durations: collections.deque[float] = collections.deque(maxlen=20)
        self._next_ticket = 0
        self._spawn_failures = 0
        self._disk_bytes = 0
        self._dir: Path | None = None
        self._temporary = False
        self._started = False
        self._closed = False
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        # The workers share all cores but one, left to the server's event loop; they also run
        # at a lower priority (nice 5). Measured on 2 busy cores with an efficientnet_lite0
        # attack running: a server thread's wake-up p99 of 12 ms with nice 5, 28 ms without.
        self._torch_threads = max(1, (_cpus() - 1) // config.workers)

    # -- life cycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Create the results folder, start the workers, the pump and the janitor."""
        with self._lock:
            if self._closed:
                raise ServerBusy("the job manager was closed; create a new one")
            if self._started:
                return
            if self.config.results_dir is None:
                self._dir = Path(tempfile.mkdtemp(prefix="trompe-serve-"))
                self._temporary = True
            else:
                directory = Path(self.config.results_dir)
                try:
                    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                except OSError as error:
                    raise InvalidArgumentError(
                        f"cannot create the results folder '{directory}': "
                        f"{error.strerror or error}; choose another results folder"
                    ) from None
                if not directory.is_dir():
                    raise InvalidArgumentError(
                        f"the results folder '{directory}' is not a folder; choose another"
                    )
                self._dir = directory.resolve()
            self._started = True
            self._workers = [self._spawn() for _ in range(self.config.workers)]
        for target, name in ((self._pump, "trompe-jobs-pump"), (self._janitor, "trompe-jobs")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        """Cancel every job, stop the workers (killing those that do not stop), and remove the
        results folder if it was a temporary one."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for worker in self._workers:
                if worker.ticket is not None:
                    worker.cancel.value = worker.ticket  # stop at the next step
            now = time.time()
            for entry in self._jobs.values():
                if not entry.job.status.finished:
                    self._finish(entry, JobStatus.CANCELLED, "the server stopped", now=now)
            self._queue.clear()
            workers, self._workers = self._workers, []
            retiring, self._retiring = self._retiring, []
            self._changed.notify_all()
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self._threads = []
        for worker in workers:
            with contextlib.suppress(OSError, ValueError):
                worker.inbox.send(None)
        workers = [w for w in workers if w.respawn_at is None]  # the others are reaped
        processes = [w.process for w in workers] + [p for p, _ in retiring]
        grace = min(self.config.cancel_grace_s, 5.0)
        end = time.monotonic() + grace
        for process in processes:
            process.join(max(0.0, end - time.monotonic()))
        for process in processes:
            _stop_process(process)
        for worker in workers:
            _close_pipes(worker)
        if self._temporary and self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> JobManager:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def results_dir(self) -> Path:
        """The folder holding the job folders (known once started)."""
        if self._dir is None:
            raise ServerBusy("the job manager has not started; call start() first")
        return self._dir

    # -- submitting ----------------------------------------------------------------------------

    def is_full(self) -> bool:
        """Whether a submission now would be refused (checked before reading an upload)."""
        with self._lock:
            return len(self._queue) >= self.config.queue_size

    def retry_after(self) -> int:
        """Seconds to suggest in a 429's Retry-After (at least 1).

        The wait until one queued job starts: the typical duration of recent jobs (the median
        of the last 20; a first guess before any) less the time the longest-running job has
        run, but at least a quarter of the typical duration.
        """
        with self._lock:
            durations = sorted(self._durations)
            typical = durations[len(durations) // 2] if durations else _FIRST_GUESS_S
            typical = min(typical, self.config.job_timeout_s)
            now = time.time()
            elapsed = [
                now - e.job.started
                for e in self._jobs.values()
                if e.job.status is JobStatus.RUNNING and e.job.started is not None
            ]
            wait_s = typical - max(elapsed, default=0.0)
            return max(1, math.ceil(max(wait_s, typical / 4)))

    def allocate(self) -> tuple[str, Path]:
        """A new job id and its empty folder (mode 0700), for the app to write the upload into
        as ``folder / INPUT_NAME``. Raises :class:`ServerBusy` when the disk quota cannot be
        met even after deleting expired jobs.

        The quota is met when the job folders hold less than ``disk_quota_bytes``: the upload
        about to be written may then take the total past it once, and the next allocation is
        refused until finished jobs are deleted.
        """
        self._housekeeping()
        with self._lock:
            self._check_open()
            if self._disk_bytes >= self.config.disk_quota_bytes:
                raise ServerBusy(
                    "the server's disk quota for results is used up by jobs still running or "
                    "waiting; try again in a few minutes"
                )
            job_id = secrets.token_hex(16)
            folder = self.results_dir / job_id
            folder.mkdir(mode=0o700)
            self._allocated[job_id] = (folder, time.monotonic())
            return job_id, folder

    def discard(self, job_id: str) -> None:
        """Delete a folder from :meth:`allocate` whose request was refused."""
        with self._lock:
            allocated = self._allocated.pop(job_id, None) if _valid_id(job_id) else None
        if allocated is not None:
            _remove(allocated[0])

    def submit(self, job_id: str, request: JobRequest) -> Job:
        """Queue the job of an allocated folder. Raises :class:`QueueFull` (the folder is
        deleted) or :class:`ServerBusy`."""
        with self._lock:
            allocated = self._allocated.get(job_id) if _valid_id(job_id) else None
            if allocated is None:
                raise InvalidArgumentError(
                    f"no folder was allocated for job {job_id!r}; call allocate() first"
                )
            refusal: TrompeError | None = None
            if self._closed or self._stop.is_set():
                refusal = ServerBusy("the server is stopping; try again later")
            elif len(self._queue) >= self.config.queue_size:
                after = self.retry_after()
                refusal = QueueFull(
                    f"the server's queue is full ({len(self._queue)} jobs waiting); try again "
                    f"in {after} s",
                    after,
                )
            if refusal is None:
                del self._allocated[job_id]
                options = dict(request.options)
                if options != request.options or type(request.options) is not dict:
                    request = replace(request, options=options)
                job = Job(id=job_id, request=request, folder=allocated[0])
                self._next_ticket += 1
                entry = _Entry(job=job, folder=allocated[0], ticket=self._next_ticket)
                self._jobs[job_id] = entry
                self._tickets[entry.ticket] = entry
                self._queue.append(job_id)
                self._dispatch()
                self._changed.notify_all()
                return replace(job)
        self.discard(job_id)
        raise refusal

    # -- asking --------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        """The job, or ``None`` for an unknown, expired or malformed id; marks it seen.

        Returns:
            A snapshot of the job (a copy: later changes do not show in it).
        """
        with self._lock:
            entry = self._jobs.get(job_id) if _valid_id(job_id) else None
            if entry is None:
                return None
            entry.job.last_seen = time.time()
            return replace(entry.job)

    def wait(self, job_id: str, version: int, timeout: float) -> Job | None:
        """Block until the job's version passes ``version`` or it is finished, at most
        ``timeout`` seconds (for event streams run in a thread); the job as :meth:`get` returns
        it, or ``None`` for an unknown id."""
        end = time.monotonic() + timeout
        with self._lock:
            while True:
                entry = self._jobs.get(job_id) if _valid_id(job_id) else None
                if entry is None:
                    return None
                left = end - time.monotonic()
                if entry.job.version > version or entry.job.status.finished or left <= 0:
                    entry.job.last_seen = time.time()
                    return replace(entry.job)
                self._changed.wait(left)

    def position(self, job_id: str) -> int | None:
        """0 for the next job to start, 1 after it...; ``None`` unless queued."""
        with self._lock:
            try:
                return self._queue.index(job_id)
            except ValueError:
                return None

    def cancel(self, job_id: str) -> Job | None:
        """Cancel a queued or running job (a finished one is returned unchanged); ``None`` for
        an unknown id. A running job's worker is killed if it does not stop in time."""
        with self._lock:
            entry = self._jobs.get(job_id) if _valid_id(job_id) else None
            if entry is None:
                return None
            entry.job.last_seen = time.time()
            self._stop_job(entry, JobStatus.CANCELLED, "the job was cancelled")
            return replace(entry.job)

    def file_path(self, job_id: str, name: str) -> Path | None:
        """The path of one of a job's :data:`FILES`, or ``None`` if the id is unknown, the name
        is not one of :data:`FILES` or the file does not exist (yet). Symbolic links are
        refused."""
        if name not in FILES:
            return None
        with self._lock:
            entry = self._jobs.get(job_id) if _valid_id(job_id) else None
            if entry is None:
                return None
            folder = entry.folder
        path = folder / name
        try:
            info = path.lstat()
            inside = path.resolve(strict=True).parent == folder.resolve(strict=True)
        except OSError:
            return None
        if not stat.S_ISREG(info.st_mode) or not inside:
            return None
        return path

    def stats(self) -> dict[str, Any]:
        """``{"waiting", "running", "workers", "queue_size", "jobs", "disk_bytes"}``."""
        with self._lock:
            running = sum(1 for w in self._workers if w.ticket is not None)
            return {
                "waiting": len(self._queue),
                "running": running,
                "workers": len(self._workers),
                "queue_size": self.config.queue_size,
                "jobs": len(self._jobs),
                "disk_bytes": self._disk_bytes,
            }

    def worker_pids(self) -> list[int | None]:
        """The process id of each worker (``None`` for one still starting)."""
        with self._lock:
            return [w.pid if w.pid is not None else w.process.pid for w in self._workers]

    # -- inside: jobs --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if not self._started:
            raise ServerBusy("the job manager has not started; call start() first")
        if self._closed:
            raise ServerBusy("the server is stopping; try again later")

    def _stop_job(self, entry: _Entry, status: JobStatus, reason: str) -> None:
        """Ask a job to end as ``status`` with ``reason`` (under the lock): a queued one at
        once, a running one through its worker, with a deadline to kill it."""
        if entry.job.status.finished:
            return
        if entry.job.status is JobStatus.QUEUED:
            with contextlib.suppress(ValueError):
                self._queue.remove(entry.job.id)
            self._finish(entry, status, reason)
            return
        if entry.stop is not None:
            return  # the first reason stands
        entry.stop = (status, reason)
        entry.kill_at = time.monotonic() + self.config.cancel_grace_s
        if entry.worker is not None:
            entry.worker.cancel.value = entry.ticket
        self._touch(entry)

    def _finish(
        self,
        entry: _Entry,
        status: JobStatus,
        error: str | None = None,
        summary: dict[str, Any] | None = None,
        now: float | None = None,
    ) -> None:
        """End a job (under the lock) and free its worker."""
        job = entry.job
        if job.status.finished:
            return
        job.status = status
        job.finished = time.time() if now is None else now
        job.error = error
        job.summary = summary
        if job.started is not None and status is JobStatus.DONE:
            self._durations.append(job.finished - job.started)
        worker = entry.worker
        if worker is not None and worker.ticket == entry.ticket:
            worker.ticket = None
        entry.worker = None
        entry.deadline = entry.kill_at = None
        self._tickets.pop(entry.ticket, None)
        self._touch(entry)

    def _touch(self, entry: _Entry) -> None:
        entry.job.version += 1
        self._changed.notify_all()

    def _dispatch(self) -> None:
        """Give waiting jobs to idle workers (under the lock)."""
        for worker in self._workers:
            if not self._queue:
                return
            if worker.ticket is not None or worker.dead or worker.respawn_at is not None:
                continue
            entry = self._jobs[self._queue.popleft()]
            message = (entry.ticket, entry.job.id, str(entry.folder), entry.job.request)
            try:
                worker.inbox.send(message)
            except (OSError, ValueError):
                worker.dead = True  # the pump replaces it
                self._queue.appendleft(entry.job.id)
                continue
            worker.ticket = entry.ticket
            worker.jobs += 1
            entry.worker = worker
            entry.job.status = JobStatus.RUNNING
            entry.job.started = time.time()
            # Until the worker says it started (a fresh one imports torch first): a margin.
            entry.deadline = time.monotonic() + self.config.job_timeout_s + 60.0
            self._touch(entry)

    def _timeout_reason(self) -> str:
        return (
            f"the job ran past the server's limit of {self.config.job_timeout_s:g} s; ask for "
            "fewer steps or queries, or a smaller image"
        )

    # -- inside: workers -----------------------------------------------------------------------

    def _spawn(self) -> _Worker:
        """Start one worker process (under the lock: starting is quick, importing happens in
        the child)."""
        inbox_read, inbox_write = self._ctx.Pipe(duplex=False)
        outbox_read, outbox_write = self._ctx.Pipe(duplex=False)
        cancel = self._ctx.RawValue(ctypes.c_longlong, 0)
        process = self._ctx.Process(
            target=_worker_main,
            args=(self.config, self._torch_threads, inbox_read, outbox_write, cancel),
            name="trompe-worker",
            daemon=True,
        )
        process.start()
        inbox_read.close()  # the child's ends: closed here, so that a dead child reads as EOF
        outbox_write.close()
        return _Worker(process=process, inbox=inbox_write, outbox=outbox_read, cancel=cancel)

    def _pump(self) -> None:
        """Apply the workers' messages; enforce time limits and kills; replace dead workers."""
        while not self._stop.is_set():
            with self._lock:
                readers = {w.outbox: w for w in self._workers if not w.dead}
            ready = wait(list(readers), timeout=0.05) if readers else []
            if not readers:
                self._stop.wait(0.05)
            for conn in ready:
                worker = readers[conn]  # type: ignore[index]
                try:
                    message = worker.outbox.recv()
                except (EOFError, OSError, ValueError):
                    with self._lock:
                        worker.dead = True
                    continue
                except Exception:  # a message cut short by a kill
                    log.exception("a worker sent a message that could not be read")
                    with self._lock:
                        worker.dead = True
                    continue
                try:
                    with self._lock:
                        self._apply(worker, message)
                except Exception:  # never let the pump die: log and carry on
                    log.exception("a worker's message could not be applied: %.200r", message)
            try:
                self._supervise()
            except Exception:  # never let the pump die: log and carry on
                log.exception("the job pump failed; carrying on")

    def _apply(self, worker: _Worker, message: tuple[Any, ...]) -> None:
        """One message of a worker (under the lock)."""
        kind = message[0]
        if kind == "ready":
            worker.pid = int(message[1])
            self._spawn_failures = 0
            return
        entry = self._tickets.get(message[1])
        if entry is None or entry.worker is not worker:
            return  # a job already ended (cancelled, timed out, the server stopping)
        job = entry.job
        if kind == "started":
            job.started = float(message[2])
            entry.deadline = time.monotonic() + self.config.job_timeout_s
            self._touch(entry)
        elif kind == "progress":
            job.progress = message[2]
            self._touch(entry)
        elif kind == "done":
            self._finish(entry, JobStatus.DONE, summary=message[2])
            self._after_job(worker)
        elif kind == "failed":
            if message[3]:
                log.error("job %s failed:\n%s", job.id, message[3])
            self._finish(entry, JobStatus.FAILED, message[2])
            self._after_job(worker)
        elif kind == "cancelled":
            status, reason = entry.stop or (JobStatus.CANCELLED, "the job was cancelled")
            self._finish(entry, status, reason)
            self._after_job(worker)

    def _after_job(self, worker: _Worker) -> None:
        """Retire a worker that has run its share of jobs (under the lock)."""
        if worker.jobs < self.config.max_jobs_per_worker or worker not in self._workers:
            return
        with contextlib.suppress(OSError, ValueError):
            worker.inbox.send(None)
        self._retiring.append((worker.process, time.monotonic() + self.config.cancel_grace_s))
        self._workers[self._workers.index(worker)] = self._spawn()
        _close_pipes(worker)

    def _supervise(self) -> None:
        """Time limits, kills, dead workers, retired ones; then dispatch.

        A worker to kill is marked dead (no job goes to it, no message is read from it), stopped
        without the lock held, and only then is its job finished and a new worker started: a
        job reads as stopped once its process is gone.
        """
        gone: list[tuple[_Worker, _Entry | None, bool]] = []
        doomed: list[BaseProcess] = []
        with self._lock:
            if self._closed:
                return
            now = time.monotonic()
            for index, worker in enumerate(self._workers):
                if worker.respawn_at is not None:
                    if now >= worker.respawn_at:
                        self._workers[index] = self._spawn()
                    continue
                entry = self._tickets.get(worker.ticket) if worker.ticket is not None else None
                late = entry is not None and entry.deadline is not None and now >= entry.deadline
                if entry is not None and entry.stop is None and late:
                    self._stop_job(entry, JobStatus.FAILED, self._timeout_reason())
                killed = entry is not None and entry.kill_at is not None and now >= entry.kill_at
                if killed or worker.dead or not worker.process.is_alive():
                    worker.dead = True
                    gone.append((worker, entry, killed))
            still: list[tuple[BaseProcess, float]] = []
            for process, until in self._retiring:
                if process.is_alive() and now < until:
                    still.append((process, until))
                else:
                    doomed.append(process)
            self._retiring = still
            self._dispatch()
        for process in doomed:
            _stop_process(process)
        for worker, _, _ in gone:
            worker.exitcode = _stop_process(worker.process)
        if gone:
            with self._lock:
                for worker, entry, killed in gone:
                    self._replace(worker, entry, killed)
                self._dispatch()

    def _replace(self, worker: _Worker, entry: _Entry | None, killed: bool) -> None:
        """After a worker was stopped or found dead (under the lock): end its job, start the
        next worker in its slot."""
        # A worker that died before it was ready failed to start (an import error, a script
        # without the main-module guard that spawn needs): wait before the next try.
        failed_start = worker.pid is None and not killed
        if entry is not None:
            if entry.stop is not None:
                status, reason = entry.stop
            elif failed_start:
                status, reason = JobStatus.FAILED, _START_FAILED
            else:
                status, reason = JobStatus.FAILED, _crash_reason(worker.exitcode)
                log.error("job %s: %s", entry.job.id, reason)
            self._finish(entry, status, reason)
        _close_pipes(worker)
        if self._closed or worker not in self._workers:
            return
        index = self._workers.index(worker)
        if failed_start:
            self._spawn_failures += 1
            delay = min(60.0, 2.0 ** (self._spawn_failures - 1))
            log.error(
                "a worker process failed to start (exit code %s; its error is above); the next "
                "try is in %g s. A script that starts the server needs "
                "`if __name__ == '__main__':` around it (multiprocessing's spawn)",
                worker.exitcode,
                delay,
            )
            worker.respawn_at = time.monotonic() + delay
        else:
            self._workers[index] = self._spawn()

    # -- inside: disk --------------------------------------------------------------------------

    def _janitor(self) -> None:
        """Every second: abandoned jobs, expired ones, stale allocations, the disk quota."""
        while not self._stop.wait(1.0):
            try:
                self._housekeeping()
            except Exception:
                log.exception("the job janitor failed; carrying on")

    def _housekeeping(self) -> None:
        """Cancel abandoned jobs; delete expired jobs, stale allocations, and the oldest
        finished jobs while the folders hold more than the quota."""
        config = self.config
        with self._lock:
            if self._dir is None or self._closed:
                return
            now, clock = time.time(), time.monotonic()
            for entry in list(self._jobs.values()):
                job = entry.job
                if not job.status.finished and now - job.last_seen > config.abandon_after_s:
                    self._stop_job(
                        entry,
                        JobStatus.CANCELLED,
                        f"no client asked about the job for {config.abandon_after_s:g} s, so it "
                        "was cancelled; keep the page open while it runs",
                    )
            expired = [
                job_id
                for job_id, entry in self._jobs.items()
                if entry.job.finished is not None and now - entry.job.finished > config.result_ttl_s
            ]
            stale = [
                job_id
                for job_id, (_, when) in self._allocated.items()
                if clock - when > config.abandon_after_s
            ]
            folders = [self._jobs.pop(job_id).folder for job_id in expired]
            folders += [self._allocated.pop(job_id)[0] for job_id in stale]
            sizes = {job_id: e.folder for job_id, e in self._jobs.items()}
            allocated = [folder for folder, _ in self._allocated.values()]
        for folder in folders:
            _remove(folder)
        measured = {job_id: _folder_bytes(folder) for job_id, folder in sizes.items()}
        total = sum(measured.values()) + sum(_folder_bytes(f) for f in allocated)
        freed: list[Path] = []
        with self._lock:
            if total > config.disk_quota_bytes:
                finished = sorted(
                    (e.job.finished, job_id)
                    for job_id, e in self._jobs.items()
                    if e.job.finished is not None and job_id in measured
                )
                for _, job_id in finished:
                    if total <= config.disk_quota_bytes:
                        break
                    total -= measured[job_id]
                    freed.append(self._jobs.pop(job_id).folder)
            self._disk_bytes = total
        for folder in freed:
            _remove(folder)


_START_FAILED = "the server could not start a worker process; its log says why; try again later"


def _cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 2


def _crash_reason(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            how = f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            how = f"was killed by signal {-code}"
    else:
        how = f"exited with code {code}" if code is not None else "stopped answering"
    return f"the worker running the job {how} (out of memory?); try a smaller image or fewer steps"


def _stop_process(process: BaseProcess) -> int | None:
    """Terminate a process, then kill it if it lingers; reap it. Its exit code (``None`` if it
    was already closed)."""
    try:
        if process.is_alive():
            process.terminate()
            process.join(1.0)
        if process.is_alive():
            process.kill()
            process.join(5.0)
        else:
            process.join(0)
        return process.exitcode
    except ValueError:  # closed already (by the thread that stopped it first)
        return None


def _close_pipes(worker: _Worker) -> None:
    worker.dead = True
    for conn in (worker.inbox, worker.outbox):
        with contextlib.suppress(OSError):
            conn.close()


def _remove(folder: Path) -> None:
    """Delete a job folder (never following a link out of it)."""
    shutil.rmtree(folder, ignore_errors=True)


def _folder_bytes(folder: Path) -> int:
    """The bytes of the files directly in a job folder (links not followed)."""
    total = 0
    try:
        with os.scandir(folder) as entries:
            for item in entries:
                with contextlib.suppress(OSError):
                    total += item.stat(follow_symlinks=False).st_size
    except OSError:
        return 0
    return total
