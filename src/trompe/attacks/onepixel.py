"""The one-pixel attack: differential evolution over the positions and colours of a few pixels.

Su, Vargas & Sakurai, "One Pixel Attack for Fooling Deep Neural Networks", IEEE Transactions on
Evolutionary Computation 23(5), 2019, arXiv:1710.08864.

Threat model: at most ``eps`` pixels change (the paper's d, usually 1, 3 or 5), to any colour;
black box with scores: the attack sees the model's output probabilities only, through a counted
oracle, and never a gradient.

A candidate is ``eps`` tuples (row, column, red, green, blue), at whole positions and 8-bit
colours, so that what is evaluated is exactly the image that will be saved. A population of
candidates (the paper: 400) starts at uniform random positions with colours drawn from
N(128, 127); each generation makes one trial per candidate by the paper's mutation
(DE/rand/1: ``x_r1 + F (x_r2 - x_r3)`` of three other random candidates, ``F = 0.5``, no
crossover) and keeps the trial where it is at least as fit as its parent. Fitness is the
probability of the true class (untargeted, lower is better) or of the target (targeted,
higher is better); we compare log-probabilities, which order the candidates the same way but
do not round to 1.0 on a confident model (in float32, every p > 1 - 6e-8 is 1.0, and the
selection would see no difference). An image stops as soon as one candidate meets its goal,
or when its generations or its query budget run out; it then gets its fittest candidate.

Our choices where the paper is silent: a mutated position that falls outside the image is
drawn again uniformly (as SciPy's differential evolution does), colours are clipped to
0-255; every generation is evaluated as one batch, so an image that succeeds has paid for its
whole generation (the query count is exact: it is what the model was asked).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from trompe.attacks.base import (
    FixedBudgetAttack,
    Norm,
    Progress,
    ProgressCallback,
    check_positive,
)
from trompe.attacks.goal import Goal
from trompe.attacks.oracle import Oracle
from trompe.attacks.tracker import Tracker
from trompe.errors import InvalidArgumentError
from trompe.images import quantize

__all__ = ["OnePixel"]

#: Candidate images per oracle call are capped so that one call holds at most this many values.
_VALUES_PER_CALL = 1 << 23


class OnePixel(FixedBudgetAttack):
    """The one-pixel attack (differential evolution, scores only), targeted or untargeted.

    Args:
        eps: how many pixels change: the paper's d (default 1, the one-pixel attack).
        norm: ``"l0"``, the only threat model of this attack.
        population: candidates per image (default 400, as in the paper). Each generation
            costs this many queries per image.
        steps: the most generations (default 100, as in the paper).
        queries: the query budget per image; default ``population * (steps + 1)``, the whole
            run. An image stops when it is spent (its last generation may be partial).
        mutation: the differential weight F of the mutation (default 0.5, as in the paper).
        seed: seeds the initial population and the mutations.

    Example:
        >>> attack = OnePixel(eps=1, population=400, steps=100)
        >>> result = attack(clf.with_access("scores"), images, Untargeted(labels))  # doctest: +SKIP
        >>> result.queries, result.gradients                  # queries used; no gradients
    """

    name = "one-pixel"
    aliases: ClassVar[tuple[str, ...]] = ("onepixel", "pixel")
    family = "scores"
    rank = 30
    norms: tuple[Norm, ...] = ("l0",)
    access = "scores"
    summary = "differential evolution over a few pixels, scores only (Su et al. 2019)"

    def __init__(
        self,
        *,
        eps: float = 1,
        norm: Norm = "l0",
        population: int = 400,
        steps: int = 100,
        queries: int | None = None,
        mutation: float = 0.5,
        seed: int | None = 0,
    ) -> None:
        super().__init__(eps=eps, norm=norm)
        check_positive("population", population, integer=True)
        if population < 4:
            raise InvalidArgumentError(
                f"population must be at least 4 (each trial mixes three others), got {population}"
            )
        check_positive("steps", steps, integer=True)
        if queries is not None:
            check_positive("queries", queries, integer=True)
        check_positive("mutation", mutation)
        if mutation > 2:
            raise InvalidArgumentError(
                f"mutation (the DE weight F) must be in (0, 2], got {mutation}"
            )
        self.population = int(population)
        self.steps = int(steps)
        self.queries = int(queries) if queries is not None else self.population * (self.steps + 1)
        self.mutation = float(mutation)
        self.seed = seed

    # -- the search ----------------------------------------------------------------------------

    def _run(
        self,
        model: Oracle,
        images: torch.Tensor,
        goal: Goal,
        progress: ProgressCallback | None,
    ) -> Tracker:
        batch, channels, height, width = images.shape
        device = images.device
        generator = self._generator(device)
        tracker = Tracker(images, goal, early_stop=True)
        base = quantize(images)
        pixels = min(int(self.eps), height * width)
        size = min(self.population, self.queries)  # a budget below one population trims it

        # Candidates: (batch, size, pixels, 2 + channels) whole numbers: row, column, colours.
        rows = torch.randint(0, height, (batch, size, pixels), generator=generator, device=device)
        cols = torch.randint(0, width, (batch, size, pixels), generator=generator, device=device)
        noise = torch.randn((batch, size, pixels, channels), generator=generator, device=device)
        colours = (128 + 127 * noise).round().clamp(0, 255)
        pop = torch.cat([rows[..., None].float(), cols[..., None].float(), colours], dim=-1)

        everyone = torch.arange(batch, device=device)
        fitness = self._evaluate(model, base, goal, tracker, everyone, pop)
        best_fit, best_at = fitness.min(dim=1)
        best = pop[everyone, best_at].clone()
        used = size
        tracker.goal_prob = self._goal_prob(goal, best_fit[:1])

        for step in range(self.steps):
            index = (~tracker.done).nonzero().squeeze(1)
            trials = min(size, self.queries - used)
            if not len(index) or trials <= 0 or size < 4:
                break
            parents = pop[index]
            trial = self._mutate(parents, generator, height, width)[:, :trials]
            trial_fit = self._evaluate(model, base, goal, tracker, index, trial)
            used += trials
            tracker.steps[index.cpu()] += 1
            # Selection: a trial replaces its parent when it is at least as fit.
            keep = trial_fit <= fitness[index, :trials]
            parents[:, :trials][keep] = trial[keep]
            pop[index] = parents
            current = fitness[index]
            current[:, :trials] = torch.where(keep, trial_fit, current[:, :trials])
            fitness[index] = current
            top_fit, top_at = trial_fit.min(dim=1)
            better = top_fit < best_fit[index]
            best_fit[index[better]] = top_fit[better]
            best[index[better]] = trial[better, top_at[better]]
            running = (~tracker.done).nonzero().squeeze(1)
            if len(running):
                tracker.goal_prob = self._goal_prob(goal, best_fit[running[:1]])
            if progress is not None:
                done = int(tracker.done.sum())
                progress(Progress(step + 1, self.steps, done, batch, tracker.goal_prob))

        pending = (~tracker.done).nonzero().squeeze(1)
        if len(pending):
            tracker.adversarial[pending] = self._paint(base[pending], best[pending])
        return tracker

    @staticmethod
    def _goal_prob(goal: Goal, fit: torch.Tensor) -> float:
        """The goal class's probability from a fitness (-log p(target), or log p(true))."""
        value = float(fit[0]) if len(fit) else math.nan
        return math.exp(-value if goal.targeted else value)

    def _mutate(
        self, pop: torch.Tensor, generator: torch.Generator, height: int, width: int
    ) -> torch.Tensor:
        """DE/rand/1 trials, one per candidate, at whole positions inside the image."""
        batch, size = pop.shape[:2]
        device = pop.device

        def draw(high: int) -> torch.Tensor:
            return torch.randint(0, high, (batch, size), generator=generator, device=device)

        # Three distinct offsets in 1..size-1 from each candidate: three distinct others.
        o1 = draw(size - 1)
        o2 = draw(size - 2)
        o2 = o2 + (o2 >= o1).long()
        low, high = torch.minimum(o1, o2), torch.maximum(o1, o2)
        o3 = draw(size - 3)
        o3 = o3 + (o3 >= low).long()
        o3 = o3 + (o3 >= high).long()
        own = torch.arange(size, device=device)
        picks = [(own + 1 + o) % size for o in (o1, o2, o3)]
        r1, r2, r3 = (pop.gather(1, p[:, :, None, None].expand_as(pop)) for p in picks)
        trial = (r1 + self.mutation * (r2 - r3)).round()
        # Positions outside the image are drawn again; colours are clipped to 0-255.
        for axis, extent in ((0, height), (1, width)):
            value = trial[..., axis]
            outside = (value < 0) | (value > extent - 1)
            fresh = torch.randint(0, extent, value.shape, generator=generator, device=device)
            trial[..., axis] = torch.where(outside, fresh.float(), value)
        trial[..., 2:] = trial[..., 2:].clamp(0, 255)
        return trial

    @staticmethod
    def _paint(base: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """The images of candidates: (M, C, H, W) and (M, pixels, 2 + C) -> (M, C, H, W).

        Pixels are written in order, so when a candidate names a position twice the last wins.
        """
        count, channels, height, width = base.shape
        flat = base.flatten(2).clone()  # (M, C, H*W)
        for p in range(candidates.shape[1]):
            where = (candidates[:, p, 0] * width + candidates[:, p, 1]).long()
            colour = candidates[:, p, 2:] / 255
            flat.scatter_(2, where[:, None, None].expand(-1, channels, 1), colour[:, :, None])
        return flat.view(count, channels, height, width)

    def _evaluate(
        self,
        model: Oracle,
        base: torch.Tensor,
        goal: Goal,
        tracker: Tracker,
        index: torch.Tensor,
        candidates: torch.Tensor,
    ) -> torch.Tensor:
        """Fitness (lower is better) of candidates (len(index), N, pixels, 2 + C): (len, N).

        Counts the queries; images with a candidate that meets the goal are done, with the
        fittest such candidate as their adversarial image.
        """
        count = candidates.shape[1]
        owner = index.repeat_interleave(count)  # the image of each candidate, flat
        flat = candidates.flatten(0, 1)
        chunk = max(1, _VALUES_PER_CALL // base[0].numel())  # candidate images per call
        fits, mets = [], []
        for start in range(0, len(owner), chunk):
            part = owner[start : start + chunk]
            logits = model.logits(self._paint(base[part], flat[start : start + chunk]))
            part_goal = goal.subset(part)
            log_prob = logits.log_softmax(dim=1).gather(1, part_goal.classes[:, None]).squeeze(1)
            fits.append(-log_prob if goal.targeted else log_prob)
            mets.append(part_goal.met(logits))
        tracker.count(index, forwards=count)
        fitness = torch.cat(fits).view(len(index), count)
        met = torch.cat(mets).view(len(index), count)
        won = met.any(dim=1)
        if won.any():
            masked = torch.where(met, fitness, torch.full_like(fitness, math.inf))
            at = masked.argmin(dim=1)
            chosen = index[won]
            winners = candidates[won, at[won]]
            tracker.done[chosen] = True
            tracker.adversarial[chosen] = self._paint(base[chosen], winners)
        return fitness
