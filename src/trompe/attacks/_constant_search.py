"""The search over the constant ``c`` that weighs distance against the goal (C&W, EAD).

Carlini & Wagner's L2 attack and EAD minimise ``distance + c * goal term`` for a constant ``c``
per image, and search ``c``: times 10 until a run meets the goal, then bisect between the
largest constant that failed and the smallest that worked (:class:`ConstantSearch`). Both also
cap the margin they ask for when the goal has a confidence (:func:`reachable`).
"""

from __future__ import annotations

import math

import torch

from trompe.attacks.goal import Goal
from trompe.errors import InvalidArgumentError

__all__ = ["ConstantSearch", "check_margin", "check_unit", "reachable"]


class ConstantSearch:
    """The per-image search over the constant ``c``: times 10 until a run works, then bisect.

    ``low`` is the largest constant whose run failed (0 before any), ``high`` the smallest whose
    run met the goal (``inf`` before any).
    """

    def __init__(self, initial: float, batch: int, device: torch.device) -> None:
        self.c = torch.full((batch,), initial, device=device, dtype=torch.float64)
        self.low = torch.zeros(batch, device=device, dtype=torch.float64)
        self.high = torch.full((batch,), math.inf, device=device, dtype=torch.float64)

    def bounded(self, index: torch.Tensor) -> torch.Tensor:
        """Whether some run has met the goal for each image of ``index``."""
        return torch.isfinite(self.high[index])

    def update(self, index: torch.Tensor, succeeded: torch.Tensor, used: torch.Tensor) -> None:
        """Move the bounds after one run with the constants ``used`` of the images ``index``."""
        used = used.to(self.c.dtype)
        high = torch.where(succeeded, torch.minimum(self.high[index], used), self.high[index])
        low = torch.where(succeeded, self.low[index], torch.maximum(self.low[index], used))
        self.high[index] = high
        self.low[index] = low
        self.c[index] = torch.where(torch.isfinite(high), (low + high) / 2, used * 10)

    def settled(
        self, index: torch.Tensor, succeeded: torch.Tensor, gain: torch.Tensor, tolerance: float
    ) -> torch.Tensor:
        """Whether the search of each image of ``index`` can end after a run (after ``update``).

        It can once the bracket ``[low, high]`` is within 5 % of ``high``, or once a run inside
        the bracket (some run has failed, so ``c`` is near the threshold) met the goal but
        improved the best distance by less than ``tolerance`` (relative ``gain``): the search
        has converged to the noise of the optimiser and of rounding.
        """
        high, low = self.high[index], self.low[index]
        narrow = torch.isfinite(high) & (high - low <= 0.05 * high)
        return narrow | (succeeded & (low > 0) & (gain < tolerance))


def reachable(kappa: torch.Tensor, goal: Goal) -> torch.Tensor:
    """The margin asked for, kept below the most that a goal with a confidence allows.

    A goal with a confidence ``p`` has a margin of at most ``-log p`` (0.01 for 99 %): a larger
    ``kappa`` could never be met and would make the goal term push forever. Such goals ask for
    ``m * kappa / (kappa + m)`` with ``m = -log p``: about ``kappa`` when it is small, never
    ``m``.
    """
    if goal.confidence is None:
        return kappa
    most = -math.log(goal.confidence)
    return most * kappa / (kappa + most)


def check_unit(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise InvalidArgumentError(f"{name} must be a number in [0, 1), got {value!r}")


def check_margin(name: str, value: float) -> None:
    bad = isinstance(value, bool) or not isinstance(value, int | float)
    if bad or not math.isfinite(value) or value < 0:
        raise InvalidArgumentError(f"{name} must be a number of 0 or more, got {value!r}")
