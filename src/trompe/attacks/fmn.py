"""FMN: fast minimum-norm attack with adaptive norm bounds, L2 or L-inf.

Pintor, Roli, Brendel & Biggio, "Fast Minimum-norm Adversarial Attacks through Adaptive Norm
Bounds", NeurIPS 2021, arXiv:2102.12827.

Threat model: the smallest change in L2 or L-inf that meets the goal (targeted or untargeted);
white box (gradients).

FMN keeps, per image, a change and a bound ``epsilon`` on its norm. Each step moves the change
along the steepest ascent of the goal's margin for the norm (the normalised gradient for L2, its
sign for L-inf; the step size cosine-annealed from ``step_size`` to ``min_step_size``) and
projects it onto the ball of radius ``epsilon`` and into [0, 1]. The bound adapts: before any
adversarial iterate it jumps to the linearised boundary (the change's norm plus the missing
margin over the dual norm of the gradient); after one it shrinks by ``1 - gamma`` while the
iterate is adversarial (never above the smallest adversarial norm found) and grows by
``1 + gamma`` otherwise, ``gamma`` cosine-annealed from ``gamma`` to ``min_gamma``.

The gradient is restricted to the directions that stay in [0, 1] (a pixel at 0 cannot get
darker) before it sets the step and the linearised boundary; otherwise, on images with many
saturated pixels, the clipping to [0, 1] takes back what each step gains and the bound stalls
short of the boundary (on the digits, with their black backgrounds, 20 steps found 1 image in 3
instead of all). The iterates stay in float, as in the paper; an iterate that meets the goal and
beats the best so far is rounded to 8 bits and checked with one more forward pass, and only
checked 8-bit images are kept. With a goal that asks for a confidence, the margin includes it.
"""

from __future__ import annotations

import math

import torch

from trompe.attacks.base import Attack, Norm, ProgressCallback, check_norm, check_positive
from trompe.attacks.goal import Goal
from trompe.attacks.tracker import Tracker
from trompe.errors import InvalidArgumentError
from trompe.images import quantize
from trompe.models.classifier import Classifier

__all__ = ["FMN"]


def _cosine(start: float, end: float, step: int, steps: int) -> float:
    """``start`` at step 0, annealed along a cosine to ``end`` at step ``steps``."""
    return end + (start - end) * (1 + math.cos(math.pi * step / steps)) / 2


