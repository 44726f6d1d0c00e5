"""The server's settings: where it listens, which models it serves, and every limit it enforces.

A plain frozen dataclass, without FastAPI, so that ``trompe serve`` can check its flags before
the web extra is imported. The limits are the server's policy: a client asks within them and
never widens them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from trompe.errors import InvalidArgumentError

__all__ = ["ServerConfig"]


@dataclass(frozen=True)
class ServerConfig:
    """What ``trompe serve`` runs with (its flags) and what :func:`trompe.web.create_app` takes.

    Attributes:
        host: the address to bind; ``127.0.0.1`` unless told otherwise.
        port: the TCP port (0: any free one, for tests).
        models: model ids the server serves besides the built-in ones (``timm:resnet50``...);
            clients choose among the built-ins and these, and can load nothing else.
        default_model: the model the page starts with.
        device: where the workers run the models (``None``: CPU).
        results_dir: where job folders live (``None``: a fresh temporary folder, removed when
            the server stops).
        workers: worker processes running attacks, each loading a model once.
        queue_size: jobs waiting beyond the running ones; a submission past it gets 429.
        job_timeout_s: a job running longer is stopped and reported failed.
        cancel_grace_s: how long a cancelled or timed-out job may take to stop by itself before
            its worker process is killed and replaced.
        abandon_after_s: a queued or running job that no client has asked about for this long
            is cancelled (a closed tab frees its worker).
        result_ttl_s: finished jobs and their files are deleted after this long.
        disk_quota_bytes: the most the job folders may hold together; the oldest finished jobs
            are deleted first, and submissions are refused while it cannot be met.
        max_upload_bytes: the largest upload, counted on the stream (413 beyond).
        max_pixels: the largest image, checked on its header before decoding.
        max_steps: the most steps (iterations) a job may ask for; defaults above it are lowered.
        max_queries: the same for the queries of black-box attacks.
        max_jobs_per_worker: a worker process is replaced after this many jobs, returning its
            memory to the system.
        allowed_origins: origins, besides the server's own, whose pages may POST to it.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    models: tuple[str, ...] = ()
    default_model: str = "efficientnet_lite0"
    device: str | None = None
    results_dir: Path | None = None
    workers: int = 1
    queue_size: int = 8
    job_timeout_s: float = 300.0
    cancel_grace_s: float = 5.0
    abandon_after_s: float = 120.0
    result_ttl_s: float = 3600.0
    disk_quota_bytes: int = 1 << 30
    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 16_000_000
    max_steps: int = 1000
    max_queries: int = 10_000
    max_jobs_per_worker: int = 100
    allowed_origins: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        for name in (
            "workers",
            "queue_size",
            "max_upload_bytes",
            "max_pixels",
            "max_steps",
            "max_queries",
            "max_jobs_per_worker",
            "disk_quota_bytes",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(
                    f"{name} must be a whole number of at least 1, got {value!r}"
                )
        for name in ("job_timeout_s", "cancel_grace_s", "abandon_after_s", "result_ttl_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise InvalidArgumentError(
                    f"{name} must be a positive number of seconds, got {value!r}"
                )
        if not 0 <= self.port <= 65535:
            raise InvalidArgumentError(f"port must be from 0 to 65535, got {self.port}")

    def replace(self, **changes: object) -> ServerConfig:
        """A copy with some settings changed."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def served_models(self) -> list[str]:
        """Every model id a client may choose: the built-in models, then ``models``."""
        from trompe.models import list_models

        names = [spec.name for spec in list_models()]
        return names + [m for m in self.models if m not in names]
