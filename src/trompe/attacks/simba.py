"""SimBA: simple black-box attacks, one basis direction at a time, from the model's scores only.

Guo, Gardner, You, Wilson & Weinberger, "Simple Black-box Adversarial Attacks", ICML 2019,
arXiv:1905.07121.

Threat model: score-based black box (the attack reads the model's output probabilities, never a
gradient), with a budget of ``queries`` model evaluations per image. The paper's method has no
norm budget (it reports the L2 norm it reached); trompe's version takes an L2 budget ``eps``, so
that its success can be compared with other attacks at the same budget (see below).

The method: pick an orthonormal basis of the image space and a random order of its directions.
For each direction ``q`` in turn, try the change ``-step_size * q``; if it lowers the
probability of the true class (untargeted) or raises that of the target (targeted), keep it,
otherwise try ``+step_size * q`` and keep it if it does; otherwise leave the image as it is. Each
direction costs one or two queries (none for a sign whose candidate is the current image, as when
a pixel is already black or white). The image stops as soon as it meets its goal. SimBA uses the
pixel basis (one pixel channel at a time) or, as SimBA-DCT, the basis of the 2-D discrete cosine
transform, taking low frequencies first: a block of the lowest ``freq_ratio`` of frequencies (28
of 224 in the paper's ImageNet runs) in random order, then the next bands of frequencies a
quarter of that block wide (7 of 224), each in random order, as the reference's "strided" order.
Low-frequency changes fool image classifiers with fewer queries.

Departures from the paper: the candidate is scaled back onto the L2 ball of radius ``eps`` when
it leaves it (with a large ``eps`` this never happens and the search is the paper's). Every
candidate is rounded to the 8-bit grid within the budget before it is queried, so the success
reported is that of the saved PNG; for the DCT steps, which are smaller than a level per pixel,
the rounding is dithered (a fixed random offset of less than half a level is added before it) and
the default step grows with the image (see ``step_size``). Probabilities are compared through
their log-odds, which order them alike but do not round a confident model's 0.9999999 to 1 (a
stall of untargeted runs in float32). Every query is counted (the reference spends an uncounted
query per step). The directions are drawn inside the part of the photo that the model sees, and
after the last direction a new random order starts (small images only).
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch

from trompe.attacks._regions import ask_region, crop, paste, record_region, round_l2, seen_box
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

__all__ = ["SimBA"]

Basis = Literal["dct", "pixel"]


class SimBA(FixedBudgetAttack):
    """SimBA and SimBA-DCT, targeted or untargeted, from the model's scores only, L2 budget.

    Args:
        eps: the L2 budget of the whole change, in [0, 1] units (e.g. ``3.0``; the paper's
            ImageNet runs reach about 3 to 4 on average). Candidates past it are scaled back
            onto the ball.
        norm: ``"l2"``, the only threat model.
        step_size: the length of each step along one basis direction, in [0, 1] units (the
            paper's epsilon). Default: 0.2 in the pixel basis, the paper's value (51 levels:
            on the 8-bit grid); in the DCT basis ``max(0.2, sqrt(H * W) / 255)`` for a seen
            region of H x W pixels, a step that moves each pixel by about one 8-bit level (root
            mean square): the paper's 0.2 up to 51 x 51 pixels, 0.88 at 224 x 224. Every query
            is rounded to 8 bits, and the paper's 0.2 spread over a 224 x 224 image is a quarter
            of a level per pixel: rounding hides most of each step (measured on the ImageNet
            model, espresso photo, eps 5, 400 queries: step 0.2 took the true class from 0.94
            to 0.93 with 8-bit queries, to 0.85 with float ones; step 1.0 fooled it in 366).
        basis: ``"dct"`` (SimBA-DCT, low frequencies first; default) or ``"pixel"`` (SimBA).
        queries: the most model evaluations per image, the first one (the clean image's
            probabilities) included (default 10000, the reference's step cap for untargeted
            runs; it suggests 30000 for targeted ones).
        freq_ratio: DCT only: the side of the block of lowest frequencies taken first, as a
            fraction of the image's side (default 1/8, 28 of 224 as in the paper); the later
            bands are a quarter of that wide.
        seed: seeds the order of the directions; ``None`` draws a fresh seed.

    Example:
        >>> attack = SimBA(eps=3.0, queries=2000)
        >>> result = attack(clf.with_access("scores"), images, Untargeted(labels))  # doctest: +SKIP
    """

    name = "simba"
    family = "scores"
    rank = 20
    summary = "one basis direction at a time, pixel or DCT, scores only (Guo et al. 2019)"
    access: ClassVar[Access] = "scores"
    norms: tuple[Norm, ...] = ("l2",)

    def __init__(
        self,
        *,
        eps: float,
        norm: Norm = "l2",
        step_size: float | None = None,
        basis: Basis = "dct",
        queries: int = 10000,
        freq_ratio: float = 0.125,
        seed: int | None = 0,
    ) -> None:
        super().__init__(eps=eps, norm=norm)
        if step_size is not None:
            check_positive("step_size", step_size)
        check_positive("queries", queries, integer=True)
        check_positive("freq_ratio", freq_ratio)
        if basis not in ("dct", "pixel"):
            raise InvalidArgumentError(f"basis must be 'dct' or 'pixel', got {basis!r}")
        if freq_ratio > 1:
            raise InvalidArgumentError(
                f"freq_ratio is a fraction of the image's side, in (0, 1], got {freq_ratio}"
            )
        self.step_size = None if step_size is None else float(step_size)
        self.basis: Basis = basis
        self.queries = int(queries)
        self.freq_ratio = float(freq_ratio)
        self.seed = seed

    def round_into_budget(self, adversarial: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Round to 8 bits within the L2 budget, keeping nearly all of the change."""
        return round_l2(self, adversarial, images)

    # -- the search ----------------------------------------------------------------------------

    def _run(
        self,
        model: Oracle,
        images: torch.Tensor,
        goal: Goal,
        progress: ProgressCallback | None,
    ) -> Tracker:
        device = images.device
        tracker = Tracker(images, goal, early_stop=True)
        generator = self._generator(device)
        box = seen_box(model, images.shape[-2], images.shape[-1])
        x = crop(images, box)
        channels, height, width = x.shape[1:]
        directions = _Directions(self, channels, height, width, device, x.dtype, generator)
        step_size = self._step_size(height, width)
        # Maximise the target's probability, or minimise the true class's.
        sign = 1.0 if goal.targeted else -1.0
        classes = goal.classes.to(device)

        everyone = torch.arange(len(images), device=device)
        delta = torch.zeros_like(x)
        # A fixed random offset of less than half a level (dither): the image rounds to itself,
        # but a step too small to move any pixel by a level on its own now moves some of them,
        # so that the rounded queries show the float change without bias.
        offset = (torch.rand(x.shape, generator=generator, device=device) - 0.5) / 255
        current = x.clone()
        logits = ask_region(model, tracker, images, box, everyone, current)
        score = sign * _log_odds(logits, classes)
        record_region(tracker, images, box, everyone, current, goal.met(logits))

        while True:
            used = tracker.forwards.to(device)
            index = ((~tracker.done) & (used < self.queries)).nonzero().squeeze(1)
            if not len(index):
                break
            direction = directions.next() * step_size
            tracker.steps[index.cpu()] += 1
            untried = index
            for step in (-direction, direction):
                candidate_delta = self._project(delta[untried] + step)
                moved = x[untried] + candidate_delta + offset[untried]
                candidate = self.round_into_budget(moved.clamp(0, 1), x[untried])
                # A candidate that rounds to the current image would score the same: skip it.
                fresh = (candidate != current[untried]).flatten(1).any(dim=1)
                new = score[untried].clone()
                met = torch.zeros_like(fresh)
                if bool(fresh.any()):
                    asked = untried[fresh]
                    logits = ask_region(model, tracker, images, box, asked, candidate[fresh])
                    sub = goal.subset(asked)
                    new[fresh] = sign * _log_odds(logits, sub.classes)
                    met[fresh] = sub.met(logits)
                keep = (new > score[untried]) | met
                kept = untried[keep]
                delta[kept] = candidate_delta[keep]
                current[kept] = candidate[keep]
                score[kept] = new[keep]
                record_region(tracker, images, box, untried, candidate, met)
                # The other sign only for the images that this one did not improve.
                used = tracker.forwards.to(device)
                untried = untried[~keep]
                untried = untried[used[untried] < self.queries]
                if not len(untried):
                    break
            if progress is not None:
                self._report(progress, tracker, index, score, sign)

        pending = (~tracker.done).nonzero().squeeze(1)
        if len(pending):
            tracker.adversarial[pending] = paste(images[pending], current[pending], box)
        return tracker

    def _step_size(self, height: int, width: int) -> float:
        if self.step_size is not None:
            return self.step_size
        if self.basis == "pixel":
            return 0.2
        return max(0.2, math.sqrt(height * width) / 255)

    def _project(self, delta: torch.Tensor) -> torch.Tensor:
        """Scale changes longer than ``eps`` back onto the L2 ball."""
        size = lp_norm(delta, "l2").clamp_min(1e-12)
        out: torch.Tensor = delta * (self.eps / size).clamp(max=1.0).view(-1, 1, 1, 1)
        return out

    def _report(
        self,
        progress: ProgressCallback,
        tracker: Tracker,
        index: torch.Tensor,
        score: torch.Tensor,
        sign: float,
    ) -> None:
        running = index[~tracker.done[index]]
        first = int(running[0]) if len(running) else int(index[0])
        tracker.goal_prob = float(torch.sigmoid(sign * score[first]))
        step = int(tracker.forwards.max())  # the queries of the costliest image so far
        done = int(tracker.done.sum())
        progress(Progress(step, self.queries, done, len(tracker.done), tracker.goal_prob))


def _log_odds(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """log(p / (1 - p)) of each image's class: it orders images as the probability ``p`` does
    (the paper's criterion), without the rounding of ``p`` to 1 in float32 that would stall an
    untargeted run on a confident model."""
    own = logits.gather(1, classes[:, None]).squeeze(1)
    others = logits.scatter(1, classes[:, None], float("-inf")).logsumexp(dim=1)
    out: torch.Tensor = own - others
    return out


class _Directions:
    """The basis directions in the order SimBA tries them; a fresh order after the last one."""

    def __init__(
        self,
        attack: SimBA,
        channels: int,
        height: int,
        width: int,
        device: torch.device,
        dtype: torch.dtype,
        generator: torch.Generator,
    ) -> None:
        self.basis = attack.basis
        self.shape = (channels, height, width)
        self.device = device
        self.dtype = dtype
        self.generator = generator
        self.order = torch.zeros(0, dtype=torch.long)
        self.position = 0
        if self.basis == "dct":
            self.rows = dct_matrix(height, device, dtype)
            self.cols = dct_matrix(width, device, dtype)
            self.band = _bands(height, width, attack.freq_ratio, device).repeat(channels)

    def _new_order(self) -> torch.Tensor:
        count = math.prod(self.shape)
        noise = torch.rand(count, generator=self.generator, device=self.device)
        if self.basis == "pixel":
            return noise.argsort().cpu()
        # Band by band, lowest frequencies first; random within a band and across channels.
        return (self.band + noise).argsort().cpu()

    def next(self) -> torch.Tensor:
        """The next direction, a (C, H, W) tensor of unit L2 norm."""
        if self.position == len(self.order):
            self.order = self._new_order()
            self.position = 0
        coordinate = int(self.order[self.position])
        self.position += 1
        _, height, width = self.shape
        direction = torch.zeros(self.shape, device=self.device, dtype=self.dtype)
        channel, rest = divmod(coordinate, height * width)
        row, col = divmod(rest, width)
        if self.basis == "pixel":
            direction[channel, row, col] = 1.0
        else:
            direction[channel] = self.rows[row][:, None] * self.cols[col][None, :]
        return direction


def dct_matrix(size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The orthonormal DCT-II basis: row ``k`` is the cosine of frequency ``k`` over ``size``
    samples. Shape: (size, size)."""
    k = torch.arange(size, device=device, dtype=torch.float64)[:, None]
    n = torch.arange(size, device=device, dtype=torch.float64)[None, :]
    basis = torch.cos(math.pi * (2 * n + 1) * k / (2 * size)) * math.sqrt(2 / size)
    basis[0] /= math.sqrt(2)
    return basis.to(dtype)


def _bands(height: int, width: int, ratio: float, device: torch.device) -> torch.Tensor:
    """The band of each 2-D frequency (flattened (H, W)): 0 for the lowest block of
    ``ratio`` of each side, then 1, 2... for the L-shaped bands a quarter of that wide."""
    block_h, block_w = max(1, round(height * ratio)), max(1, round(width * ratio))
    stride_h, stride_w = max(1, round(block_h / 4)), max(1, round(block_w / 4))
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    band_rows = ((rows + 1 - block_h).clamp_min(0) + stride_h - 1) // stride_h
    band_cols = ((cols + 1 - block_w).clamp_min(0) + stride_w - 1) // stride_w
    band = torch.maximum(band_rows[:, None], band_cols[None, :])
    return band.flatten().to(torch.float32)
