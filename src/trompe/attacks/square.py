"""Square Attack: random search with square-shaped changes, from the model's scores only.

Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient black-box adversarial
attack via random search", ECCV 2020, arXiv:1912.00049.

Threat model: L-inf or L2 ball of radius ``eps`` around each image; score-based black box (the
attack reads the model's output scores, never a gradient), with a budget of ``queries`` model
evaluations per image.

The method is a random search that keeps a candidate only when it lowers the loss. It starts
from a change at the edge of the ball with a structure that image classifiers are sensitive to:
vertical stripes of +-eps (L-inf), or a grid of square "bumps" (L2). Each step then redraws the
change inside one random square window of the image: for L-inf the window becomes +-eps, one
sign per channel, a vertex of the ball; for L2 the change inside the window is replaced by a
bump (positive on one half of the window, negative on the other, peaked at the centres) and the
mass of a second random window is moved into it, so that the change stays on the sphere of
radius eps. The side of the window starts large (a fraction ``p_init`` of the image's pixels) and
shrinks on a fixed schedule as the queries run. The loss is the margin between the true class
and the best other class (untargeted) or the cross-entropy of the target (targeted), as in the
reference implementation; an image stops as soon as a queried image meets the goal.

Every image draws its own windows and signs, as in the authors' first implementation (their
later PyTorch version in AutoAttack, and torchattacks' copy of it, draw one window per step for
the whole batch). trompe's version is honest about 8 bits: every image it queries is first
rounded to the 8-bit grid within the budget, so the success it reports is that of the saved PNG,
and every query is counted. Squares are drawn inside the part of the photo that the model can
see (the centred region its preprocessing crops, as far as the model tells it: see
:func:`seen_box`), so that few queries are wasted on pixels the model never reads.
"""

from __future__ import annotations

import functools
import math
from typing import ClassVar

import torch
import torch.nn.functional as F

from trompe.attacks._regions import (
    ask_region,
    crop,
    paste,
    record_region,
    round_l2,
    seen_box,
)
from trompe.attacks.base import (
    FixedBudgetAttack,
    Norm,
    Progress,
    ProgressCallback,
    check_positive,
    lp_norm,
)
from trompe.attacks.goal import Goal
from trompe.attacks.oracle import Oracle
from trompe.attacks.tracker import Tracker
from trompe.errors import InvalidArgumentError
from trompe.models.classifier import Access

__all__ = ["Square"]


