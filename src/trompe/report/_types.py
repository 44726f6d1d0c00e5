"""What the report needs of a result, declared here so that the report never imports the attacks.

:class:`~trompe.attacks.result.AttackResult` satisfies :class:`ResultLike` structurally (mypy
checks it where a result is passed in), which lets the attacks layer import the report for
``AttackResult.save()`` while the report stays below the attacks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import torch

from trompe.labels import Labels

__all__ = ["GoalLike", "ResultLike"]


class GoalLike(Protocol):
    """What was asked of each image: see :class:`~trompe.attacks.goal.Goal`."""

    @property
    def classes(self) -> torch.Tensor:
        """(B,) the target, or the true class to move away from, per image."""

    @property
    def targeted(self) -> bool: ...

    @property
    def confidence(self) -> float | None: ...

    def subset(self, index: torch.Tensor) -> GoalLike:
        """The goal of some images of the batch only."""
        ...

    def met(self, logits: torch.Tensor) -> torch.Tensor:
        """(B,) bool: the goal holds for these logits."""
        ...


class ResultLike(Protocol):
    """An attack's result as the report reads it: see :class:`~trompe.attacks.AttackResult`.

    Tensors are per image of a batch of B: images (B, 3, H, W) in [0, 1], probabilities
    (B, C), counters (B,).
    """

    @property
    def original(self) -> torch.Tensor: ...

    @property
    def adversarial(self) -> torch.Tensor: ...

    @property
    def goal(self) -> GoalLike: ...

    @property
    def success(self) -> torch.Tensor: ...

    @property
    def probs_before(self) -> torch.Tensor: ...

    @property
    def probs_after(self) -> torch.Tensor: ...

    @property
    def steps(self) -> torch.Tensor: ...

    @property
    def forwards(self) -> torch.Tensor: ...

    @property
    def gradients(self) -> torch.Tensor: ...

    @property
    def queries(self) -> torch.Tensor: ...

    @property
    def seconds(self) -> float: ...

    @property
    def attack(self) -> str: ...

    @property
    def params(self) -> Mapping[str, Any]: ...

    @property
    def model(self) -> str: ...

    @property
    def labels(self) -> Labels | None: ...

    def __len__(self) -> int: ...

    def class_prob(self, index: int, image: int = 0, *, after: bool = True) -> float: ...
