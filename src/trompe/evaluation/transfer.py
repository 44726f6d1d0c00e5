"""Transfer: what held-out models see in adversarial images made on other models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from trompe.attacks.goal import Goal
from trompe.models.classifier import Classifier

__all__ = ["Transfer", "check_transfer"]


class Transfer:
    """Per held-out model and image: its top-1, the goal class's probability, goal met."""

    def to_json(self, index: int = 0) -> dict[str, Any]:
        """The check of image ``index``, JSON-ready, for result.json."""
        raise NotImplementedError


def check_transfer(models: Sequence[Classifier], images: torch.Tensor, goal: Goal) -> Transfer:
    """Classify the 8-bit ``images`` with each held-out model and judge ``goal`` on each."""
    raise NotImplementedError
