"""An optimisation attack in the style of Carlini & Wagner (L2).

Carlini & Wagner, "Towards Evaluating the Robustness of Neural Networks", IEEE S&P 2017,
arXiv:1608.04644.

Threat model: minimum L2 change; white box. Optimise the pixels directly, through the
box-constrained change of variables ``x = (tanh(w) + 1) / 2`` so that they stay in [0, 1],
with Adam on ``||x - x0||^2 + c * max(kappa - margin(x), 0)``: the squared distance plus a hinge
on how far the image is past its goal. This is the attack of the well-known "cat becomes a lemon"
demos: the smallest change that makes the model see the target, invisible to a person.

trompe's version is quantisation-aware: a candidate counts only once its 8-bit rounding meets
the goal; an image whose float optimum is lost to rounding has its ``kappa`` raised and goes on.
The constant ``c`` is raised for images that have not met their goal at each checkpoint (the
binary search of the paper, made adaptive per image within one run).
"""

from __future__ import annotations

import math

import torch

from trompe.attacks.base import Attack, Norm, Progress, ProgressCallback, _check_positive, _Tracker
from trompe.attacks.goal import Goal
from trompe.errors import InvalidArgumentError
from trompe.images import quantize
from trompe.models.classifier import Classifier

__all__ = ["CarliniWagnerL2"]


class CarliniWagnerL2(Attack):
    """The smallest L2 change that meets the goal, found with Adam.

    Args:
        steps: Adam steps per image (default 200).
        lr: Adam's learning rate on the tanh-space variable (default 0.01).
        c: initial weight of the goal term against the squared distance (default 10).
        c_growth: factor applied to ``c`` of the images not yet successful at each checkpoint
            (every ``steps // 10`` steps).
        kappa: required margin past the goal, in log-probability units (default 0.05).
        patience: after success, stop an image when its best 8-bit distance has not improved
            by 5 % for this many steps.
        early_stop: stop images as described under ``patience``.
        seed: unused (the attack is deterministic); kept for the common interface.
    """

    name = "cw"
    summary = "smallest L2 change by optimisation (Carlini & Wagner 2017)"
    norms: tuple[Norm, ...] = ("l2",)
    minimum_norm = True

    def __init__(
        self,
        *,
        steps: int = 200,
        lr: float = 0.01,
        c: float = 10.0,
        c_growth: float = 3.0,
        kappa: float = 0.05,
        patience: int = 20,
        early_stop: bool = True,
        seed: int | None = 0,
    ) -> None:
        _check_positive("steps", steps, integer=True)
        _check_positive("lr", lr)
        _check_positive("c", c)
        _check_positive("c_growth", c_growth)
        _check_positive("patience", patience, integer=True)
        if kappa < 0:
            raise InvalidArgumentError(f"kappa must be 0 or more, got {kappa}")
        self.steps = int(steps)
        self.lr = float(lr)
        self.c = float(c)
        self.c_growth = float(c_growth)
        self.kappa = float(kappa)
        self.patience = int(patience)
        self.early_stop = bool(early_stop)
        self.norm: Norm = "l2"
        self.seed = seed

    def _run(
        self,
        model: Classifier,
        images: torch.Tensor,
        goal: Goal,
        progress: ProgressCallback | None,
    ) -> _Tracker:
        batch = images.shape[0]
        device = images.device
        tracker = _Tracker(images, goal, early_stop=False)
        # Start at the image itself: atanh of the pixels, pulled off the edges of [0, 1].
        w = torch.atanh((images * 2 - 1) * (1 - 1e-6)).clone().requires_grad_(True)
        optimiser = torch.optim.Adam([w], lr=self.lr)
        c = torch.full((batch,), self.c, device=device)
        kappa = torch.full((batch,), self.kappa, device=device)
        best_dist = torch.full((batch,), math.inf, device=device)
        found = torch.zeros(batch, dtype=torch.bool, device=device)
        stale = torch.zeros(batch, dtype=torch.long, device=device)
        running = torch.ones(batch, dtype=torch.bool, device=device)
        checkpoint = max(1, self.steps // 10)

        for step in range(self.steps):
            index = running.nonzero().squeeze(1)
            if not len(index):
                break
            x = (torch.tanh(w) + 1) / 2
            logits = model(x[index])
            margin = goal.subset(index).margin(logits)
            dist = (x[index] - images[index]).flatten(1).square().sum(dim=1)
            loss = dist + c[index] * (kappa[index] - margin).clamp_min(0)
            optimiser.zero_grad(set_to_none=True)
            loss.sum().backward()  # type: ignore[no-untyped-call]
            tracker.count(index, forwards=1, gradients=1)

            with torch.no_grad():
                xa = x[index].detach()
                # The best float iterate by margin: the fallback of images never successful.
                better = (margin > tracker.best_margin[index]) & ~found[index]
                tracker.best_margin[index[better]] = margin[better].detach()
                tracker.best[index[better]] = xa[better]
                # Candidates: past the goal in float, and closer than the best 8-bit success.
                # (5 % closer: an extra forward pass per small gain would double the cost.)
                hopeful = ((margin > 0) & (dist < 0.95 * best_dist[index])).nonzero().squeeze(1)
                improved = torch.zeros(len(index), dtype=torch.bool, device=device)
                if len(hopeful):
                    chosen = index[hopeful]
                    rounded = quantize(xa[hopeful])
                    met = goal.subset(chosen).met(model(rounded))
                    tracker.count(chosen)
                    rounded_dist = (rounded - images[chosen]).flatten(1).square().sum(dim=1)
                    keep = met & (rounded_dist < best_dist[chosen])
                    winners = chosen[keep]
                    best_dist[winners] = rounded_dist[keep]
                    tracker.adversarial[winners] = rounded[keep]
                    found[winners] = True
                    tracker.done[winners] = True
                    improved[hopeful[keep]] = True
                    # Rounding lost the goal: ask for more margin, so the float optimum moves
                    # away from the decision boundary by more than the rounding noise.
                    lost = chosen[~met]
                    kappa[lost] += 0.1
                stale[index] = torch.where(improved, 0, stale[index] + 1)
                if (step + 1) % checkpoint == 0:
                    c[~found] *= self.c_growth
                if self.early_stop:
                    running &= ~(found & (stale >= self.patience))
            optimiser.step()
            if progress is not None:
                with torch.no_grad():
                    prob = logits[:1].softmax(dim=1)[0, goal.classes[index[0]]]
                done = int(found.sum())
                progress(Progress(step + 1, self.steps, done, batch, float(prob)))
        tracker.finish(lambda x, _: quantize(x), tracker.best)
        return tracker
