"""What the label-only (decision-based) attacks share: HopSkipJump, the Boundary attack.

A label-only attack sees the top-1 class alone, so it walks along the decision boundary from a
starting point that already meets the goal, towards the original. :class:`LabelSearch` holds
what every such walk over a batch needs: queries counted per image within its budget
(:meth:`LabelSearch.ask`), starting points (the user's, other images of the batch, noise), the
bisection towards the original, and the record of the smallest adversarial checked on the 8-bit
grid.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import torch

from trompe.attacks.base import Norm, lp_norm
from trompe.attacks.goal import Goal
from trompe.attacks.oracle import Oracle
from trompe.attacks.tracker import ProgressCallback, Tracker
from trompe.errors import InvalidArgumentError
from trompe.images import quantize

__all__ = ["CHUNK", "LabelSearch", "StartOptions", "check_starting_points"]


#: Pixel values per forward pass (and per tensor of probes): ~64 MB of float32 images.
CHUNK = 1 << 24

#: Shifts past the float boundary, towards the adversarial side, tried when the rounded
#: boundary point loses the goal: an L2 distance along the segment (L2) or whole levels of the
#: box (L-inf), in 0-255 units. Rounding moves a point by about 0.3 levels across the boundary,
#: but the segment can cross the boundary at a shallow angle (early on, far from the original),
#: hence shifts up to large ones; a shift that would not beat the best 8-bit image so far is
#: not asked about.
_L2_SHIFTS: tuple[float, ...] = (0.0, 0.5, 2.0, 8.0, 32.0, 128.0)
_LINF_SHIFTS: tuple[float, ...] = (0.0, 1.0, 2.0, 3.0, 4.0)


def check_starting_points(points: torch.Tensor | None) -> torch.Tensor | None:
    """Validate a pool of candidate starting points; a detached copy, or ``None``."""
    if points is None:
        return None
    if (
        not isinstance(points, torch.Tensor)
        or points.dim() != 4
        or points.shape[1] != 3
        or not points.is_floating_point()
        or not len(points)
    ):
        shape = tuple(points.shape) if isinstance(points, torch.Tensor) else type(points).__name__
        raise InvalidArgumentError(
            f"starting_points must be a non-empty (N, 3, H, W) float tensor, got {shape}"
        )
    if points.min() < 0 or points.max() > 1:
        raise InvalidArgumentError("starting_points must lie in [0, 1]")
    return points.detach().clone()


class StartOptions(Protocol):
    """What :class:`LabelSearch` reads of the attack (HopSkipJump, the Boundary attack)."""

    norm: Norm
    queries: int
    init_tries: int
    batch_starts: bool
    starting_points: torch.Tensor | None

    def _generator(self, device: torch.device) -> torch.Generator: ...


class LabelSearch:
    """What every label-only walk over a batch shares: counted queries within each image's
    budget, starting points, and the record of the smallest checked 8-bit adversarial.

    ``self.boundary`` holds each image's current float point (adversarial), ``self.best`` the
    size of its best 8-bit adversarial (in ``self.tracker.adversarial``).
    """

    def __init__(
        self,
        attack: StartOptions,
        oracle: Oracle,
        images: torch.Tensor,
        goal: Goal,
        progress: ProgressCallback | None,
    ) -> None:
        self.options = attack
        self.oracle = oracle
        self.images = images
        self.goal = goal
        self.progress = progress
        self.norm = attack.norm
        self.tracker = Tracker(images, goal, early_stop=False)
        self.generator = attack._generator(images.device)
        batch = images.shape[0]
        device = images.device
        self.dims = images[0].numel()
        self.rounded = quantize(images)
        # Per image: the current float point, its distance, the best 8-bit distance; whether
        # it has a start, whether it has stopped.
        self.boundary = images.clone()
        self.distance = torch.full((batch,), math.inf, device=device, dtype=torch.float64)
        self.best = torch.full((batch,), math.inf, device=device, dtype=torch.float64)
        self.started = torch.zeros(batch, dtype=torch.bool, device=device)
        # A second starting point per image, where one was found (see find_starts).
        self.alternative = images.clone()
        self.has_alternative = torch.zeros(batch, dtype=torch.bool, device=device)
        self.stopped = torch.zeros(batch, dtype=torch.bool, device=device)

    # -- queries and sizes ---------------------------------------------------------------------

    def remaining(self) -> torch.Tensor:
        """Queries left per image, on the images' device."""
        left = self.options.queries - self.tracker.forwards
        return left.to(self.images.device)

    def ask(self, owners: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Whether ``points[k]`` meets the goal of image ``owners[k]``: one query each."""
        if not len(owners):
            return torch.zeros(0, dtype=torch.bool, device=self.images.device)
        per = max(1, CHUNK // self.dims)
        labels = torch.cat(
            [self.oracle.labels(points[s : s + per]) for s in range(0, len(points), per)]
        )
        self.tracker.forwards.index_add_(
            0, owners.cpu(), torch.ones(len(owners), dtype=self.tracker.forwards.dtype)
        )
        classes = self.goal.classes[owners]
        met: torch.Tensor = labels == classes if self.goal.targeted else labels != classes
        return met

    def size(self, delta: torch.Tensor) -> torch.Tensor:
        return lp_norm(delta, self.norm).double()

    def project(self, index: torch.Tensor, far: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """The point at ``alpha`` between the originals (0) and ``far``: a blend (L2), or
        ``far`` clipped to the box of radius ``alpha`` around the originals (L-inf)."""
        origin = self.images[index]
        a = alpha.to(origin.dtype).view(-1, 1, 1, 1)
        if self.norm == "l2":
            return origin + a * (far - origin)
        return torch.minimum(torch.maximum(far, origin - a), origin + a)

    # -- starting points and the 8-bit record ------------------------------------------------

    def find_starts(self) -> None:
        """A starting point per image that meets its goal, on the 8-bit grid, checked.

        In order: the user's ``starting_points``; for a target, the other images of the batch;
        noise; for an untargeted goal, the other images of the batch, as a start for the images
        that noise failed and as a second candidate for the others (a blend with noise lies
        closer to a photo, a blend with another digit closer to a digit: :meth:`settle_starts`
        keeps the closer after the search).
        """
        batch = self.images.shape[0]
        device = self.images.device
        if self.options.starting_points is not None:
            if self.options.starting_points.shape[-2:] != self.images.shape[-2:]:
                raise InvalidArgumentError(
                    f"starting_points are {tuple(self.options.starting_points.shape[-2:])} "
                    f"images but the attacked images are {tuple(self.images.shape[-2:])}; give "
                    "candidates of that size"
                )
            pool = quantize(self.options.starting_points.to(device, self.images.dtype))
            allowed = torch.ones(batch, len(pool), dtype=torch.bool, device=device)
            self.set_start(*self.first_fit(pool, allowed, ~self.started))
        others = ~torch.eye(batch, dtype=torch.bool, device=device)
        use_batch = self.options.batch_starts and batch > 1
        if self.goal.targeted and use_batch:
            self.set_start(*self.first_fit(self.rounded, others, ~self.started))
        for _ in range(self.options.init_tries):
            pending = (~self.started & (self.remaining() > 0)).nonzero().squeeze(1)
            if not len(pending):
                break
            shape = (len(pending), *self.images.shape[1:])
            noise = quantize(torch.rand(shape, generator=self.generator, device=device))
            met = self.ask(pending, noise)
            self.set_start(pending[met], noise[met])
        if not self.goal.targeted and use_batch:
            index, points = self.first_fit(self.rounded, others, torch.ones_like(self.started))
            second = self.started[index]
            self.alternative[index[second]] = points[second]
            self.has_alternative[index[second]] = True
            self.set_start(index[~second], points[~second])

    def first_fit(
        self, pool: torch.Tensor, allowed: torch.Tensor, wanted: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """For each ``wanted`` image, the closest candidate of ``pool`` (that
        ``allowed[image, candidate]``) that meets its goal, asking one candidate at a time.

        Returns the images that found one and their candidates.
        """
        pending = wanted.nonzero().squeeze(1)
        found = torch.zeros(len(pending), dtype=torch.long, device=pool.device)
        done = torch.zeros(len(pending), dtype=torch.bool, device=pool.device)
        if not len(pending) or not len(pool):
            return pending[done], pool[found[done]]
        dist = torch.stack([self.size(pool - self.rounded[i]) for i in pending.tolist()])
        dist = dist.masked_fill(~allowed[pending], math.inf)
        order = dist.argsort(dim=1)
        for rank in range(len(pool)):
            choice = order[:, rank]
            usable = torch.isfinite(dist.gather(1, choice[:, None]).squeeze(1))
            rows = (usable & ~done & (self.remaining()[pending] > 0)).nonzero().squeeze(1)
            if not len(rows):
                break
            met = self.ask(pending[rows], pool[choice[rows]])
            found[rows[met]] = choice[rows[met]]
            done[rows[met]] = True
        return pending[done], pool[found[done]]

    def settle_starts(
        self, search: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    ) -> None:
        """Bring the starts (and second candidates) towards the originals with ``search``
        (index, far) -> (points, alpha); each image keeps the closer of its two results."""
        for which in (self.started, self.has_alternative):
            index = which.nonzero().squeeze(1)
            if not len(index):
                continue
            far = self.boundary[index] if which is self.started else self.alternative[index]
            points, alpha = search(index, far)
            self.keep_rounded(index, far, alpha)
            size = self.size(points - self.images[index])
            better = size < self.distance[index]
            self.boundary[index[better]] = points[better]
            self.distance[index[better]] = size[better]

    def bisect(
        self, index: torch.Tensor, far: torch.Tensor, high: torch.Tensor, threshold: torch.Tensor
    ) -> torch.Tensor:
        """The smallest ``alpha`` in [0, ``high``] (to ``threshold``) at which the point
        between the original and the adversarial ``far`` (:meth:`project`) still meets the
        goal; ``high`` itself is taken to meet it."""
        high = high.clone()
        low = torch.zeros_like(high)
        while True:
            need = (high - low > threshold) & (self.remaining()[index] > 0)
            chosen = need.nonzero().squeeze(1)
            if not len(chosen):
                return high
            mid = (low[chosen] + high[chosen]) / 2
            met = self.ask(index[chosen], self.project(index[chosen], far[chosen], mid))
            high[chosen] = torch.where(met, mid, high[chosen])
            low[chosen] = torch.where(met, low[chosen], mid)

    def set_start(self, index: torch.Tensor, points: torch.Tensor) -> None:
        if not len(index):
            return
        self.started[index] = True
        self.boundary[index] = points
        self.take(index, points, self.size(points - self.rounded[index]))

    def keep_rounded(self, index: torch.Tensor, far: torch.Tensor, alpha: torch.Tensor) -> None:
        """Round the points at ``alpha`` towards the adversarial ``far`` (see :meth:`project`)
        to 8 bits, a little further towards ``far`` (at most to ``far`` itself) while the
        rounding loses the goal, and keep those that meet it (checked, one query each) and
        beat the best so far."""
        origin = self.images[index]
        if self.norm == "l2":
            # Shifts are L2 distances in 0-255 units along the segment.
            length = 255 * (far - origin).flatten(1).norm(dim=1).double().clamp_min(1e-12)
            limit = torch.ones_like(alpha)
            shifts = _L2_SHIFTS
        else:
            length = torch.full_like(alpha, 255.0)
            limit = (far - origin).abs().flatten(1).amax(dim=1).double()
            # The smallest whole-level box that holds the point.
            alpha = torch.ceil(alpha * 255 - 1e-6) / 255
            shifts = _LINF_SHIFTS
        pending = torch.ones(len(index), dtype=torch.bool, device=far.device)
        previous = torch.full_like(alpha, -1.0)
        for shift in shifts:
            a = torch.minimum(alpha + shift / length, limit)
            pending &= a > previous  # the same point again: asked already
            previous = a
            candidate = quantize(self.project(index, far, a))
            size = self.size(candidate - self.rounded[index])
            pending &= size < self.best[index]
            chosen = (pending & (self.remaining()[index] > 0)).nonzero().squeeze(1)
            if not len(chosen):
                break
            met = self.ask(index[chosen], candidate[chosen])
            won = chosen[met]
            self.take(index[won], candidate[won], size[won])
            pending[won] = False

    def take(self, index: torch.Tensor, rounded: torch.Tensor, size: torch.Tensor) -> None:
        self.best[index] = size
        self.tracker.adversarial[index] = rounded
        self.tracker.done[index] = True
