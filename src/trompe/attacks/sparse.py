"""Sparse (L0) gradient attacks: PGD over a few pixels, and the Jacobian saliency map attack.

**PGD-L0.** Croce & Hein, "Sparse and Imperceivable Adversarial Attacks", ICCV 2019,
arXiv:1909.05040.

Threat model: at most ``eps`` pixels (positions, all three channels free) change, each by any
amount that keeps the image in [0, 1]; white box (gradients). Projected gradient ascent of the
cross-entropy: each step moves along the gradient scaled to unit L1 length, then projects back
onto the set of changes that touch ``eps`` pixels and stay in the box. That projection is the
paper's, not a plain "keep the k largest changes": for each pixel it first clips the change
into the box, then keeps the ``eps`` pixels whose clipped change brings the iterate closest to
where the step wanted to go (the squared length of the change less its squared overshoot of
the box). A pixel that the step pushed far beyond 0 or 1 therefore does not win over one that
can actually move. Random start (a uniform random image, projected) and restarts, as in the
reference code (100 steps, 5 restarts).

**JSMA.** Papernot, McDaniel, Jha, Fredrikson, Celik & Swami, "The Limitations of Deep Learning
in Adversarial Settings", IEEE EuroS&P 2016, arXiv:1511.07528.

Threat model: at most ``eps`` pixels change; white box. A greedy, targeted attack: from the
derivatives of the target's logit (``alpha``) and of the sum of the other logits (``beta``)
with respect to each input value, it picks the pair of input values whose joint increase
raises the target most while lowering the others (``alpha > 0``, ``beta < 0``, largest
``alpha * |beta|``), moves both by ``theta`` (the paper: +1, to the maximum), takes them out of
the search, and repeats until the model predicts the target or the pixel budget is spent.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch

from trompe.attacks.base import (
    FixedBudgetAttack,
    IterativeAttack,
    Norm,
    Progress,
    ProgressCallback,
)
from trompe.attacks.goal import Goal
from trompe.attacks.gradient import GradientOptions
from trompe.attacks.tracker import Tracker
from trompe.errors import InvalidArgumentError
from trompe.images import quantize
from trompe.models.classifier import Classifier

__all__ = ["JSMA", "PGDL0", "project_l0_box"]

#: The reference code's step, an L1 length of 120000 / 255 on 32 x 32 x 3 CIFAR-10 images, per
#: input value: the mean change of one value in one step, so that it carries over to any size.
_REFERENCE_STEP = 120000 / 255 / (32 * 32 * 3)


def project_l0_box(delta: torch.Tensor, images: torch.Tensor, pixels: int) -> torch.Tensor:
    """Project changes onto "at most ``pixels`` pixels change, and ``images + change`` in [0, 1]".

    The exact Euclidean projection (Croce & Hein 2019, section 3.1): per pixel, the change is
    clipped into the box; the pixels kept are those where keeping the clipped change is worth
    most, ``||d||^2 - ||d - clip(d)||^2`` summed over the channels, i.e. how much closer to
    ``d`` the clipped change is than no change at all. Exactly ``pixels`` pixels are kept (ties
    broken by position), fewer where the rest would not change.

    Shape:
        - delta, images: (B, C, H, W).
        - Output: (B, C, H, W), the projected change.
    """
    clipped = (images + delta).clamp(0.0, 1.0) - images
    gain = (delta.square() - (delta - clipped).square()).sum(dim=1).flatten(1)  # (B, H*W)
    if pixels >= gain.shape[1]:
        return clipped
    keep_index = gain.topk(pixels, dim=1).indices
    keep = torch.zeros_like(gain, dtype=torch.bool).scatter_(1, keep_index, True)
    out: torch.Tensor = clipped * keep.view(delta.shape[0], 1, *delta.shape[2:])
    return out


class PGDL0(IterativeAttack):
    """PGD for the L0 threat model with the box-aware projection of Croce & Hein (2019).

    Args:
        eps: the budget: how many pixels (positions) may change; a whole number.
        norm: ``"l0"``, the only threat model of this attack.
        steps: the most steps per image and restart (default 100, as in the reference code).
        step_size: the mean change of one input value in one step, in [0, 1] units: a step
            moves along the gradient scaled to an L1 length of ``step_size`` times the number
            of input values (3 H W), then the projection keeps ``eps`` pixels. Default 0.153,
            the reference code's 120000/255 on 32 x 32 x 3 images; the values the gradient
            favours most then jump to 0 or 1. Measured here: on the 8 x 8 digits 1.0 does
            better; on two 224 x 224 photos 0.153 did better than 0.05 or 1.0.
        random_start: start from a uniform random image projected onto the budget (default,
            as in the reference).
        restarts: runs from new random points for the images that failed (default 5, as in
            the reference); the best iterate over all runs is kept.
        early_stop: stop each image as soon as its 8-bit version meets the goal.
        seed: seeds the random starts.

    Example:
        >>> attack = PGDL0(eps=10, steps=100)
        >>> result = attack(clf, images, Targeted([951]))    # doctest: +SKIP
        >>> result.norms.l0                                  # at most 10 pixels each
    """

    name = "pgd-l0"
    aliases: ClassVar[tuple[str, ...]] = ("pgdl0",)
    family = "sparse"
    rank = 10
    norms: tuple[Norm, ...] = ("l0",)
    summary = "PGD over k pixels with the box-aware L0 projection (Croce & Hein 2019)"

    def __init__(
        self,
        *,
        eps: float,
        norm: Norm = "l0",
        steps: int = 100,
        step_size: float | None = None,
        random_start: bool = True,
        restarts: int = 5,
        early_stop: bool = True,
        seed: int | None = 0,
        gradient: GradientOptions | None = None,
    ) -> None:
        super().__init__(
            eps=eps,
            norm=norm,
            steps=steps,
            step_size=step_size,
            random_start=random_start,
            restarts=restarts,
            early_stop=early_stop,
            seed=seed,
            gradient=gradient,
        )

    def _default_step(self) -> float:
        return _REFERENCE_STEP

    def project(self, adversarial: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Keep the change of the ``eps`` pixels that matter most, clipped into [0, 1]."""
        delta = project_l0_box(adversarial - images, images, int(self.eps))
        return (images + delta).clamp(0.0, 1.0)

    def random_start_point(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A uniform random image, projected: ``eps`` random pixels set to random colours."""
        noise = torch.rand(images.shape, generator=generator, device=images.device)
        return self.project(noise, images)

    def _step(
        self,
        adversarial: torch.Tensor,
        grad: torch.Tensor,
        state: dict[str, torch.Tensor],
        index: torch.Tensor,
    ) -> torch.Tensor:
        length = self.step_size * grad[0].numel()
        l1 = grad.flatten(1).abs().sum(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        return adversarial + length * grad / l1


class JSMA(FixedBudgetAttack):
    """The Jacobian saliency map attack over pairs of input values, with a budget in pixels.

    Input values (one channel of one pixel each) are the paper's features; the budget counts
    pixels, so changing a second channel of a pixel already changed is free. Each iteration
    takes one forward pass and two backward passes (the target's logit, and the sum of all
    logits; one with ``saliency="softmax"``), not the full Jacobian.

    The untargeted form is ours (the paper is targeted): it applies the same rule to the true
    class with the signs reversed, picking pairs whose increase lowers the true class's logit
    and raises the others'. When no pair passes the paper's sign test, the pair with the
    largest ``alpha - beta`` is taken instead of stopping. On images of more than 1,024 input
    values the pairs are searched among the 1,024 values with the largest ``alpha - beta``
    (the full pair search would take ``n^2`` memory); on smaller images the search is exact.

    Args:
        eps: the budget: how many pixels (positions) may change; a whole number.
        norm: ``"l0"``, the only threat model of this attack.
        theta: the change applied to each chosen value, in [0, 1] units (the result clipped
            to [0, 1] and rounded to 8 bits): ``1.0`` (the paper's default) sets them to white,
            ``-1.0`` to black. A value that reaches 1 (or 0) leaves the search.
        saliency: the outputs whose derivatives rank the pairs: ``"logits"`` (the paper's
            choice, and that of its authors' code, cleverhans; C&W 2017 call it JSMA-Z) or
            ``"softmax"`` (the probabilities, C&W's JSMA-F: the other classes then move
            exactly against the target, so one backward pass per iteration suffices, and the
            rule reduces to the pair that raises the target's probability most). On the
            digits CNN, softmax reaches more targets with fewer pixels, logits more
            untargeted changes.
        seed: unused (the attack is deterministic); kept for the common interface.

    Example:
        >>> attack = JSMA(eps=10)
        >>> result = attack(clf, images, Targeted([3]))      # doctest: +SKIP
    """

    name = "jsma"
    family = "sparse"
    rank = 20
    norms: tuple[Norm, ...] = ("l0",)
    summary = "Jacobian saliency map attack over pairs of values (Papernot et al. 2016)"

    #: Above this many input values, pairs are searched among this many candidates only.
    max_candidates = 1024

    def __init__(
        self,
        *,
        eps: float,
        norm: Norm = "l0",
        theta: float = 1.0,
        saliency: Literal["logits", "softmax"] = "logits",
        seed: int | None = 0,
    ) -> None:
        super().__init__(eps=eps, norm=norm)
        if saliency not in ("logits", "softmax"):
            raise InvalidArgumentError(
                f"saliency must be 'logits' (the paper) or 'softmax', got {saliency!r}"
            )
        self.saliency: Literal["logits", "softmax"] = saliency
        if (
            isinstance(theta, bool)
            or not isinstance(theta, int | float)
            or not math.isfinite(theta)
            or not 1 / 255 - 1e-9 <= abs(theta) <= 1
        ):
            raise InvalidArgumentError(
                "theta must be a change in [-1, 1] of at least one 8-bit level (1/255) either "
                f"way (1.0: set to white), got {theta!r}"
            )
        self.theta = float(theta)
        self.seed = seed

    def _run(
        self,
        model: Classifier,
        images: torch.Tensor,
        goal: Goal,
        progress: ProgressCallback | None,
    ) -> Tracker:
        # Without early stopping in the tracker: every iterate here is on the 8-bit grid, so
        # the evaluation that gives the gradients is the honest check, done below.
        tracker = Tracker(images, goal, early_stop=False)
        batch, channels, height, width = images.shape
        n = channels * height * width
        device = images.device
        budget = int(self.eps)
        # The chosen pair moves against the gradients' sign for a decrease (theta < 0), and
        # for an untargeted goal the logit to raise is the true class's, negated.
        sign = (1.0 if self.theta > 0 else -1.0) * (1.0 if goal.targeted else -1.0)
        pixel_of = torch.arange(n, device=device) % (height * width)  # flat (C, H, W) order
        x = quantize(images)
        base = x.flatten(1)
        changed = torch.zeros(batch, height * width, dtype=torch.bool, device=device)
        # Values that can still move in the direction of theta.
        movable = (base < 1) if self.theta > 0 else (base > 0)
        # Each iteration moves two values; each value leaves the search once it reaches 0 or
        # 1, after at most ceil(1 / |theta|) moves; so the loop ends. Budget on top of that.
        most = math.ceil(min(n, channels * budget) * math.ceil(1 / abs(self.theta)) / 2) + 1
        running = torch.ones(batch, dtype=torch.bool, device=device)
        for iteration in range(most + 1):
            index = running.nonzero().squeeze(1)
            if not len(index):
                break
            current = x[index].requires_grad_(True)
            with torch.enable_grad():
                logits = model(current)
            tracker.count(index, forwards=1)
            # The iterate is on the 8-bit grid: this evaluation is the honest check.
            met = goal.subset(index).met(logits.detach())
            tracker.observe(model, index, current.detach(), logits.detach(), _identity)
            won = index[met]
            tracker.done[won] = True
            tracker.adversarial[won] = x[won]
            running[won] = False
            rest = (~met).nonzero().squeeze(1)
            if not len(rest):
                continue
            go = index[rest]
            with torch.enable_grad():
                kept = logits[rest]
                if self.saliency == "softmax":
                    kept = kept.softmax(dim=1)
                own = kept.gather(1, goal.classes[go][:, None]).sum()
                (alpha,) = torch.autograd.grad(own, current, retain_graph=self.saliency == "logits")
                a = sign * alpha[rest].flatten(1)
                if self.saliency == "logits":
                    (total,) = torch.autograd.grad(kept.sum(), current)
                    b = sign * (total[rest] - alpha[rest]).flatten(1)
                else:  # the probabilities sum to 1: the others move exactly against the target
                    b = -a
            tracker.gradients[go.cpu()] += 2 if self.saliency == "logits" else 1
            left = budget - changed[go].sum(dim=1)
            allowed = movable[go] & (changed[go][:, pixel_of] | (left > 0)[:, None])
            first, second, found = self._best_pairs(a, b, allowed, pixel_of, changed[go], left)
            running[go[~found]] = False
            go, first, second = go[found], first[found], second[found]
            pair = second != first  # a single value moves when no pair was left
            self._move(x, changed, movable, go, first, pixel_of)
            self._move(x, changed, movable, go[pair], second[pair], pixel_of)
            tracker.steps[go.cpu()] += 1
            if progress is not None:
                done = int(tracker.done.sum())
                progress(Progress(iteration + 1, most, done, batch, tracker.goal_prob))
        # Images that failed get their last iterate (within the budget, on the 8-bit grid).
        pending = (~tracker.done).nonzero().squeeze(1)
        tracker.adversarial[pending] = x[pending]
        return tracker

    def _move(
        self,
        x: torch.Tensor,
        changed: torch.Tensor,
        movable: torch.Tensor,
        rows: torch.Tensor,
        chosen: torch.Tensor,
        pixel_of: torch.Tensor,
    ) -> None:
        """Move value ``chosen[i]`` of image ``rows[i]`` by theta, in place, on the 8-bit grid."""
        if not len(rows):
            return
        flat = x.flatten(1)  # a view: x is contiguous
        values = flat[rows, chosen]
        moved = quantize((values + self.theta).clamp(0.0, 1.0))
        flat[rows, chosen] = moved
        changed[rows, pixel_of[chosen]] = True
        movable[rows, chosen] = (moved < 1) if self.theta > 0 else (moved > 0)

    def _best_pairs(
        self,
        a: torch.Tensor,
        b: torch.Tensor,
        allowed: torch.Tensor,
        pixel_of: torch.Tensor,
        changed: torch.Tensor,
        left: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The best pair of values per image: (first, second, found), each (B,).

        ``a`` and ``b``: per value, the (signed) derivatives of the logit to raise and of the
        others; ``allowed``: values that may move; ``changed``: pixels already changed;
        ``left``: pixels the budget still allows.
        """
        batch, n = a.shape
        first = torch.zeros(batch, dtype=torch.long, device=a.device)
        second = torch.zeros_like(first)
        found = torch.zeros(batch, dtype=torch.bool, device=a.device)
        if not batch:
            return first, second, found
        m = min(n, self.max_candidates)
        rank = torch.where(allowed, a - b, torch.full_like(a, -math.inf))
        candidates = rank.topk(m, dim=1).indices if m < n else None
        # Chunks of images, so that the pair matrices stay within ~16M entries.
        chunk = max(1, (1 << 24) // (m * m))
        for start in range(0, batch, chunk):
            rows = slice(start, start + chunk)
            if candidates is None:
                pick = torch.arange(n, device=a.device).expand(len(a[rows]), n)
            else:
                pick = candidates[rows]
            ca, cb = a[rows].gather(1, pick), b[rows].gather(1, pick)
            ok = allowed[rows].gather(1, pick)
            pixel = pixel_of[pick]
            new = ~changed[rows].gather(1, pixel)
            size = pick.shape[1]
            valid = ok[:, :, None] & ok[:, None, :]
            valid &= ~torch.eye(size, dtype=torch.bool, device=a.device)
            tight = left[rows] < 2
            if bool(tight.any()):
                # With one pixel left, two values of two different new pixels are too many.
                same = pixel[:, :, None] == pixel[:, None, :]
                both_new = new[:, :, None] & new[:, None, :]
                cost = new[:, :, None].long() + new[:, None, :].long() - (same & both_new).long()
                valid &= cost <= left[rows, None, None]
            pair_a = ca[:, :, None] + ca[:, None, :]
            pair_b = cb[:, :, None] + cb[:, None, :]
            salient = valid & (pair_a > 0) & (pair_b < 0)
            has_salient = salient.flatten(1).any(dim=1)
            score = (pair_a * pair_b).neg_().masked_fill_(~salient, -1.0)
            best = score.flatten(1).argmax(dim=1)
            if not bool(has_salient.all()):
                fallback = (pair_a - pair_b).masked_fill_(~valid, -math.inf)
                best = torch.where(has_salient, best, fallback.flatten(1).argmax(dim=1))
            p, q = best // size, best % size
            has_pair = valid.flatten(1).any(dim=1)
            # No pair left (one value, or the budget allows one more pixel and only values
            # of different new pixels remain): move the single best value instead.
            single_ok = ok & (new.long() <= left[rows, None])
            single = torch.where(single_ok, ca - cb, torch.full_like(ca, -math.inf)).argmax(dim=1)
            p = torch.where(has_pair, p, single)
            q = torch.where(has_pair, q, single)
            first[rows] = pick.gather(1, p[:, None]).squeeze(1)
            second[rows] = pick.gather(1, q[:, None]).squeeze(1)
            found[rows] = has_pair | single_ok.any(dim=1)
        return first, second, found


def _identity(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return x
