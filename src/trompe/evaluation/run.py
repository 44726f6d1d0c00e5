"""Running an evaluation: chunks, records written as it goes, resume, shards, torchrun, merge.

Owner: the run helper. Interface fixed by the skeleton; see the docstrings.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from trompe.evaluation._types import EvalConfig, EvalProgress
from trompe.evaluation.data import EvalData
from trompe.evaluation.report import EvaluationReport
from trompe.models.classifier import Classifier

__all__ = ["merge", "run_evaluation"]


def run_evaluation(
    model: Classifier,
    data: EvalData,
    config: EvalConfig,
    *,
    out: Path | None = None,
    resume: bool = False,
    force: bool = False,
    shard: tuple[int, int] | None = None,
    save_adversarial: bool = False,
    progress: Callable[[EvalProgress], None] | None = None,
) -> EvaluationReport:
    """Evaluate ``data`` chunk by chunk and return the report.

    With ``out``, each finished chunk's records are appended to
    ``out/records/part-<i>-of-<n>.jsonl`` (one JSON line per image, flushed and synced) and the
    summary, figure and config are written atomically at the end; ``resume`` skips the chunks
    already recorded, after checking the configuration is the same (else a one-line error
    naming the difference). ``shard=(i, n)`` evaluates chunks ``i, i + n, ...`` only; under
    ``torchrun`` (``WORLD_SIZE`` > 1) the shard is the process's rank, and rank 0 merges when
    all are done.
    """
    raise NotImplementedError


def merge(out: Path, *, force: bool = False) -> EvaluationReport:
    """Merge the part files of a sharded run in ``out`` (all shards, one configuration, every
    chunk once) into the summary and figure."""
    raise NotImplementedError
