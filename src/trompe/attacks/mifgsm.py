"""The momentum iterative fast gradient sign method (MI-FGSM).

Dong, Liao, Pang, Su, Zhu, Hu & Li, "Boosting Adversarial Attacks with Momentum", CVPR 2018,
arXiv:1710.06081.

Threat model: L-inf (or L2) ball of radius ``eps``; white box. Accumulates a velocity of
L1-normalised gradients, ``g <- mu * g + grad / ||grad||_1``, and steps along its sign; the
momentum stabilises the direction, which also makes the examples transfer better to other
models.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from trompe.attacks.base import (
    IterativeAttack,
    Norm,
    check_positive,
    l1_normalise,
    l2_normalise,
)
from trompe.attacks.gradient import GradientOptions
from trompe.errors import InvalidArgumentError

__all__ = ["MIFGSM"]


class MIFGSM(IterativeAttack):
    """Iterative FGSM with momentum.

    Args:
        eps: the budget in [0, 1] units.
        norm: ``"linf"`` or ``"l2"``.
        steps: the most steps per image (default 10, as in the paper).
        step_size: default ``eps / steps``, as in the paper.
        decay: the momentum factor ``mu`` (default 1.0).
        random_start: start from a random point of the ball (default off, as in the paper).
        restarts: further runs from new random points (needs ``random_start``).
        early_stop: stop each image as soon as its 8-bit version meets the goal.
        seed: seeds the random start.
    """

    name = "mifgsm"
    aliases: ClassVar[tuple[str, ...]] = ("mi-fgsm",)
    rank = 30
    summary = "iterative FGSM with momentum (Dong et al. 2018)"

    def __init__(
        self,
        *,
        eps: float,
        norm: Norm = "linf",
        steps: int = 10,
        step_size: float | None = None,
        decay: float = 1.0,
        random_start: bool = False,
        restarts: int = 1,
        early_stop: bool = True,
        seed: int | None = 0,
        gradient: GradientOptions | None = None,
    ) -> None:
        check_positive("steps", steps, integer=True)
        if gradient is not None and gradient.momentum:
            raise InvalidArgumentError(
                "mifgsm has its own momentum (decay); leave the gradient's momentum at 0"
            )
        super().__init__(
            eps=eps,
            norm=norm,
            steps=steps,
            step_size=step_size if step_size is not None else eps / steps,
            random_start=random_start,
            restarts=restarts,
            early_stop=early_stop,
            seed=seed,
            gradient=gradient,
        )
        if (
            isinstance(decay, bool)
            or not isinstance(decay, int | float)
            or not math.isfinite(decay)
            or decay < 0
        ):
            raise InvalidArgumentError(f"decay must be a finite number of 0 or more, got {decay!r}")
        self.decay = float(decay)

    def _init_state(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"velocity": torch.zeros_like(images)}

    def _step(
        self,
        adversarial: torch.Tensor,
        grad: torch.Tensor,
        state: dict[str, torch.Tensor],
        index: torch.Tensor,
    ) -> torch.Tensor:
        velocity = self.decay * state["velocity"][index] + l1_normalise(grad)
        state["velocity"][index] = velocity
        if self.norm == "linf":
            return adversarial + self.step_size * velocity.sign()
        return adversarial + self.step_size * l2_normalise(velocity)