class FMN(Attack):
    """Fast minimum-norm attack (L2 or L-inf), targeted or untargeted.

    Args:
        norm: ``"l2"`` (default) or ``"linf"``: the distance the attack minimises.
        steps: gradient steps per image (default 100, as Foolbox).
        step_size: the first step, in [0, 1] units: the L2 length of the step, or for L-inf
            the change per pixel; default 1.0 (L2) or 0.1 (L-inf).
        min_step_size: the last step, default ``step_size / 100``.
        gamma: the first factor by which the norm bound adapts (default 0.05, the paper's).
        min_gamma: the last one (default 0.001).

    Example:
        >>> attack = FMN(norm="linf", steps=100)
        >>> result = attack(clf, images, Untargeted(labels))   # doctest: +SKIP
        >>> result.distances                                   # L-inf, 0-255 units
    """

    name = "fmn"
    family = "minimum-norm"
    rank = 35
    summary = "fast minimum-norm with adaptive norm bounds, L2 / L-inf (Pintor et al. 2021)"
    norms: tuple[Norm, ...] = ("l2", "linf")
    minimum_norm = True

    def __init__(
        self,
        *,
        norm: Norm = "l2",
        steps: int = 100,
        step_size: float | None = None,
        min_step_size: float | None = None,
        gamma: float = 0.05,
        min_gamma: float = 0.001,
    ) -> None:
        check_norm(self, norm)
        check_positive("steps", steps, integer=True)
        if step_size is None:
            step_size = 1.0 if norm == "l2" else 0.1
        check_positive("step_size", step_size)
        if min_step_size is None:
            min_step_size = step_size / 100
        check_positive("min_step_size", min_step_size)
        if min_step_size > step_size:
            raise InvalidArgumentError(
                f"min_step_size ({min_step_size}) must not exceed step_size ({step_size})"
            )
        for label, value in (("gamma", gamma), ("min_gamma", min_gamma)):
            check_positive(label, value)
            if value >= 1:
                raise InvalidArgumentError(f"{label} must be between 0 and 1, got {value}")
        if min_gamma > gamma:
            raise InvalidArgumentError(f"min_gamma ({min_gamma}) must not exceed gamma ({gamma})")
        self.norm = norm
        self.steps = int(steps)
        self.step_size = float(step_size)
        self.min_step_size = float(min_step_size)
        self.gamma = float(gamma)
        self.min_gamma = float(min_gamma)

    def _size(self, delta: torch.Tensor) -> torch.Tensor:
        flat = delta.flatten(1)
        size: torch.Tensor = flat.abs().amax(dim=1) if self.norm == "linf" else flat.norm(dim=1)
        return size

    def _dual_size(self, grad: torch.Tensor) -> torch.Tensor:
        flat = grad.flatten(1)
        size: torch.Tensor = flat.abs().sum(dim=1) if self.norm == "linf" else flat.norm(dim=1)
        return size

    def _project(self, delta: torch.Tensor, epsilon: torch.Tensor) -> torch.Tensor:
        bound = epsilon.view(-1, 1, 1, 1)
        if self.norm == "linf":
            return torch.minimum(torch.maximum(delta, -bound), bound)
        factor = (bound / self._size(delta).clamp_min(1e-12).view(-1, 1, 1, 1)).clamp(max=1.0)
        return delta * factor

    def _run(
        self,
        model: Classifier,
        images: torch.Tensor,
        goal: Goal,
        progress: ProgressCallback | None,
    ) -> Tracker:
        batch = images.shape[0]
        device = images.device
        tracker = Tracker(images, goal, early_stop=False)
        everyone = torch.arange(batch, device=device)
        delta = torch.zeros_like(images)
        epsilon = torch.zeros(batch, device=device)
        best_float = torch.full((batch,), math.inf, device=device)  # smallest adversarial iterate
        best_size = torch.full((batch,), math.inf, device=device)  # smallest checked 8-bit one

        for step in range(self.steps):
            x = (images + delta).requires_grad_(True)
            with torch.enable_grad():
                logits = model(x)
                margin = goal.margin(logits)
                (grad,) = torch.autograd.grad(margin.sum(), x)
            tracker.count(everyone, forwards=1, gradients=1)
            with torch.no_grad():
                x = x.detach()
                # Only directions that stay in [0, 1] count: a pixel at 0 cannot darken. Without
                # this, the box takes back what each step gains where many pixels sit at 0 or 1
                # (dark backgrounds), and the bound stalls short of the boundary.
                grad = grad * ~(((x <= 0) & (grad < 0)) | ((x >= 1) & (grad > 0)))
                logits = logits.detach()
                margin = margin.detach()
                met = margin > 0
                size = self._size(delta)
                self._check_rounded(model, images, goal, tracker, x, met, size, best_size)
                closer = margin > tracker.best_margin
                tracker.best_margin[closer] = margin[closer]
                tracker.best[closer] = x[closer]
                tracker.goal_prob = float(logits[:1].softmax(dim=1)[0, goal.classes[0]])

                best_float = torch.where(met, torch.minimum(best_float, size), best_float)
                gamma = _cosine(self.gamma, self.min_gamma, step, self.steps)
                to_boundary = size + (-margin).clamp_min(0) / self._dual_size(grad).clamp_min(1e-12)
                grown = torch.where(torch.isfinite(best_float), epsilon * (1 + gamma), to_boundary)
                shrunk = torch.minimum(epsilon * (1 - gamma), best_float)
                epsilon = torch.where(met, shrunk, grown)

                alpha = _cosine(self.step_size, self.min_step_size, step, self.steps)
                if self.norm == "linf":
                    direction = grad.sign()
                else:
                    direction = grad / self._dual_size(grad).clamp_min(1e-12).view(-1, 1, 1, 1)
                delta = self._project(delta + alpha * direction, epsilon)
                delta = (images + delta).clamp(0, 1) - images
            tracker.report(progress, step + 1, self.steps)

        # The last iterate has not been evaluated yet: one more pass, then its 8-bit check.
        with torch.no_grad():
            x = images + delta
            margin = goal.margin(model(x))
            tracker.count(everyone)
            met = margin > 0
            self._check_rounded(model, images, goal, tracker, x, met, self._size(delta), best_size)
            closer = margin > tracker.best_margin
            tracker.best[closer] = x[closer]
        tracker.finish(lambda fallback, index: quantize(fallback), tracker.best)
        return tracker

    def _check_rounded(
        self,
        model: Classifier,
        images: torch.Tensor,
        goal: Goal,
        tracker: Tracker,
        x: torch.Tensor,
        met: torch.Tensor,
        size: torch.Tensor,
        best_size: torch.Tensor,
    ) -> None:
        """Round the adversarial iterates that beat the best so far to 8 bits; keep those whose
        8-bit version still meets the goal (one forward pass each)."""
        hopeful = (met & (size < best_size)).nonzero().squeeze(1)
        if not len(hopeful):
            return
        rounded = quantize(x[hopeful])
        ok = goal.subset(hopeful).met(model(rounded))
        tracker.count(hopeful)
        rounded_size = self._size(rounded - images[hopeful])
        win = ok & (rounded_size < best_size[hopeful])
        index = hopeful[win]
        best_size[index] = rounded_size[win]
        tracker.adversarial[index] = rounded[win]
        tracker.done[index] = True
