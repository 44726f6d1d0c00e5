"""Attack jobs for the web server: a bounded queue, worker processes, cancel, limits, expiry.

No FastAPI here: the app (``app.py``) validates a request, places the upload in a folder that
:meth:`JobManager.allocate` gave it, and calls :meth:`JobManager.submit`. Everything that runs
an attack happens in worker processes (``multiprocessing``, spawn), never in the event loop:

- each worker loads a model once (by id, :func:`trompe.api.resolve_model`) and keeps it;
- it runs :func:`trompe.api.attack` and :func:`trompe.report.save_result` into the job's folder
  (the same calls as ``trompe attack``, so the page and the command line cannot disagree), plus
  ``original.png`` (the 8-bit image that was attacked);
- progress goes back after every step; a cancel or the time limit makes the progress callback
  raise, and a worker that does not stop within ``cancel_grace_s`` is killed and replaced;
- a worker is replaced after ``max_jobs_per_worker`` jobs, returning its memory.

In the server process a pump thread applies the workers' messages to the :class:`Job` objects
and a janitor thread cancels abandoned jobs and deletes expired ones within the disk quota.
Job ids are 128-bit random hex strings; a job's files live only in ``results_dir/<id>/``, under
names of the server's choosing (:data:`FILES`).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trompe.errors import TrompeError
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

    def to_json(self, position: int | None = None) -> dict[str, Any]:
        """The job as the API returns it: ``{"id", "status", "position", "progress",
        "error", "result", "files", "created", "started", "finished", "seconds"}``;
        ``files`` maps each available file name to its URL."""
        raise NotImplementedError


class JobManager:
    """The queue and the workers of one server.

    Use as a context manager or call :meth:`start` and :meth:`close`. Thread-safe: the app's
    handlers call it from the event loop and from its thread pool.
    """

    def __init__(self, config: ServerConfig) -> None:
        self.config = config

    def start(self) -> None:
        """Create the results folder, start the workers, the pump and the janitor."""
        raise NotImplementedError

    def close(self) -> None:
        """Cancel every job, stop the workers (killing those that do not stop), and remove the
        results folder if it was a temporary one."""
        raise NotImplementedError

    def __enter__(self) -> JobManager:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def results_dir(self) -> Path:
        raise NotImplementedError

    def is_full(self) -> bool:
        """Whether a submission now would be refused (checked before reading an upload)."""
        raise NotImplementedError

    def retry_after(self) -> int:
        """Seconds to suggest in a 429's Retry-After (at least 1)."""
        raise NotImplementedError

    def allocate(self) -> tuple[str, Path]:
        """A new job id and its empty folder (mode 0700), for the app to write the upload into
        as ``folder / INPUT_NAME``. Raises :class:`ServerBusy` when the disk quota cannot be
        met even after deleting expired jobs."""
        raise NotImplementedError

    def discard(self, job_id: str) -> None:
        """Delete a folder from :meth:`allocate` whose request was refused."""
        raise NotImplementedError

    def submit(self, job_id: str, request: JobRequest) -> Job:
        """Queue the job of an allocated folder. Raises :class:`QueueFull` (the folder is
        deleted) or :class:`ServerBusy`."""
        raise NotImplementedError

    def get(self, job_id: str) -> Job | None:
        """The job, or ``None`` for an unknown, expired or malformed id; marks it seen."""
        raise NotImplementedError

    def position(self, job_id: str) -> int | None:
        """0 for the next job to start, 1 after it...; ``None`` unless queued."""
        raise NotImplementedError

    def cancel(self, job_id: str) -> Job | None:
        """Cancel a queued or running job (a finished one is returned unchanged); ``None`` for
        an unknown id. A running job's worker is killed if it does not stop in time."""
        raise NotImplementedError

    def file_path(self, job_id: str, name: str) -> Path | None:
        """The path of one of a job's :data:`FILES`, or ``None`` if the id is unknown, the name
        is not one of :data:`FILES` or the file does not exist (yet)."""
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        """``{"waiting", "running", "workers", "queue_size", "jobs", "disk_bytes"}``."""
        raise NotImplementedError
