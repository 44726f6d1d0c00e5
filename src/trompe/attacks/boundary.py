"""The Boundary attack: a random walk along the decision boundary, from the top-1 label only.

Brendel, Rauber & Bethge, "Decision-Based Adversarial Attacks: Reliable Attacks Against
Black-Box Machine Learning Models", ICLR 2018, arXiv:1712.04248.

Threat model: minimum L2 change; black box, decision-based: the attack asks the model for the
top-1 class of images it chooses and nothing else, and every image it asks about is a counted
query.

Method, in short. Start from any image that meets the goal (noise, or an image of the target
class), blended with the original as far as it stays adversarial, and walk towards the original
while staying adversarial. Each step draws a Gaussian
direction, removes its component along the line to the original and scales it to
``spherical_step`` times the current distance (the *orthogonal* step), puts the result back on
the sphere of the current distance around the original, then moves ``source_step`` times the
distance towards the original (the *source* step). The candidate replaces the current point if
the model still sees the goal in it. Both step sizes adapt to the local geometry of the
boundary: every ``update_stats_every`` steps the orthogonal candidate is asked about too, and
over the last 100 such checks an orthogonal success rate above 50 % enlarges both steps
(``step_adaptation``), below 20 % shrinks them; over the last 30 checks of the full step, a
success rate above 25 % enlarges the source step, below 10 % shrinks it. The defaults are those
of Foolbox 3, the authors' library.

What trompe adds, as for HopSkipJump (:mod:`trompe.attacks.hsj`, whose starting points and 8-bit
bookkeeping this attack shares): the walk is in float, and every ``update_stats_every`` steps the
images whose point came closer have that point rounded to 8 bits and checked (one query); each
image returns the smallest 8-bit image seen to meet its goal. All images of a batch step
together; each stops when its query budget is spent or its source step falls below
``source_step_convergence``.
"""

from __future__ import annotations

import math

import torch

from trompe.attacks._label_search import LabelSearch, check_starting_points
from trompe.attacks.base import (
    Attack,
    Norm,
    Progress,
    ProgressCallback,
    check_positive,
)
from trompe.attacks.goal import Goal
from trompe.attacks.oracle import Oracle
from trompe.attacks.tracker import Tracker
from trompe.errors import InvalidArgumentError

__all__ = ["BoundaryAttack"]

#: Checks of the orthogonal step and of the full step over which success rates are taken.
_SPHERICAL_WINDOW = 100
_STEP_WINDOW = 30
#: Precision of the binary search from the starting point towards the original (of the segment).
_START_PRECISION = 1e-3


