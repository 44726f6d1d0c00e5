"""The honest survival check: real transforms (Pillow) on the 8-bit adversarial image."""

from __future__ import annotations

from typing import Any

import torch

from trompe.attacks.goal import Goal
from trompe.models.classifier import Classifier

__all__ = ["Survival", "check_survival"]


class Survival:
    """How images fare under a grid of real transforms (one row per grid point and image)."""

    def to_json(self, index: int = 0) -> dict[str, Any]:
        """The check of image ``index``, JSON-ready, for result.json."""
        raise NotImplementedError


def check_survival(model: Classifier, images: torch.Tensor, goal: Goal, chain: Any) -> Survival:
    """Put each 8-bit image through every real transform of ``chain.grid()``, classify again,
    and judge the goal on each."""
    raise NotImplementedError
