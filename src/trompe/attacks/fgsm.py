"""The fast gradient sign method (FGSM).

Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015,
arXiv:1412.6572.

Threat model: L-inf (or, as the fast gradient method, L2) ball of radius ``eps``; white box.
One step of size ``eps`` along the sign of the loss gradient (L2: along the gradient).
"""

from __future__ import annotations

from trompe.attacks.base import Norm
from trompe.attacks.gradient import GradientOptions
from trompe.attacks.pgd import PGD

__all__ = ["FGSM"]


class FGSM(PGD):
    """One gradient step to the edge of the eps-ball.

    Args:
        eps: the budget in [0, 1] units.
        norm: ``"linf"`` (the sign method) or ``"l2"`` (the fast gradient method).
        seed: unused (FGSM is deterministic); kept for the common interface.
    """

    name = "fgsm"
    rank = 10
    summary = "fast gradient sign method: one step to the edge of the budget (Goodfellow 2015)"

    def __init__(
        self,
        *,
        eps: float,
        norm: Norm = "linf",
        seed: int | None = 0,
        gradient: GradientOptions | None = None,
    ) -> None:
        super().__init__(
            eps=eps,
            norm=norm,
            steps=1,
            step_size=eps,
            random_start=False,
            seed=seed,
            gradient=gradient,
        )
