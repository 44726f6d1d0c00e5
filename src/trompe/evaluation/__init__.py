"""Robustness over a data set: the AutoAttack-grade cascade, resumable and data-parallel.

:func:`trompe.evaluate` (in :mod:`trompe.api`) is the call; this package holds the parts:
:mod:`.data` lists and reads data sets, :mod:`.cascade` attacks one chunk, :mod:`.checks`
looks for gradient masking, :mod:`.run` writes records as it goes and resumes, shards and
merges, and :mod:`.report` computes the numbers from the records.
"""

from __future__ import annotations

from trompe.evaluation._types import (
    BudgetOutcome,
    CheckWarning,
    Chunk,
    EvalConfig,
    EvalProgress,
    ImageRecord,
    Stage,
)
from trompe.evaluation.cascade import CASCADES, resolve_cascade, run_chunk
from trompe.evaluation.data import EvalData, load_data
from trompe.evaluation.report import EvaluationReport
from trompe.evaluation.run import merge, run_evaluation

__all__ = [
    "CASCADES",
    "BudgetOutcome",
    "CheckWarning",
    "Chunk",
    "EvalConfig",
    "EvalData",
    "EvalProgress",
    "EvaluationReport",
    "ImageRecord",
    "Stage",
    "load_data",
    "merge",
    "resolve_cascade",
    "run_chunk",
    "run_evaluation",
]