class BoundaryAttack(Attack):
    """The Boundary attack (L2), targeted or untargeted, from the top-1 label only.

    Args:
        queries: the query budget per image (default 10,000), starting points included.
        steps: the most steps per image (default 25,000, as in Foolbox); a step costs one
            query, plus one every ``update_stats_every`` steps.
        spherical_step: the initial orthogonal step, relative to the current distance
            (default 0.01).
        source_step: the initial step towards the original, relative to the current distance
            (default 0.01).
        source_step_convergence: an image stops when its source step falls below this
            (default 1e-7).
        step_adaptation: the factor by which the steps grow or shrink (default 1.5).
        update_stats_every: steps between two checks of the orthogonal candidate, and between
            two 8-bit checks of the current point (default 10).
        init_tries: uniform-noise images tried per image to find a starting point (default
            100).
        batch_starts: let an image start from another image of the batch that meets its goal
            (one query per candidate tried): for a target before noise, for an untargeted goal
            only where noise failed; see :class:`~trompe.attacks.hsj.HopSkipJump`.
        starting_points: optional (N, 3, H, W) candidate starting points in [0, 1] of the size
            of the attacked images, tried closest first (one query each). Not settable from
            the command line.
        seed: seeds the noise of the starting points and of the steps.

    Example:
        >>> attack = BoundaryAttack(queries=5000)
        >>> result = attack(clf.with_access("labels"), images, Untargeted(labels))  # doctest: +SKIP
    """

    name = "boundary"
    family = "labels"
    rank = 20
    summary = "decision-based, labels only: random walk on the boundary (Brendel et al. 2018)"
    norms: tuple[Norm, ...] = ("l2",)
    minimum_norm = True
    access = "labels"

    def __init__(
        self,
        *,
        queries: int = 10_000,
        steps: int = 25_000,
        spherical_step: float = 0.01,
        source_step: float = 0.01,
        source_step_convergence: float = 1e-7,
        step_adaptation: float = 1.5,
        update_stats_every: int = 10,
        init_tries: int = 100,
        batch_starts: bool = True,
        starting_points: torch.Tensor | None = None,
        seed: int | None = 0,
    ) -> None:
        check_positive("queries", queries, integer=True)
        check_positive("steps", steps, integer=True)
        check_positive("spherical_step", spherical_step)
        check_positive("source_step", source_step)
        check_positive("source_step_convergence", source_step_convergence)
        check_positive("update_stats_every", update_stats_every, integer=True)
        check_positive("init_tries", init_tries, integer=True)
        if (
            isinstance(step_adaptation, bool)
            or not isinstance(step_adaptation, int | float)
            or not math.isfinite(step_adaptation)
            or not step_adaptation > 1
        ):
            raise InvalidArgumentError(
                f"step_adaptation must be above 1 (and finite), got {step_adaptation!r}"
            )
        self.norm: Norm = "l2"
        self.queries = int(queries)
        self.steps = int(steps)
        self.spherical_step = float(spherical_step)
        self.source_step = float(source_step)
        self.source_step_convergence = float(source_step_convergence)
        self.step_adaptation = float(step_adaptation)
        self.update_stats_every = int(update_stats_every)
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
        return _BoundaryRun(self, model, images, goal, progress).run()


class _Rates:
    """The last ``window`` outcomes per image (NaN: not yet seen), for success rates."""

    def __init__(self, window: int, batch: int, device: torch.device) -> None:
        self.data = torch.full((window, batch), math.nan, device=device, dtype=torch.float64)
        self.next = torch.zeros(batch, dtype=torch.long, device=device)

    def add(self, index: torch.Tensor, outcome: torch.Tensor) -> None:
        slot = self.next[index] % self.data.shape[0]
        self.data[slot, index] = outcome.double()
        self.next[index] += 1

    def full(self) -> torch.Tensor:
        return ~self.data.isnan().any(dim=0)

    def rate(self) -> torch.Tensor:
        return self.data.nan_to_num(0.0).mean(dim=0)

    def clear(self, which: torch.Tensor) -> None:
        self.data[:, which] = math.nan
        self.next[which] = 0


