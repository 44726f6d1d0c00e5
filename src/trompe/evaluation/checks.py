"""Gradient-masking checks: named warnings when a robust accuracy may be an illusion.

Owner: the checks helper. Interface fixed by the skeleton; see the docstrings.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from trompe.evaluation._types import CheckWarning, EvalConfig, ImageRecord
from trompe.models.classifier import Classifier

__all__ = ["CHECKS", "from_records", "probe_model", "stress"]

#: Every warning code the checks can raise, with one line on what it means.
CHECKS: dict[str, str] = {}


def probe_model(
    model: Classifier, images: torch.Tensor, labels: torch.Tensor, config: EvalConfig
) -> list[CheckWarning]:
    """Cheap checks on clean images before the cascade: random outputs (the same batch twice
    gives different logits), zero or non-finite gradients of the loss."""
    raise NotImplementedError


def stress(
    model: Classifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    records: Sequence[ImageRecord],
    config: EvalConfig,
) -> list[CheckWarning]:
    """Checks that spend attacks, on (a few of) the images of one chunk that stayed robust at
    the largest budget: a much larger budget must break (almost) all of them; more iterations
    and restarts must not change the result."""
    raise NotImplementedError


def from_records(records: Sequence[ImageRecord], config: EvalConfig) -> list[CheckWarning]:
    """Checks read from the records alone (so a merge of shards can run them): the black-box
    Square stage breaking images the white-box stages could not, float32 re-checks rejecting
    candidates of a reduced-precision run."""
    raise NotImplementedError
