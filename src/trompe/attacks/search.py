"""The smallest budget at which a fixed-budget attack meets the goal, found by bisection.

Fixed-budget attacks (FGSM, PGD, MI-FGSM) answer "does an adversarial exist within eps?". This
wrapper answers "what is the smallest eps that works?", per image, by bisection over the budget.
For L-inf the search runs over whole 8-bit levels (1/255, 2/255, ...), the only budgets that
differ once images are saved.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from trompe.attacks.base import (
    Attack,
    FixedBudgetAttack,
    Norm,
    Progress,
    ProgressCallback,
    check_positive,
)
from trompe.attacks.goal import Goal
from trompe.attacks.tracker import Tracker
from trompe.errors import InvalidArgumentError
from trompe.models.classifier import Classifier

__all__ = ["MinimalEps"]


class MinimalEps(Attack):
    """Bisection over ``eps`` around a fixed-budget attack, per image.

    Args:
        attack: the fixed-budget attack class (e.g. :class:`~trompe.attacks.PGD`).
        max_eps: the largest budget tried, in [0, 1] units; images that fail there fail.
        norm: the threat model.
        precision: the bisection stops when the bracket is this narrow ([0, 1] units); for
            L-inf it is at least one 8-bit level.
        **options: passed to ``attack`` (``steps``, ``step_size``, ``seed``...).

    Example:
        >>> search = MinimalEps(PGD, max_eps=32 / 255, steps=20)
        >>> result = search(clf, images, Targeted([951]))    # doctest: +SKIP
        >>> result.norms.linf                                # the smallest budgets, 0-255 units
    """

    minimum_norm = True

    def __init__(
        self,
        attack: type[FixedBudgetAttack],
        *,
        max_eps: float,
        norm: Norm = "linf",
        precision: float = 1 / 255,
        **options: Any,
    ) -> None:
        if not (isinstance(attack, type) and issubclass(attack, FixedBudgetAttack)):
            raise InvalidArgumentError(
                "the eps search needs a fixed-budget attack (fgsm, pgd, mifgsm), "
                f"got {getattr(attack, 'name', attack)!r}"
            )
        check_positive("max_eps", max_eps)
        check_positive("precision", precision)
        attack(eps=max_eps, norm=norm, **options)  # validates the options once, up front
        self.attack = attack
        self.name = f"{attack.name}-min-eps"
        self.norms = attack.norms
        self.supports_targeted = attack.supports_targeted
        self.max_eps = float(max_eps)
        self.norm = norm
        self.precision = max(float(precision), 1 / 255 if norm == "linf" else 0.0)
        self.options = dict(options)
        self.seed = options.get("seed", 0)

    def params(self) -> dict[str, Any]:
        params = super().params()
        params.update({k: v for k, v in self.options.items() if not k.startswith("_")})
        params["inner_attack"] = self.attack.name
        return params

    def _levels(self, eps: float) -> float:
        """Snap an L-inf budget to whole 8-bit levels (the budgets that differ once saved)."""
        return math.floor(eps * 255 + 1e-6) / 255 if self.norm == "linf" else eps

    def _run(
        self,
        model: Classifier,
        images: torch.Tensor,
        goal: Goal,
        progress: ProgressCallback | None,
    ) -> Tracker:
        tracker = Tracker(images, goal, early_stop=True)
        batch = images.shape[0]
        rounds = max(1, math.ceil(math.log2(self.max_eps / self.precision)) + 1)
        for i in range(batch):
            one = torch.tensor([i], device=images.device)
            image, sub_goal = images[one], goal.subset(one)
            low, high = 0.0, self.max_eps
            eps = self._levels(high)
            for _ in range(rounds):
                if eps <= low or eps <= 0:
                    break
                inner = self.attack(eps=eps, norm=self.norm, **self.options)
                result = inner._run(model, image, sub_goal, None)
                inner._check_output(image, result.adversarial)  # as __call__ would
                tracker.forwards[i] += int(result.forwards.sum())
                tracker.gradients[i] += int(result.gradients.sum())
                tracker.steps[i] += int(result.steps.sum())
                if bool(result.done[0]):
                    high = eps
                    tracker.adversarial[i] = result.adversarial[0]
                    tracker.done[i] = True
                else:
                    low = eps
                    if not bool(tracker.done[i]):
                        tracker.adversarial[i] = result.adversarial[0]
                if high - low <= self.precision + 1e-9:
                    break
                eps = self._levels((low + high) / 2)
                if self.norm == "linf" and eps <= low:
                    eps = low + 1 / 255
                    if eps >= high:
                        break
            if progress is not None:
                prob = float("nan")
                progress(Progress(i + 1, batch, int(tracker.done.sum()), batch, prob))
        return tracker