class _BoundaryRun(LabelSearch):
    """One run of the Boundary attack over a batch, all images stepping together."""

    def __init__(
        self,
        attack: BoundaryAttack,
        oracle: Oracle,
        images: torch.Tensor,
        goal: Goal,
        progress: ProgressCallback | None,
    ) -> None:
        super().__init__(attack, oracle, images, goal, progress)
        self.attack = attack
        batch, device = images.shape[0], images.device
        self.spherical = torch.full((batch,), attack.spherical_step, device=device)
        self.source = torch.full((batch,), attack.source_step, device=device)
        self.spherical_rates = _Rates(_SPHERICAL_WINDOW, batch, device)
        self.step_rates = _Rates(_STEP_WINDOW, batch, device)
        # Whether the float point came closer since its last 8-bit check.
        self.unchecked = torch.zeros(batch, dtype=torch.bool, device=device)

    def proposals(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The full candidates and the orthogonal (spherical) candidates of ``index``."""
        origin = self.images[index].flatten(1)
        point = self.boundary[index].flatten(1)
        towards = origin - point
        norms = towards.norm(dim=1, keepdim=True).clamp_min(1e-12)
        unit = towards / norms
        eta = torch.randn(origin.shape, generator=self.generator, device=origin.device)
        eta = eta - (eta * unit).sum(dim=1, keepdim=True) * unit
        eta = eta * (self.spherical[index, None] * norms / eta.norm(dim=1, keepdim=True))
        # Back onto the sphere of the current distance around the original.
        away = eta - towards
        spherical = origin + away / away.norm(dim=1, keepdim=True).clamp_min(1e-12) * norms
        spherical = spherical.clamp(0, 1)
        back = origin - spherical
        back_norms = back.norm(dim=1, keepdim=True).clamp_min(1e-12)
        # The source step, corrected for the clipping's departure from the sphere.
        length = (self.source[index, None] * norms + back_norms - norms).clamp_min(0)
        candidates = (spherical + length / back_norms * back).clamp(0, 1)
        shape = self.images.shape[1:]
        return candidates.view(-1, *shape), spherical.view(-1, *shape)

    def blend_search(
        self, index: torch.Tensor, far: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        one = torch.ones(len(index), device=index.device, dtype=torch.float64)
        alpha = self.bisect(index, far, one, torch.full_like(one, _START_PRECISION))
        return self.project(index, far, alpha), alpha

    def check_rounded(self, reserve: int = 0) -> None:
        """The 8-bit check of the points that came closer since their last check."""
        chosen = (self.unchecked & (self.remaining() > reserve)).nonzero().squeeze(1)
        if len(chosen):
            alpha = torch.ones(len(chosen), device=chosen.device, dtype=torch.float64)
            self.keep_rounded(chosen, self.boundary[chosen], alpha)
            self.unchecked[chosen] = False

    def run(self) -> Tracker:
        self.find_starts()
        # From the start towards the original along the segment, to 0.1 % of it (as Foolbox's
        # and ART's initial searches do), then the walk.
        self.settle_starts(self.blend_search)
        every = self.attack.update_stats_every
        factor = self.attack.step_adaptation
        for step in range(1, self.attack.steps + 1):
            # One query is kept per image for the last 8-bit check.
            running = self.started & ~self.stopped & (self.remaining() > 1)
            running &= self.source >= self.attack.source_step_convergence
            self.stopped |= ~running
            index = running.nonzero().squeeze(1)
            if not len(index):
                break
            candidates, spherical = self.proposals(index)
            met = self.ask(index, candidates)
            stats = step % every == 0
            if stats:
                # Only where a query is left over for the image's last 8-bit check.
                spare = (self.remaining()[index] > 1).nonzero().squeeze(1)
                spherical_met = self.ask(index[spare], spherical[spare])
                self.spherical_rates.add(index[spare], spherical_met)
                self.step_rates.add(index[spare], met[spare])
            size = self.size(candidates - self.images[index])
            better = met & (size < self.distance[index])
            won = index[better]
            self.boundary[won] = candidates[better]
            self.distance[won] = size[better]
            self.unchecked[won] = True
            self.tracker.steps[index.cpu()] += 1
            if stats:
                self.adapt(factor)
                self.check_rounded(reserve=1)
            if self.progress is not None:
                done, total = int(self.tracker.done.sum()), len(self.images)
                self.progress(Progress(step, self.attack.steps, done, total, math.nan))
        self.check_rounded()
        return self.tracker

    def adapt(self, factor: float) -> None:
        """Grow or shrink the step sizes from the recent success rates (as in Foolbox 3)."""
        full = self.spherical_rates.full()
        rate = self.spherical_rates.rate()
        grow, shrink = full & (rate > 0.5), full & (rate < 0.2)
        scale = torch.ones_like(self.spherical)
        scale[grow] = factor
        scale[shrink] = 1 / factor
        self.spherical *= scale
        self.source *= scale
        self.spherical_rates.clear(grow | shrink)
        full = self.step_rates.full()
        rate = self.step_rates.rate()
        grow, shrink = full & (rate > 0.25), full & (rate < 0.1)
        self.source[grow] *= factor
        self.source[shrink] /= factor
        self.step_rates.clear(grow | shrink)
