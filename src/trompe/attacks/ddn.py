"""DDN: decoupled direction and norm, a fast minimum-L2 gradient attack.

Rony, Hafemann, Oliveira, Ben Ayed, Sabourin & Granger, "Decoupling Direction and Norm for
Efficient Gradient-Based L2 Adversarial Attacks and Defenses", CVPR 2019, arXiv:1811.09600.

Threat model: the smallest L2 change that meets the goal (targeted or untargeted); white box
(gradients).

DDN keeps, per image, a change and a radius ``epsilon`` for it. Each step moves the change
along the normalised gradient of the cross-entropy objective (step size annealed along a cosine
from ``step_size`` to ``min_step_size``), and then rescales it to length ``epsilon``: the step
chooses the direction, the radius alone sets the norm. The radius shrinks by a factor
``1 - gamma`` after a step where the image met its goal and grows by ``1 + gamma`` otherwise,
so that it closes in on the boundary from both sides; the smallest successful change is kept.

As in the paper, every iterate is rounded to the 8-bit grid (and clipped to [0, 1]) before it is
evaluated, so each step's forward pass is also the check of an 8-bit image: what is kept as the
smallest successful change is an image that meets the goal once saved. With a goal that asks for
a confidence, "met" means the goal's margin, confidence included, is positive.
"""

from __future__ import annotations

import math

import torch

from trompe.attacks.base import (
    Attack,
    Norm,
    Progress,
    ProgressCallback,
    check_norm,
    check_positive,
    l2_normalise,
)
from trompe.attacks.goal import Goal
from trompe.attacks.tracker import Tracker
from trompe.errors import InvalidArgumentError
from trompe.images import quantize
from trompe.models.classifier import Classifier

__all__ = ["DDN"]


class DDN(Attack):
    """Decoupled direction and norm (L2), targeted or untargeted.

    Args:
        norm: ``"l2"`` (the only threat model of DDN).
        steps: gradient steps per image (default 100, as Foolbox).
        init_epsilon: the starting radius of the change, in [0, 1] units (default 1.0).
        gamma: the radius shrinks by ``1 - gamma`` after a successful step and grows by
            ``1 + gamma`` after a failed one (default 0.05).
        step_size: the L2 length of the first gradient step, in [0, 1] units (default 1.0);
            cosine-annealed down to ``min_step_size`` over the steps.
        min_step_size: the length of the last step (default 0.01).
        seed: seeds the random direction used when a gradient is exactly zero.

    Example:
        >>> attack = DDN(steps=100)
        >>> result = attack(clf, images, Targeted(targets))   # doctest: +SKIP
        >>> result.distances                                  # L2, 0-255 units
    """

    name = "ddn"
    family = "minimum-norm"
    rank = 30
    summary = "decoupled direction and norm, minimum L2 (Rony et al. 2019)"
    norms: tuple[Norm, ...] = ("l2",)
    minimum_norm = True

    def __init__(
        self,
        *,
        norm: Norm = "l2",
        steps: int = 100,
        init_epsilon: float = 1.0,
        gamma: float = 0.05,
        step_size: float = 1.0,
        min_step_size: float = 0.01,
        seed: int | None = 0,
    ) -> None:
        check_norm(self, norm)
        check_positive("steps", steps, integer=True)
        check_positive("init_epsilon", init_epsilon)
        check_positive("gamma", gamma)
        if gamma >= 1:
            raise InvalidArgumentError(f"gamma must be between 0 and 1, got {gamma}")
        check_positive("step_size", step_size)
        check_positive("min_step_size", min_step_size)
        if min_step_size > step_size:
            raise InvalidArgumentError(
                f"min_step_size ({min_step_size}) must not exceed step_size ({step_size})"
            )
        self.norm = norm
        self.steps = int(steps)
        self.init_epsilon = float(init_epsilon)
        self.gamma = float(gamma)
        self.step_size = float(step_size)
        self.min_step_size = float(min_step_size)
        self.seed = seed

    def _step_length(self, step: int) -> float:
        """The cosine-annealed step size of step ``step`` (0-based)."""
        cosine = (1 + math.cos(math.pi * step / self.steps)) / 2
        return self.min_step_size + (self.step_size - self.min_step_size) * cosine

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
        generator = self._generator(device)
        everyone = torch.arange(batch, device=device)
        # No radius beyond the farthest image of [0, 1]: it could only be clipped.
        worst = torch.maximum(images, 1 - images).flatten(1).norm(dim=1)
        epsilon = torch.full((batch,), self.init_epsilon, device=device).minimum(worst)
        best_size = torch.full((batch,), math.inf, device=device)
        x = images.clone()  # the iterate, always on the 8-bit grid

        for step in range(self.steps + 1):
            last = step == self.steps
            current = x.clone().requires_grad_(not last)
            with torch.set_grad_enabled(not last):
                logits = model(current)
                if not last:
                    (grad,) = torch.autograd.grad(goal.loss(logits).sum(), current)
            # One step each; the last evaluation only checks the final iterate.
            tracker.count(everyone, forwards=1, gradients=0 if last else 1)
            with torch.no_grad():
                logits = logits.detach()
                margin = goal.margin(logits)
                met = margin > 0
                size = (x - images).flatten(1).norm(dim=1)
                better = met & (size < best_size)
                best_size[better] = size[better]
                tracker.adversarial[better] = x[better]
                tracker.done |= met
                # The fallback of images never successful: the iterate with the best margin.
                closer = margin > tracker.best_margin
                tracker.best_margin[closer] = margin[closer]
                tracker.best[closer] = x[closer]
                tracker.goal_prob = float(logits[:1].softmax(dim=1)[0, goal.classes[0]])
                if last:
                    break

                flat = grad.flatten(1).norm(dim=1)
                zero = (flat == 0).nonzero().squeeze(1)
                if len(zero):  # a flat spot: take a random direction instead
                    noise = torch.randn(
                        (len(zero), *grad.shape[1:]), generator=generator, device=device
                    )
                    grad[zero] = noise
                delta = (x - images) + self._step_length(step) * l2_normalise(grad)
                epsilon = epsilon * torch.where(met, 1 - self.gamma, 1 + self.gamma)
                epsilon = epsilon.minimum(worst)
                delta = epsilon.view(-1, 1, 1, 1) * l2_normalise(delta)
                x = quantize((images + delta).clamp(0, 1))
            if progress is not None:
                done = int(tracker.done.sum())
                progress(Progress(step + 1, self.steps, done, batch, tracker.goal_prob))

        tracker.finish(lambda best, _: quantize(best), tracker.best)
        return tracker