class Square(FixedBudgetAttack):
    """Square Attack, L-inf or L2, targeted or untargeted, from the model's scores only.

    Args:
        eps: the budget in [0, 1] units (L-inf: ``8 / 255`` for 8 pixel levels; L2: the
            Euclidean norm of the whole change, e.g. ``3.0``). An L-inf budget of whole 8-bit
            levels keeps every query on the 8-bit grid exactly; any other budget is rounded
            into (never past).
        norm: ``"linf"`` or ``"l2"``.
        queries: the most model evaluations per image, the first (initial) one included
            (default 5000, as in the reference implementation).
        p_init: the fraction of the image's pixels that the first squares cover (default 0.8,
            the reference's); it is halved on the reference's schedule, rescaled to
            ``queries``.
        rescale: fit the reference's schedule (written for 10,000 queries) to ``queries``
            (default); ``False`` keeps its iteration bounds as they are, as AutoAttack's
            standard version does with its 5000 queries (larger squares for longer).
        seed: seeds the random search; ``None`` draws a fresh seed.

    Example:
        >>> attack = Square(eps=8 / 255, queries=1000)
        >>> result = attack(clf.with_access("scores"), images, Untargeted(labels))  # doctest: +SKIP
        >>> result.queries, result.gradients  # doctest: +SKIP
        (tensor([64, 212]), tensor([0, 0]))
    """

    name = "square"
    aliases: ClassVar[tuple[str, ...]] = ("square-attack",)
    family = "scores"
    rank = 10
    summary = "random search over squares, scores only (Andriushchenko et al. 2020)"
    access: ClassVar[Access] = "scores"

    def __init__(
        self,
        *,
        eps: float,
        norm: Norm = "linf",
        queries: int = 5000,
        p_init: float = 0.8,
        rescale: bool = True,
        seed: int | None = 0,
    ) -> None:
        super().__init__(eps=eps, norm=norm)
        check_positive("queries", queries, integer=True)
        if not isinstance(rescale, bool):
            raise InvalidArgumentError(f"rescale must be True or False, got {rescale!r}")
        check_positive("p_init", p_init)
        if p_init > 1:
            raise InvalidArgumentError(
                f"p_init is a fraction of the pixels, in (0, 1], got {p_init}"
            )
        self.queries = int(queries)
        self.p_init = float(p_init)
        self.rescale = rescale
        self.seed = seed

    def round_into_budget(self, adversarial: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Round to 8 bits within the budget; L2 keeps nearly all of the change (see
        :func:`round_l2`)."""
        if self.norm == "l2":
            return round_l2(self, adversarial, images)
        return super().round_into_budget(adversarial, images)

    # -- the search ----------------------------------------------------------------------------

    def _run(
        self,
        model: Oracle,
        images: torch.Tensor,
        goal: Goal,
        progress: ProgressCallback | None,
    ) -> Tracker:
        tracker = Tracker(images, goal, early_stop=True)
        generator = self._generator(images.device)
        box = seen_box(model, images.shape[-2], images.shape[-1])
        x = crop(images, box)
        kind = _LinfSearch if self.norm == "linf" else _L2Search
        search: _Search = kind(self, x, generator)

        everyone = torch.arange(len(images), device=images.device)
        best = search.start()
        logits = ask_region(model, tracker, images, box, everyone, best)
        best_loss, met = _loss(goal, logits)
        record_region(tracker, images, box, everyone, best, met)
        _report(progress, tracker, goal, everyone, logits, 1, self.queries)

        for iteration in range(self.queries - 1):
            index = (~tracker.done).nonzero().squeeze(1)
            if not len(index):
                break
            p = p_schedule(self.p_init, iteration, self.queries if self.rescale else 10_000)
            candidates = search.step(index, best[index], p)
            logits = ask_region(model, tracker, images, box, index, candidates)
            tracker.steps[index.cpu()] += 1
            sub = goal.subset(index)
            loss, met = _loss(sub, logits)
            # Keep a candidate that lowers the loss, or that meets the goal (the loss of a
            # goal with a confidence need not fall exactly when the goal is first met).
            keep = (loss < best_loss[index]) | met
            best[index[keep]] = candidates[keep]
            best_loss[index[keep]] = loss[keep]
            record_region(tracker, images, box, index, candidates, met)
            _report(progress, tracker, goal, index, logits, iteration + 2, self.queries)

        pending = (~tracker.done).nonzero().squeeze(1)
        if len(pending):
            tracker.adversarial[pending] = paste(images[pending], best[pending], box)
        return tracker


class _Search:
    """Proposals of the random search, on the seen boxes of the images being attacked."""

    def __init__(self, attack: Square, images: torch.Tensor, generator: torch.Generator) -> None:
        self.attack = attack
        self.images = images
        self.generator = generator

    def start(self) -> torch.Tensor:
        """The first point of every image (8-bit, within the budget)."""
        raise NotImplementedError

    def step(self, index: torch.Tensor, best: torch.Tensor, p: float) -> torch.Tensor:
        """A candidate for each of the images ``index``, from their best points so far."""
        raise NotImplementedError


class _LinfSearch(_Search):
    """The L-inf proposals: vertical stripes to start, then one window of +-eps per step."""

    def __init__(self, attack: Square, images: torch.Tensor, generator: torch.Generator) -> None:
        super().__init__(attack, images, generator)
        levels = images * 255
        self.levels = levels.round()
        # Images on the 8-bit grid (photos read from files are): whole levels, exact, and no
        # rounding needed. The budget is the whole levels within eps.
        self.exact = bool(((levels - self.levels).abs() <= 1e-3).all())
        self.reach = math.floor(attack.eps * 255 + 1e-4)

    def _edge(self, index: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
        """The images ``index`` moved by ``signs * eps``, rounded into the budget."""
        if self.exact:
            return (self.levels[index] + self.reach * signs).clamp(0, 255) / 255
        images = self.images[index]
        return self.attack.round_into_budget((images + self.attack.eps * signs).clamp(0, 1), images)

    def start(self) -> torch.Tensor:
        batch, channels, _, width = self.images.shape
        signs = _random_signs((batch, channels, 1, width), self.generator, self.images.device)
        return self._edge(torch.arange(batch, device=self.images.device), signs)

    def step(self, index: torch.Tensor, best: torch.Tensor, p: float) -> torch.Tensor:
        batch, channels, height, width = best.shape
        device = best.device
        side = square_side(p, height, width, smallest=1)
        window = _window_mask(batch, height, width, side, self.generator, device)
        signs = _random_signs((batch, channels, 1, 1), self.generator, device)
        candidates = torch.where(window, self._edge(index, signs), best)
        same = ((candidates != best) & window).flatten(1).any(dim=1).logical_not()
        # A window that would leave the image as it is wastes a query: redraw its signs, as the
        # reference does (a few rounds suffice; 2^channels sign patterns to choose from).
        for _ in range(15):
            if not bool(same.any()):
                break
            redo = same.nonzero().squeeze(1)
            signs = _random_signs((len(redo), channels, 1, 1), self.generator, device)
            proposal = torch.where(window[redo], self._edge(index[redo], signs), best[redo])
            candidates[redo] = proposal
            unchanged = ((proposal != best[redo]) & window[redo]).flatten(1).any(dim=1)
            same[redo] = unchanged.logical_not()
        return candidates


class _L2Search(_Search):
    """The L2 proposals: a grid of bumps to start, then bumps moved between windows."""

    def _on_sphere(self, images: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        scale = self.attack.eps / lp_norm(delta, "l2").clamp_min(1e-12)
        adversarial = (images + delta * scale.view(-1, 1, 1, 1)).clamp(0, 1)
        return self.attack.round_into_budget(adversarial, images)

    def start(self) -> torch.Tensor:
        images = self.images
        batch, channels, height, width = images.shape
        side = max(min(height, width) // 5, 1)
        rows, cols = height // side, width // side
        top0, left0 = (height - rows * side) // 2, (width - cols * side) // 2
        delta = torch.zeros_like(images)
        for row in range(rows):
            for col in range(cols):
                top, left = top0 + row * side, left0 + col * side
                flip = bool(torch.rand((), generator=self.generator, device=images.device) > 0.5)
                shape = _bump(side, images.device, images.dtype)
                shape = shape.T if flip else shape
                signs = _random_signs((batch, channels, 1, 1), self.generator, images.device)
                delta[..., top : top + side, left : left + side] += shape * signs
        return self._on_sphere(images, delta)

    def step(self, index: torch.Tensor, best: torch.Tensor, p: float) -> torch.Tensor:
        images = self.images[index]
        batch, channels, height, width = images.shape
        eps = self.attack.eps
        side = square_side(p, height, width, smallest=3)
        if side % 2 == 0 and side < min(height, width):
            side += 1
        device = images.device
        delta = best - images
        first = _window_corners(batch, height, width, side, self.generator, device)
        second = _window_corners(batch, height, width, side, self.generator, device)
        mask = _corners_mask(first, height, width, side) | _corners_mask(
            second, height, width, side
        )

        old = _get_window(delta, first, side)  # (B, C, s, s)
        old_norm = old.square().sum(dim=(2, 3), keepdim=True).sqrt()
        image_norm = lp_norm(delta, "l2").view(-1, 1, 1, 1)
        windows_norm = lp_norm(delta * mask, "l2").view(-1, 1, 1, 1)

        flip = torch.rand(batch, generator=self.generator, device=device) > 0.5
        shape = _bump(side, device, images.dtype)
        shapes = torch.where(flip.view(-1, 1, 1), shape.T, shape)[:, None]  # (B, 1, s, s)
        signs = _random_signs((batch, channels, 1, 1), self.generator, device)
        new = shapes * signs + old / (old_norm + 1e-12)
        new_norm = new.square().sum(dim=(2, 3), keepdim=True).sqrt()
        # The window takes its own and the second window's mass, plus what the ball has left.
        room = (
            (eps**2 - image_norm.square()).clamp_min(0) / channels + windows_norm.square()
        ).sqrt()
        new = new / (new_norm + 1e-12) * room

        _set_window(delta, second, side, torch.zeros_like(new))
        _set_window(delta, first, side, new)
        return self._on_sphere(images, delta)


# -- the schedule and the shapes -------------------------------------------------------------------


def p_schedule(p_init: float, iteration: int, queries: int) -> float:
    """The fraction of pixels that the squares of ``iteration`` cover (0-based, after the start).

    The reference's piecewise-constant schedule for 10,000 queries, halving ``p_init`` at
    iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000, rescaled to ``queries``
    (``queries=10_000`` keeps the bounds as they are).

    Example:
        >>> p_schedule(0.8, 300, 5000), p_schedule(0.8, 300, 10_000)
        (0.05, 0.1)
    """
    at = int(iteration / queries * 10_000)
    for halvings, bound in enumerate((10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)):
        if at <= bound:
            return p_init / 2.0**halvings
    return p_init / 2.0**9


def square_side(p: float, height: int, width: int, *, smallest: int) -> int:
    """The side of a square covering a fraction ``p`` of the pixels, within the image."""
    side = max(round(math.sqrt(p * height * width)), smallest)
    limit = min(height, width)
    return max(1, min(side, limit - 1 if limit > smallest else limit))


@functools.lru_cache(maxsize=64)
def _bump(side: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The L2 update's shape: +1 on the top half of a square, -1 on the bottom, peaked in the
    middle of each half; unit L2 norm. Shape: (side, side). Cached: do not modify it."""
    top = _peak(side // 2, side, device, dtype)
    bottom = _peak(side - side // 2, side, device, dtype)
    shape = torch.cat([top, -bottom])
    out: torch.Tensor = shape / shape.norm().clamp_min(1e-12)
    return out


def _peak(height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Nested rectangles around the centre: a cell at Chebyshev distance d from the centre gets
    sum over k >= d of 1 / (k + 1)^2, up to the largest ring. Unit L2 norm."""
    if height == 0:
        return torch.zeros(0, width, device=device, dtype=dtype)
    rings = max(height // 2, width // 2) + 1
    weights = 1.0 / torch.arange(1, rings + 1, device=device, dtype=dtype).square()
    tail = weights.flip(0).cumsum(0).flip(0)  # tail[d] = sum_{k >= d} weights[k]
    rows = (torch.arange(height, device=device) - height // 2).abs()
    cols = (torch.arange(width, device=device) - width // 2).abs()
    distance = torch.maximum(rows[:, None], cols[None, :])
    peak = tail[distance]
    out: torch.Tensor = peak / peak.norm()
    return out


def _random_signs(
    shape: tuple[int, ...], generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    bits = torch.randint(0, 2, shape, generator=generator, device=device)
    return (2 * bits - 1).to(torch.float32)


def _window_corners(
    batch: int, height: int, width: int, side: int, generator: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random top-left corner per image for a square of ``side`` inside the image."""
    top = torch.randint(0, height - side + 1, (batch,), generator=generator, device=device)
    left = torch.randint(0, width - side + 1, (batch,), generator=generator, device=device)
    return top, left


def _corners_mask(
    corners: tuple[torch.Tensor, torch.Tensor], height: int, width: int, side: int
) -> torch.Tensor:
    """(B, 1, H, W) masks of the squares with the given corners."""
    top, left = corners
    rows = torch.arange(height, device=top.device)
    cols = torch.arange(width, device=top.device)
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + side)
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + side)
    return (in_rows[:, :, None] & in_cols[:, None, :])[:, None]


def _window_mask(
    batch: int, height: int, width: int, side: int, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    corners = _window_corners(batch, height, width, side, generator, device)
    return _corners_mask(corners, height, width, side)


def _window_index(
    corners: tuple[torch.Tensor, torch.Tensor], side: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    top, left = corners
    offsets = torch.arange(side, device=top.device)
    batch = torch.arange(len(top), device=top.device)[:, None, None]
    rows = (top[:, None] + offsets)[:, :, None]
    cols = (left[:, None] + offsets)[:, None, :]
    return batch, rows, cols


def _get_window(
    tensor: torch.Tensor, corners: tuple[torch.Tensor, torch.Tensor], side: int
) -> torch.Tensor:
    """The (B, C, side, side) squares of a (B, C, H, W) batch, one corner per image."""
    batch, rows, cols = _window_index(corners, side)
    return tensor[batch, :, rows, cols].permute(0, 3, 1, 2)


def _set_window(
    tensor: torch.Tensor,
    corners: tuple[torch.Tensor, torch.Tensor],
    side: int,
    values: torch.Tensor,
) -> None:
    batch, rows, cols = _window_index(corners, side)
    tensor[batch, :, rows, cols] = values.permute(0, 2, 3, 1)


def _loss(goal: Goal, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's loss, to lower: the goal's margin (untargeted; with a confidence, the
    margin to it), or the target's cross-entropy (targeted); and whether the goal is met."""
    margin = goal.margin(logits)
    if goal.targeted:
        target = goal.classes.to(logits.device)
        return F.cross_entropy(logits, target, reduction="none"), margin > 0
    return -margin, margin > 0


def _report(
    progress: ProgressCallback | None,
    tracker: Tracker,
    goal: Goal,
    index: torch.Tensor,
    logits: torch.Tensor,
    step: int,
    steps: int,
) -> None:
    if progress is None:
        return
    running = (~tracker.done[index]).nonzero().squeeze(1)
    first = int(running[0]) if len(running) else 0
    cls = int(goal.classes[int(index[first])])
    tracker.goal_prob = float(logits[first].softmax(dim=0)[cls])
    done = int(tracker.done.sum())
    progress(Progress(step, steps, done, len(tracker.done), tracker.goal_prob))
