"""Run an attack over a list of budgets in one call: success (or robust accuracy) per eps.

Foolbox users expect ``attack(model, images, criterion, epsilons=[...])``; trompe's
:func:`sweep` does the same for every attack of the registry:

- a fixed-budget attack runs from the smallest budget up, and each larger budget attacks only the
  images still unbroken: an adversarial image within a small budget is within every larger one,
  so those images need no more work (AutoAttack's economy);
- a minimum-norm attack runs once; an image counts as broken at ``eps`` when its smallest
  change found is at most ``eps`` (measured on the 8-bit image, in the attack's norm).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from trompe.attacks.base import Attack, Norm, ProgressCallback
from trompe.attacks.goal import Goal
from trompe.attacks.registry import AttackInfo, get_attack
from trompe.attacks.result import AttackResult
from trompe.errors import InvalidArgumentError
from trompe.models.classifier import Classifier
from trompe.units import budget_from_unit

__all__ = ["SweepResult", "sweep"]


@dataclass(frozen=True, eq=False)
class SweepResult:
    """Success of an attack at each budget of a sweep.

    Attributes:
        attack: the attack's registry name.
        norm: the threat model.
        epsilons: the budgets, ascending, in the Python API's units ([0, 1]; L0: pixels).
        success: (E, B) bool: image ``b`` is adversarial (on its 8-bit version) within
            ``epsilons[e]``.
        adversarial: (B, 3, H, W): per image, the adversarial image of the smallest budget that
            worked (the last attempt where none did), on the 8-bit grid.
        distances: (B,) the size of each image's change in 0-255 units (L0: pixels); ``inf``
            where no budget worked.
        results: the attack results behind the sweep (one per budget run, each on the images
            still unbroken at that budget; a single one for minimum-norm attacks).
        seconds: wall-clock time of the whole sweep.
    """

    attack: str
    norm: str
    epsilons: list[float]
    success: torch.Tensor
    adversarial: torch.Tensor
    distances: torch.Tensor
    results: list[AttackResult]
    seconds: float

    @property
    def success_rate(self) -> list[float]:
        """Per budget, the fraction of images made adversarial."""
        return [float(row.float().mean()) for row in self.success]

    @property
    def robust_accuracy(self) -> list[float]:
        """Per budget, the fraction of images that resisted (1 - success rate)."""
        return [1.0 - rate for rate in self.success_rate]

    def epsilons_255(self) -> list[float]:
        """The budgets in 0-255 units (L0: pixels, unchanged)."""
        return [e if self.norm == "l0" else e * 255 for e in self.epsilons]

    def table(self) -> list[dict[str, float]]:
        """One row per budget: eps (API units and 0-255), success rate, robust accuracy."""
        return [
            {"eps": e, "eps_255": e255, "success_rate": s, "robust_accuracy": 1.0 - s}
            for e, e255, s in zip(
                self.epsilons, self.epsilons_255(), self.success_rate, strict=True
            )
        ]


def sweep(
    attack: type[Attack] | str,
    model: Classifier,
    images: torch.Tensor,
    goal: Goal,
    epsilons: Sequence[float],
    *,
    norm: Norm | None = None,
    progress: ProgressCallback | None = None,
    **options: Any,
) -> SweepResult:
    """Attack ``images`` at every budget of ``epsilons``.

    Args:
        attack: an attack class (``PGD``, ``CarliniWagnerL2``...) or its registry name
            (``"pgd"``, ``"cw"``).
        model: the classifier.
        images: (B, 3, H, W) in [0, 1].
        goal: one class per image.
        epsilons: budgets in [0, 1] units (L0: pixels); sorted for you.
        norm: the threat model (default the attack's first).
        progress: passed to each run.
        **options: the attack's other hyper-parameters.

    Returns:
        A :class:`SweepResult`.

    Example:
        >>> out = sweep(PGD, clf, images, Untargeted(labels), [1 / 255, 2 / 255, 4 / 255])
        >>> out.robust_accuracy                                     # doctest: +SKIP
        [0.81, 0.44, 0.06]
    """
    if isinstance(attack, str):
        attack = get_attack(attack).cls
    if not isinstance(attack, type) or not issubclass(attack, Attack):
        raise InvalidArgumentError(f"sweep takes an attack class, got {attack!r}")
    values = sorted(float(e) for e in epsilons)
    if not values:
        raise InvalidArgumentError("give at least one budget to sweep over")
    if any(not (e > 0 and math.isfinite(e)) for e in values):
        raise InvalidArgumentError(f"budgets must be numbers above 0, got {list(epsilons)}")
    norm = norm or attack.norms[0]
    info = AttackInfo.of(attack)
    batch = images.shape[0]
    success = torch.zeros(len(values), batch, dtype=torch.bool)
    distances = torch.full((batch,), math.inf, dtype=torch.float64)
    adversarial = images.detach().cpu().clone()
    results: list[AttackResult] = []
    seconds = 0.0

    if attack.minimum_norm:
        result = info.create(norm=norm, **options)(model, images, goal, progress=progress)
        results.append(result)
        seconds = result.seconds
        found = result.norms.of(norm)
        for e, eps in enumerate(values):
            success[e] = result.success & (found <= budget_from_unit(eps, norm) + 1e-6)
        distances = torch.where(result.success, found, distances)
        adversarial = result.adversarial
    else:
        runners = [info.create(eps=eps, norm=norm, **options) for eps in values]  # validate all
        pending = torch.arange(batch)
        for e, runner in enumerate(runners):
            if e:
                success[e] = success[e - 1]
            if not len(pending):
                continue
            result = runner(model, images[pending], goal.subset(pending), progress=progress)
            results.append(result)
            seconds += result.seconds
            won = pending[result.success]
            success[e, won] = True
            adversarial[pending] = result.adversarial
            distances[won] = result.norms.of(norm)[result.success]
            pending = pending[~result.success]
    return SweepResult(
        attack=attack.name,
        norm=norm,
        epsilons=values,
        success=success,
        adversarial=adversarial,
        distances=distances,
        results=results,
        seconds=seconds,
    )
