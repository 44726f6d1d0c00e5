"""HopSkipJump: a decision-based attack that sees only the model's top-1 label.

Chen, Jordan & Wainwright, "HopSkipJumpAttack: A Query-Efficient Decision-Based Attack",
IEEE Symposium on Security and Privacy 2020, arXiv:1904.02144.

Threat model: minimum L2 or L-inf change; black box, decision-based: the attack asks the model
for the top-1 class of images it chooses and nothing else (no scores, no gradients), and every
image it asks about is a counted query.

Method, in short. Start from any image that meets the goal (uniform noise for an untargeted
goal; for a target, an image the model already puts in that class), then repeat three moves.
*Hop* to the decision boundary: a binary search on the segment between the original image and
the current adversarial one (for L-inf, on the radius of the box around the original) until the
two ends are ``theta`` apart. *Skip*: estimate the direction in which the goal is met at that
boundary point from the labels of ``n`` random probes at distance ``delta`` around it (a Monte
Carlo estimate of the gradient sign, with the mean label as a baseline); ``n`` grows as
``init_evals * sqrt(t)`` at iteration ``t``, up to ``max_evals``. *Jump*: step along that
direction (its sign for L-inf) by ``distance / sqrt(t)``, halving the step until the new point
still meets the goal. The binary search from there gives the next, closer boundary point. The
paper's ``theta`` is ``gamma / d**1.5`` (L2) or ``gamma / d**2`` (L-inf) for ``d`` pixel
values, and ``delta`` is ``sqrt(d) * theta * distance`` (L2) or ``d * theta * distance`` (L-inf),
0.1 at the first iteration.

One departure, for float32 photos: at 224 x 224 the paper's ``delta`` moves each pixel of a probe
by less than float32 resolves (about 1e-8 per pixel at a typical distance), so most probe pixels
would not change at all. ``delta`` is therefore kept above ``sqrt(d) * 2**-20`` (about 8 float32
steps per pixel) and the binary search stops at the matching precision. On the digits (d = 192)
this changes nothing; on the cat photo it took the L2 reached after 500 queries (noise start)
from 703 to 414 (the espresso, still near its distant noise start after 500 queries, is the same
either way).

What trompe adds. The boundary walk happens in float, where it has to (the boundary point must
be on the boundary for the probes to tell its sides apart), but the answer is 8-bit: after each
binary search the boundary point is rounded to 8 bits, moved a little further to the
adversarial side when the rounding loses the goal, and checked with one counted query; each
image keeps the smallest 8-bit image (in the attack's norm, on 8-bit values) that the model
was seen to classify as wanted. The images of a batch advance together, with probes and
searches of all images in shared forward passes, and each image stops when its own query
budget is spent. Starting points come from an optional pool ``starting_points``, then uniform
noise as in the paper (``init_tries`` queries at most) and the other images of the batch
(``batch_starts``: for a target before noise; for an untargeted goal as a second start, the
closer one kept after the first binary search); each candidate tried is a query. An image for
which none meets the goal is returned unchanged and counts as a failure.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from trompe.attacks._label_search import CHUNK, LabelSearch, check_starting_points
from trompe.attacks.base import (
    Attack,
    Norm,
    Progress,
    ProgressCallback,
    check_norm,
    check_positive,
)
from trompe.attacks.goal import Goal
from trompe.attacks.oracle import Oracle
from trompe.attacks.tracker import Tracker
from trompe.errors import InvalidArgumentError

__all__ = ["HopSkipJump"]

#: The float32 resolution of pixel values near 1, about 8 ulps. For photos the paper's probe
#: radius ``delta = distance / d`` spreads over so many pixels (d = 150,528 at 224 x 224) that
#: each one moves by less than float32 can show (1e-8 for a distance of 2): most probe pixels
#: would not change at all. So each probe moves the average pixel by at least this much
#: (``delta >= sqrt(d) * _RESOLUTION``), and the binary search, whose precision the paper ties
#: to ``delta``, stops at a matching precision: within ``_RESOLUTION`` of the boundary in L2
#: (within float32 resolution per pixel for L-inf). Images of a few thousand pixels, such as the
#: digits, are not affected.
_RESOLUTION = 2.0**-20
_LINF_FLOOR = 2.0**-24
#: Step-size halvings before an image gives up its step for this iteration.
_MAX_HALVINGS = 30


class HopSkipJump(Attack):
    """HopSkipJump, L2 or L-inf, targeted or untargeted, from the top-1 label only.

    Args:
        norm: ``"l2"`` (default) or ``"linf"``: the distance the attack minimises.
        queries: the query budget per image (default 10,000): the most images the attack asks
            the model about for one image, starting points included.
        steps: the most iterations (binary search, gradient estimate, step) per image (default
            64, as in Foolbox).
        init_evals: probes of the first gradient estimate (default 100); iteration ``t`` uses
            ``init_evals * sqrt(t)``.
        max_evals: the most probes of one gradient estimate (default 10,000).
        gamma: sets the binary search precision ``theta = gamma / d**1.5`` (L2) or
            ``gamma / d**2`` (L-inf) for ``d`` pixel values, and with it the probe radius
            (default 1.0, as in the paper).
        init_tries: uniform-noise images tried per image to find a starting point (default
            100, as in ART).
        batch_starts: let an image start from another image of the batch that meets its goal
            (closest first, one query per candidate tried). For a target, the batch is tried
            before noise, which rarely hits a given class of a large model. For an untargeted
            goal, the batch gives a second start besides noise and the closer after the first
            binary search is kept (one binary search more): a blend with noise is the closer on
            photos, a blend with another digit on the digits. ``False`` keeps each image's
            result independent of the rest of the batch.
        starting_points: optional (N, 3, H, W) images in [0, 1] of the size of the images to
            attack: candidate starting points, for instance images of the target classes. Each
            image tries those that are closest to it first, one query per candidate, and starts
            from the first that meets its goal. Not settable from the command line.
        seed: seeds the noise of the starting points and of the probes.

    Example:
        >>> attack = HopSkipJump(queries=1000)
        >>> result = attack(clf.with_access("labels"), images, Untargeted(labels))  # doctest: +SKIP
        >>> result.distances  # L2 per image, 0-255 units                # doctest: +SKIP
    """

    name = "hsj"
    aliases: ClassVar[tuple[str, ...]] = ("hopskipjump",)
    family = "labels"
    rank = 10
    summary = "decision-based, labels only: boundary walk (HopSkipJump, Chen et al. 2020)"
    norms: tuple[Norm, ...] = ("l2", "linf")
    minimum_norm = True
    access = "labels"

    def __init__(
        self,
        *,
        norm: Norm = "l2",
        queries: int = 10_000,
        steps: int = 64,
        init_evals: int = 100,
        max_evals: int = 10_000,
        gamma: float = 1.0,
        init_tries: int = 100,
        batch_starts: bool = True,
        starting_points: torch.Tensor | None = None,
        seed: int | None = 0,
    ) -> None:
        check_norm(self, norm)
        check_positive("queries", queries, integer=True)
        check_positive("steps", steps, integer=True)
        check_positive("init_evals", init_evals, integer=True)
        check_positive("max_evals", max_evals, integer=True)
        check_positive("gamma", gamma)
        check_positive("init_tries", init_tries, integer=True)
        if init_evals > max_evals:
            raise InvalidArgumentError(
                f"init_evals ({init_evals}) must not exceed max_evals ({max_evals})"
            )
        self.norm: Norm = norm
        self.queries = int(queries)
        self.steps = int(steps)
        self.init_evals = int(init_evals)
        self.max_evals = int(max_evals)
        self.gamma = float(gamma)
        self.init_tries = int(init_tries)
        self.batch_starts = bool(batch_starts)
        self.starting_points = check_starting_points(starting_points)
        self.seed = seed

    def _run(
        self,
        model: Oracle,
        images: torch.Tensor,
        goal: Goal,
        progress: ProgressCallback | None,
    ) -> Tracker:
        return _HopSkipJumpRun(self, model, images, goal, progress).run()


class _HopSkipJumpRun(LabelSearch):
    """One run of HopSkipJump over a batch: hop, skip and jump, all images together."""

    def __init__(
        self,
        attack: HopSkipJump,
        oracle: Oracle,
        images: torch.Tensor,
        goal: Goal,
        progress: ProgressCallback | None,
    ) -> None:
        super().__init__(attack, oracle, images, goal, progress)
        self.attack = attack
        exponent = 1.5 if self.norm == "l2" else 2.0
        self.theta = attack.gamma / self.dims**exponent

    def run(self) -> Tracker:
        self.find_starts()
        self.settle_starts(self.binary_search)
        for iteration in range(1, self.attack.steps + 1):
            evals = min(int(self.attack.init_evals * math.sqrt(iteration)), self.attack.max_evals)
            # Keep enough queries for the step, the binary search and the rounding check that
            # make the probes worth asking for.
            reserve = self.search_cost() + 3
            left = self.remaining()
            running = self.started & ~self.stopped & (left > reserve)
            self.stopped |= ~running
            index = running.nonzero().squeeze(1)
            if not len(index):
                break
            wanted = torch.clamp(left[index] - reserve, max=evals)
            if iteration == 1:
                delta = torch.full((len(index),), 0.1, device=index.device, dtype=torch.float64)
            else:
                scale = math.sqrt(self.dims) if self.norm == "l2" else self.dims
                delta = scale * self.theta * self.distance[index]
                delta = delta.clamp_min(math.sqrt(self.dims) * _RESOLUTION)
            grad = self.gradient_direction(index, delta, wanted)
            update = grad if self.norm == "l2" else grad.sign()
            moved = self.step(index, update, iteration)
            self.hop(index[moved], self.boundary[index[moved]])
            self.tracker.steps[index.cpu()] += 1
            if self.progress is not None:
                done = int(self.tracker.done.sum())
                total = len(self.images)
                self.progress(Progress(iteration, self.attack.steps, done, total, math.nan))
        return self.tracker

    def hop(self, index: torch.Tensor, far: torch.Tensor) -> None:
        """Binary search to the boundary, then keep the best 8-bit point near it."""
        if not len(index):
            return
        points, alpha = self.binary_search(index, far)
        self.boundary[index] = points
        self.distance[index] = self.size(points - self.images[index])
        self.keep_rounded(index, far, alpha)

    def binary_search(
        self, index: torch.Tensor, far: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Hop from the adversarial ``far`` to the boundary; returns the points and ``alpha``."""
        origin = self.images[index]
        if self.norm == "l2":
            length = (far - origin).flatten(1).norm(dim=1).double().clamp_min(1e-12)
            high = torch.ones(len(index), device=far.device, dtype=torch.float64)
            threshold = torch.full_like(high, self.theta)
            threshold = torch.maximum(threshold, _RESOLUTION / length)
        else:
            high = (far - origin).abs().flatten(1).amax(dim=1).double()
            threshold = torch.clamp(high * self.theta, max=self.theta)
            threshold = threshold.clamp_min(_LINF_FLOOR)
        high = self.bisect(index, far, high, threshold)
        return self.project(index, far, high), high

    def search_cost(self) -> int:
        """The most queries of one binary search (L2: alpha in [0, 1]; L-inf: at most 1)."""
        floor = _RESOLUTION / math.sqrt(self.dims) if self.norm == "l2" else _LINF_FLOOR
        return max(1, math.ceil(math.log2(1 / max(self.theta, floor))))

    def gradient_direction(
        self, index: torch.Tensor, delta: torch.Tensor, evals: torch.Tensor
    ) -> torch.Tensor:
        """The estimated direction of the goal at the boundary points of ``index`` from
        ``evals[k]`` probes each at radius ``delta[k]``; unit L2 length."""
        points = self.boundary[index]
        batch, shape = len(index), points.shape[1:]
        per = max(1, CHUNK // (self.dims * batch))
        total = int(evals.max())
        radius = delta.to(points.dtype).view(-1, 1, 1, 1, 1)
        sum_frv = torch.zeros_like(points)
        sum_rv = torch.zeros_like(points)
        sum_f = torch.zeros(batch, device=points.device, dtype=torch.float64)
        for start in range(0, total, per):
            count = min(per, total - start)
            wanted = (start + torch.arange(count, device=points.device))[None] < evals[:, None]
            size = (batch, count, *shape)
            if self.norm == "l2":
                noise = torch.randn(size, generator=self.generator, device=points.device)
            else:
                noise = torch.rand(size, generator=self.generator, device=points.device) * 2 - 1
            lengths = noise.flatten(2).norm(dim=2).clamp_min(1e-12)
            noise = noise / lengths.view(batch, count, 1, 1, 1)
            probes = (points[:, None] + radius * noise).clamp(0, 1)
            # The probe actually asked about, clipping and float rounding included.
            rv = (probes - points[:, None]) / radius
            rows, cols = wanted.nonzero(as_tuple=True)
            met = self.ask(index[rows], probes[rows, cols])
            sign = torch.zeros(batch, count, device=points.device, dtype=points.dtype)
            sign[rows, cols] = met.to(points.dtype) * 2 - 1
            sum_frv += (sign.view(batch, count, 1, 1, 1) * rv).sum(dim=1)
            sum_rv += (wanted.to(points.dtype).view(batch, count, 1, 1, 1) * rv).sum(dim=1)
            sum_f += sign.sum(dim=1).double()
        n = evals.clamp_min(1).to(points.dtype).view(-1, 1, 1, 1)
        mean_f = (sum_f / evals.clamp_min(1)).to(points.dtype).view(-1, 1, 1, 1)
        # The mean label as baseline, except when every probe agrees (then it would cancel all).
        baseline = torch.where(mean_f.abs() >= 1, torch.zeros_like(mean_f), mean_f)
        grad = sum_frv / n - baseline * sum_rv / n
        unit: torch.Tensor = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        return unit

    def step(self, index: torch.Tensor, update: torch.Tensor, iteration: int) -> torch.Tensor:
        """Jump along ``update`` by ``distance / sqrt(t)``, halved until the goal is met.

        Returns the positions in ``index`` of the images that moved (their new points are in
        ``self.boundary``, not yet on the boundary).
        """
        points = self.boundary[index]
        epsilon = self.distance[index] / math.sqrt(iteration)
        searching = torch.ones(len(index), dtype=torch.bool, device=points.device)
        moved = torch.zeros_like(searching)
        for _ in range(_MAX_HALVINGS):
            chosen = (searching & (self.remaining()[index] > 0)).nonzero().squeeze(1)
            if not len(chosen):
                break
            eps = epsilon[chosen].to(points.dtype).view(-1, 1, 1, 1)
            proposal = (points[chosen] + eps * update[chosen]).clamp(0, 1)
            met = self.ask(index[chosen], proposal)
            won = chosen[met]
            self.boundary[index[won]] = proposal[met]
            moved[won] = True
            searching[won] = False
            epsilon[chosen[~met]] /= 2
        return moved.nonzero().squeeze(1)
