"""Carlini & Wagner's L2 attack, with the binary search over its constant.

Carlini & Wagner, "Towards Evaluating the Robustness of Neural Networks", IEEE S&P 2017,
arXiv:1608.04644.

Threat model: minimum L2 change; white box (gradients), targeted or untargeted. Optimise the
pixels directly, through the box-constrained change of variables ``x = (tanh(w) + 1) / 2`` so
that they stay in [0, 1], with Adam on ``||x - x0||^2 + c * max(kappa - margin(x), 0)``: the
squared distance plus a hinge on how far the image is past its goal (the paper's ``f_6`` on the
logits). This is the attack of the well-known "cat becomes a lemon" demos: the smallest change
that makes the model see the target, invisible to a person.

The constant ``c`` weighs the goal against the distance: too small and the goal is never met,
too large and the optimiser overshoots to a larger change than needed. As in the paper, each
image gets ``binary_search_steps`` runs of ``steps`` Adam steps, each run from the image itself
with a fresh optimiser; after a run that met the goal, ``c`` goes down (bisection between the
largest ``c`` that failed and the smallest that worked), after a run that did not, it goes up
(times 10 while no run has worked, else bisection). The smallest change over all runs is kept.

trompe's version adds, per image:

- 8-bit honesty: a candidate counts only once its 8-bit rounding meets the goal (one counted
  forward pass), and the distance kept is that of the rounded image. An image whose float
  optimum is lost to rounding has its ``kappa`` raised by 0.1 and goes on, so the float optimum
  moves away from the decision boundary by more than the rounding noise. With a confidence
  goal (the margin can then never exceed ``-log p``), ``kappa`` is kept below that ceiling.
- A quick exponential search inside a run, for images that no earlier run got to the goal:
  at each tenth of the run, ``c`` is multiplied by ``c_growth`` if the last tenth brought no
  8-bit success and, at the pace of the last tenth, the margin would not reach ``kappa`` by the
  end of the run (``c_growth=1`` turns this off, for the paper's search alone). A single run
  therefore nearly always succeeds: ``binary_search_steps=1`` is the quick one-run attack that
  ``trompe demo`` wants.
- Saturated pixels (0 or 255) start 0.4 of a level inside (0, 1): they still round to
  themselves, but the tanh is not flat there, so they can move within a few dozen steps
  instead of several hundred (the digits are mostly black and white).
- Early stopping: a run ends for an image once its best 8-bit distance has not improved by 1 %
  for ``patience`` steps after it met the goal, or, for a run that has not met the goal with a
  fixed ``c``, once its loss stops falling (the paper's "abort early": less than 0.01 % in a
  tenth of the run). The search of an image ends once the bracket around its ``c`` is within
  5 %, or once a run inside the bracket (some run has failed) met the goal but improved the
  best distance by less than ``search_tolerance``.

Cost, measured on 16 digits with the digits CNN: the default search takes 1,200-1,400
forward-backward passes per image against 75-100 for one run (``binary_search_steps=1``), and
returns changes 35 % smaller (median L2 250 against 380 untargeted, 345 against 531 targeted,
in 0-255 units); most of those runs go into halving ``c`` down from 10 to where the digits need
it (0.2-1). It does not always pay: on EfficientNet-Lite0, the cat photo to "lemon" at 99 %
(224 x 224, 100 steps per run), the runs after the first found nothing smaller (L2 288, PSNR
51 dB) and cost 5 times as much. For a quick result, pass
``binary_search_steps=1``.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from trompe.attacks._constant_search import ConstantSearch, check_margin, check_unit, reachable
from trompe.attacks.base import Attack, Norm, Progress, ProgressCallback, check_positive
from trompe.attacks.goal import Goal
from trompe.attacks.tracker import Tracker
from trompe.errors import InvalidArgumentError
from trompe.images import quantize
from trompe.models.classifier import Classifier

__all__ = ["CarliniWagnerL2"]

#: A run checks a candidate on 8 bits when its float distance is 1 % below that of the last one
#: checked: an extra forward pass for every small gain would nearly double the cost.
_GATE = 0.99
#: How far saturated pixels start inside (0, 1): 0.8 / 255 on the scale of ``2x - 1``, that is
#: 0.4 of an 8-bit level.
_EDGE = 0.8 / 255


class CarliniWagnerL2(Attack):
    """The smallest L2 change that meets the goal, found with Adam and a search over ``c``.

    Args:
        steps: Adam steps per run (per value of ``c``); default 200 (the paper: up to 10,000,
            with its early abort).
        lr: Adam's learning rate on the tanh-space variable (default 0.01, the paper's).
        c: the initial constant, the weight of the goal term against the squared distance
            (default 10; the paper starts at 1e-3 and needs a few runs to get up to where
            the goal is met: ``c_growth`` does that within one run).
        c_growth: within a run, factor applied to ``c`` at a tenth of the steps where an
            image that no earlier run got to its goal is not on course to meet it (see above;
            default 3; 1 turns it off).
        binary_search_steps: runs per image, each with a new ``c`` (default 9, the paper's);
            most images stop earlier (see ``search_tolerance``). 1 gives the quick single run.
        search_tolerance: an image's search ends when a run inside its bracket of ``c`` (some
            run has failed) met the goal but improved the best 8-bit L2 by less than this
            fraction (default 0.01; 0 runs every step unless the bracket closes).
        kappa: required margin past the goal, in the goal's margin units (log-probability
            differences of the logits; default 0.05). Raised per image when rounding to 8
            bits loses the goal.
        patience: stop a run for an image when, after it met the goal, its best 8-bit
            distance has not improved by 1 % for this many steps (default 20).
        early_stop: the early stops described above (``patience``, the loss plateau and the
            end of the search); without it every image takes every step of every run.
        seed: unused (the attack is deterministic); kept for the common interface.

    Example:
        >>> attack = CarliniWagnerL2(steps=100, binary_search_steps=5)
        >>> result = attack(clf, images, Targeted([951], confidence=0.99))  # doctest: +SKIP
        >>> result.norms.l2                                  # 0-255 units, per image
    """

    name = "cw"
    aliases: ClassVar[tuple[str, ...]] = ("carlini-wagner", "cw-l2")
    family = "minimum-norm"
    rank = 20
    summary = "smallest L2 change: Adam + binary search over c (Carlini & Wagner 2017)"
    norms: tuple[Norm, ...] = ("l2",)
    minimum_norm = True

    def __init__(
        self,
        *,
        steps: int = 200,
        lr: float = 0.01,
        c: float = 10.0,
        c_growth: float = 3.0,
        binary_search_steps: int = 9,
        search_tolerance: float = 0.01,
        kappa: float = 0.05,
        patience: int = 20,
        early_stop: bool = True,
        seed: int | None = 0,
    ) -> None:
        check_positive("steps", steps, integer=True)
        check_positive("lr", lr)
        check_positive("c", c)
        check_positive("binary_search_steps", binary_search_steps, integer=True)
        check_positive("patience", patience, integer=True)
        check_positive("c_growth", c_growth)
        if c_growth < 1:
            raise InvalidArgumentError(f"c_growth must be 1 (off) or more, got {c_growth}")
        check_unit("search_tolerance", search_tolerance)
        check_margin("kappa", kappa)
        self.steps = int(steps)
        self.lr = float(lr)
        self.c = float(c)
        self.c_growth = float(c_growth)
        self.binary_search_steps = int(binary_search_steps)
        self.search_tolerance = float(search_tolerance)
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
    ) -> Tracker:
        batch = images.shape[0]
        device = images.device
        tracker = Tracker(images, goal, early_stop=False)
        search = ConstantSearch(self.c, batch, device)
        state = _State(
            kappa=torch.full((batch,), self.kappa, device=device),
            best_dist=torch.full((batch,), math.inf, device=device),
        )
        searching = torch.ones(batch, dtype=torch.bool, device=device)
        for run in range(self.binary_search_steps):
            index = searching.nonzero().squeeze(1)
            if not len(index):
                break
            grow = ~search.bounded(index) if self.c_growth > 1 else None
            before = state.best_dist[index].clone()
            found, used = self._descend(
                model, images, goal, index, search.c[index].float(), grow, state, tracker,
                progress, run,
            )  # fmt: skip
            search.update(index, found, used)
            if self.early_stop:
                gain = 1 - (state.best_dist[index] / before).sqrt()  # relative, on the L2
                searching[index] = ~search.settled(index, found, gain, self.search_tolerance)
        tracker.done = torch.isfinite(state.best_dist)
        tracker.finish(lambda x, _: quantize(x), tracker.best)
        return tracker

    def _descend(
        self,
        model: Classifier,
        images: torch.Tensor,
        goal: Goal,
        index: torch.Tensor,
        c: torch.Tensor,
        grow: torch.Tensor | None,
        state: _State,
        tracker: Tracker,
        progress: ProgressCallback | None,
        run: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One run of Adam for the images ``index`` from the images themselves.

        Returns whether each image met the goal (8-bit) in this run, and the constant it ended
        the run with (its ``c`` grown where ``grow`` allows).
        """
        count = len(index)
        device = images.device
        originals = images[index]
        sub_goal = goal.subset(index)
        # Start at the image itself: atanh of the pixels, pulled off the edges of [0, 1] by less
        # than half an 8-bit level (they still round to themselves). The usual 1e-6 would park
        # black and white pixels where tanh is flat: hundreds of Adam steps before they move.
        start = (originals * 2 - 1) * (1 - _EDGE)
        w = torch.atanh(start).clone().requires_grad_(True)
        optimiser = torch.optim.Adam([w], lr=self.lr)
        found = torch.zeros(count, dtype=torch.bool, device=device)
        stale = torch.zeros(count, dtype=torch.long, device=device)
        run_best = torch.full((count,), math.inf, device=device)
        run_float = torch.full((count,), math.inf, device=device)  # its float distance
        running = torch.ones(count, dtype=torch.bool, device=device)
        last_loss = torch.full((count,), math.inf, device=device)
        last_margin = torch.full((count,), -math.inf, device=device)
        last_hit = torch.full((count,), -1, dtype=torch.long, device=device)
        checkpoint = max(1, self.steps // 10)
        for step in range(self.steps):
            local = running.nonzero().squeeze(1)
            if not len(local):
                break
            rows = index[local]
            x = (torch.tanh(w[local]) + 1) / 2
            logits = model(x)
            margin = sub_goal.subset(local).margin(logits)
            dist = (x - originals[local]).flatten(1).square().sum(dim=1)
            loss = dist + c[local] * (reachable(state.kappa[rows], goal) - margin).clamp_min(0)
            optimiser.zero_grad(set_to_none=True)
            loss.sum().backward()  # type: ignore[no-untyped-call]
            tracker.count(rows, forwards=1, gradients=1)

            with torch.no_grad():
                xa = x.detach()
                margin = margin.detach()
                # The best float iterate by margin: the fallback of images never successful.
                never = ~torch.isfinite(state.best_dist[rows])
                better = (margin > tracker.best_margin[rows]) & never
                tracker.best_margin[rows[better]] = margin[better]
                tracker.best[rows[better]] = xa[better]
                # Candidates: past the goal in float, and 1 % closer (float) than the last one
                # that met it in this run.
                closer = dist.detach() < _GATE * run_float[local]
                hopeful = ((margin > 0) & closer).nonzero().squeeze(1)
                improved = torch.zeros(len(local), dtype=torch.bool, device=device)
                if len(hopeful):
                    chosen = local[hopeful]
                    rounded = quantize(xa[hopeful])
                    met = sub_goal.subset(chosen).met(model(rounded))
                    tracker.count(index[chosen])
                    found[chosen[met]] = True
                    last_hit[chosen[met]] = step
                    rounded_dist = (rounded - originals[chosen]).flatten(1).square().sum(dim=1)
                    gain = met & (rounded_dist < run_best[chosen])
                    run_best[chosen[gain]] = rounded_dist[gain]
                    run_float[chosen[met]] = dist.detach()[hopeful][met]
                    improved[hopeful[gain]] = True
                    keep = met & (rounded_dist < state.best_dist[index[chosen]])
                    winners = index[chosen[keep]]
                    state.best_dist[winners] = rounded_dist[keep]
                    tracker.adversarial[winners] = rounded[keep]
                    # Rounding lost the goal: ask for more margin, so the float optimum moves
                    # away from the decision boundary by more than the rounding noise.
                    state.kappa[index[chosen[~met]]] += 0.1
                stale[local] = torch.where(improved, 0, stale[local] + 1)
                if (step + 1) % checkpoint == 0:
                    if grow is not None:
                        # Grow c where no 8-bit success came in the last tenth of the run and,
                        # at its pace over that tenth, the margin would not reach what is
                        # asked of it by the end of the run.
                        pace = margin - last_margin[local]
                        left = (self.steps - step - 1) / checkpoint
                        wanted = reachable(state.kappa[rows], goal)
                        late = margin + pace * left <= wanted
                        idle = last_hit[local] <= step - checkpoint
                        stuck = grow[local] & idle & late
                        c[local[stuck]] *= self.c_growth
                    last_margin[local] = margin
                    # The paper's abort: a run with a fixed c whose loss has stopped falling.
                    fixed = ~found[local] if grow is None else ~found[local] & ~grow[local]
                    now = loss.detach()
                    flat = fixed & (now > 0.9999 * last_loss[local])
                    last_loss[local] = now
                    if self.early_stop:
                        running[local[flat]] = False
                if self.early_stop:
                    running &= ~(found & (stale >= self.patience))
            optimiser.step()
            if progress is not None:
                with torch.no_grad():
                    prob = logits[:1].softmax(dim=1)[0, sub_goal.classes[local[0]]]
                done = int(torch.isfinite(state.best_dist).sum())
                total = self.steps * self.binary_search_steps
                at = run * self.steps + step + 1
                progress(Progress(at, total, done, len(images), float(prob)))
        return found, c


class _State:
    """Per-image state that lasts across the runs: the margin asked for and the best distance."""

    def __init__(self, kappa: torch.Tensor, best_dist: torch.Tensor) -> None:
        self.kappa = kappa
        self.best_dist = best_dist
