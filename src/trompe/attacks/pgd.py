"""Projected gradient descent (PGD).

Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep Learning Models Resistant to
Adversarial Attacks", ICLR 2018, arXiv:1706.06083.

Threat model: L-inf or L2 ball of radius ``eps`` around each image; white box (gradients).
From a random point of the ball, repeat: step along the sign of the gradient of the loss
(L-inf) or along the gradient scaled to length ``step_size`` (L2), then project back into
the ball and into [0, 1].
"""

from __future__ import annotations

import torch

from trompe.attacks.base import IterativeAttack, l2_normalise

__all__ = ["PGD"]


class PGD(IterativeAttack):
    """Projected gradient descent, L-inf or L2, targeted or untargeted.

    Args:
        eps: the budget in [0, 1] units (``10 / 255`` for 10 pixel levels).
        norm: ``"linf"`` or ``"l2"``.
        steps: the most steps per image (default 40).
        step_size: one step in [0, 1] units; default ``eps / 4``, so that four steps cross the
            ball: large steps reach a confident goal early, and early stopping ends the run
            there.
        random_start: start from a uniform random point of the ball (default, as in Madry et
            al.).
        restarts: further runs from new random points for the images that failed.
        early_stop: stop each image as soon as its 8-bit version meets the goal.
        seed: seeds the random start.

    Example:
        >>> attack = PGD(eps=10 / 255, steps=40)
        >>> result = attack(clf, images, Targeted([951]))  # doctest: +SKIP
    """

    name = "pgd"
    rank = 20
    summary = "projected gradient descent, random start (Madry et al. 2018)"

    def _step(
        self,
        adversarial: torch.Tensor,
        grad: torch.Tensor,
        state: dict[str, torch.Tensor],
        index: torch.Tensor,
    ) -> torch.Tensor:
        if self.norm == "linf":
            # adversarial + step_size * sign in one pass: step_size * (-1, 0 or 1) is exact,
            # so the result is the same to the bit.
            return torch.add(adversarial, grad.sign(), alpha=self.step_size)
        return adversarial + self.step_size * l2_normalise(grad)
