"""The bookkeeping every attack repeats: which images are done, the best so far, the counts.

An attack's :meth:`~trompe.attacks.base.Attack._run` creates one :class:`Tracker` for the batch
it is given and returns it; the engine (:meth:`~trompe.attacks.base.Attack.__call__`) reads the
adversarial images and the per-image counters from it, checks the budget and the query counts,
and builds the :class:`~trompe.attacks.result.AttackResult`.

The contract, per image ``i`` of the batch:

- ``adversarial[i]`` is what the attack returns: on the 8-bit grid, in [0, 1] and, for a
  fixed-budget attack, within the budget. :meth:`Tracker.accept` freezes an image that meets its
  goal there; :meth:`Tracker.finish` rounds the fallback of the others into it.
- ``done[i]`` says the goal is met on ``adversarial[i]`` (checked on the 8-bit image).
- ``forwards[i]`` counts every model evaluation of image ``i`` (for a scores- or labels-only
  attack these are its queries, and the engine checks the total against the oracle's count);
  ``gradients[i]`` counts backward passes and ``steps[i]`` the attack's steps.

Example:
    A minimal random-search attack's ``_run``::

        tracker = Tracker(images, goal, early_stop=True)
        for step in range(self.steps):
            index = tracker.active()
            if not len(index):
                break
            candidates = self.round_into_budget(images[index] + noise(index), images[index])
            logits = model(candidates)
            tracker.count(index)
            tracker.accept(index, candidates, goal.subset(index).met(logits))
            tracker.report(progress, step + 1, self.steps)
        tracker.finish(round_fn, images)
        return tracker
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from trompe.attacks.goal import Goal
from trompe.errors import GradientMaskingWarning

__all__ = ["Progress", "ProgressCallback", "RoundFn", "Tracker", "watch_gradients"]


@dataclass(frozen=True)
class Progress:
    """What an attack reports after each step, for progress bars.

    Attributes:
        step: steps done so far.
        steps: the step budget.
        done: images whose goal is met (on their 8-bit version).
        total: images in the batch.
        goal_prob: probability of the goal class of the first image still running (the target,
            or for an untargeted goal the true class), or of the first image if all are done.
    """

    step: int
    steps: int
    done: int
    total: int
    goal_prob: float


ProgressCallback = Callable[[Progress], None]

#: ``round_fn(x, index)``: round the float iterates ``x`` of batch images ``index`` into the
#: budget and onto the 8-bit grid (usually ``attack.round_into_budget(x, images[index])``).
RoundFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Tracker:
    """Per-image bookkeeping of one attack run.

    Holds, per image: whether the goal is met on the 8-bit image (then that image is frozen in
    ``adversarial`` and, with early stopping, leaves the batch), the float iterate with the
    best goal margin so far (the fallback for images that never make it), and counters of
    steps, forward and backward passes.

    Args:
        images: (B, 3, H, W) the images the run attacks (those that do not meet the goal yet).
        goal: their goal, one class per image.
        early_stop: whether images leave the batch (:meth:`active`) once their goal is met.
        keep_best: keep the best iterate in :meth:`observe`; loops that return their last
            iterate turn it off (``best`` then stays the original images).

    Attributes:
        adversarial: (B, 3, H, W) the images the run returns; starts as a copy of ``images``.
        done: (B,) bool, the goal is met on ``adversarial``.
        best: (B, 3, H, W) the float iterate with the best margin seen by :meth:`observe`.
        best_margin: (B,) its goal margin (``-inf`` before any observation).
        steps: (B,) long, on the CPU: steps taken (one per gradient by :meth:`count`).
        forwards: (B,) long, on the CPU: model evaluations (queries for an oracle).
        gradients: (B,) long, on the CPU: backward passes.
        goal_prob: the goal class's probability of the first running image, for progress.
        everyone: (B,) the indices of the whole batch. While every image runs, :meth:`active`
            returns this very tensor, and the methods given it skip their gathers, scatters and
            host copies: the full-batch fast path (callers can test ``index is everyone``).
    """

    def __init__(
        self, images: torch.Tensor, goal: Goal, early_stop: bool, *, keep_best: bool = True
    ) -> None:
        batch = images.shape[0]
        device = images.device
        self.goal = goal
        self.early_stop = early_stop
        self.keep_best = keep_best
        self.adversarial = images.clone()
        self.best = images.clone()
        self.best_margin = torch.full((batch,), -math.inf, device=device)
        self.done = torch.zeros(batch, dtype=torch.bool, device=device)
        self.steps = torch.zeros(batch, dtype=torch.long)
        self.forwards = torch.zeros(batch, dtype=torch.long)
        self.gradients = torch.zeros(batch, dtype=torch.long)
        self.everyone = torch.arange(batch, device=device)
        self._goal_prob = math.nan
        # The logits row and class of the last observation, turned into goal_prob only when
        # read (a softmax and a host sync that a run without a progress callback never needs).
        self._prob_source: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def goal_prob(self) -> float:
        """The goal class's probability for the first running image at the last observation."""
        if self._prob_source is not None:
            logits, classes = self._prob_source
            self._goal_prob = float(logits.softmax(dim=1)[0, classes[0]])
            self._prob_source = None
        return self._goal_prob

    @goal_prob.setter
    def goal_prob(self, value: float) -> None:
        self._goal_prob = value
        self._prob_source = None

    def active(self) -> torch.Tensor:
        """Indices of the images still running: those not done, or all without early stopping
        (:attr:`everyone` itself while all run)."""
        if not self.early_stop:
            return self.everyone
        index = (~self.done).nonzero().squeeze(1)
        return self.everyone if len(index) == len(self.everyone) else index

    def pending(self) -> torch.Tensor:
        """Indices of the images whose goal is not met yet (whatever ``early_stop`` says)."""
        return (~self.done).nonzero().squeeze(1)

    def count(
        self,
        index: torch.Tensor,
        *,
        forwards: int | torch.Tensor = 1,
        gradients: int = 0,
        backwards: int | None = None,
    ) -> None:
        """Count ``forwards`` model evaluations and ``gradients`` backward passes (each one
        step) for every image of ``index``; ``forwards`` may be a per-image (N,) tensor.
        ``backwards``, when given, is the number of backward passes those ``gradients`` steps
        took (EOT's views, VT's neighbours: several per step)."""
        taken = gradients if backwards is None else backwards
        if index is self.everyone:  # no copy of the index to the host (a sync on a GPU)
            self.forwards += forwards if isinstance(forwards, int) else forwards.cpu()
            self.gradients += taken
            self.steps += gradients
            return
        cpu = index.cpu()
        self.forwards[cpu] += forwards if isinstance(forwards, int) else forwards.cpu()
        self.gradients[cpu] += taken
        self.steps[cpu] += gradients

    def observe(
        self,
        model: Any,
        index: torch.Tensor,
        candidates: torch.Tensor,
        logits: torch.Tensor,
        round_fn: RoundFn,
        judge: Any = None,
    ) -> None:
        """Record the float iterates ``candidates`` of images ``index`` and their ``logits``.

        Keeps the best iterate per image (unless ``keep_best`` is off), and with early stopping
        checks the goal on the 8-bit version of the iterates whose float logits meet it: one
        extra forward pass for those images only (counted here). ``round_fn(x, index)`` rounds
        iterates into the budget. ``judge(rounded, goal)``, when given, replaces ``model``
        for that check (EOT's :class:`~trompe.attacks.gradient.Judge`: the goal must hold on
        several views); it spends ``judge.forwards`` evaluations per image.
        """
        everyone = index is self.everyone
        goal = self.goal if everyone else self.goal.subset(index)
        with torch.no_grad():
            logits = logits.detach().float()
            candidates = candidates.detach()
            if len(index):
                self._prob_source = (logits[:1], goal.classes[:1])
            if not self.keep_best and not self.early_stop:
                return
            margin = goal.margin(logits)
            # inf or NaN logits are never progress, let alone success (the engine refuses them).
            margin = torch.where(margin.isfinite(), margin, -math.inf)
            if self.keep_best:
                better = margin > self.best_margin[index]
                if everyone:  # the same values, without boolean indexing (host syncs)
                    self.best_margin = torch.where(better, margin, self.best_margin)
                    self.best = torch.where(better.view(-1, 1, 1, 1), candidates, self.best)
                else:
                    self.best_margin[index[better]] = margin[better]
                    self.best[index[better]] = candidates[better]
            if not self.early_stop:
                return
            hopeful = (margin > 0).nonzero().squeeze(1)
            if not len(hopeful):
                return
            chosen = index[hopeful]
            rounded = round_fn(candidates[hopeful], chosen)
            hoping = goal.subset(hopeful)
            if judge is None:
                met = hoping.met(model(rounded))
                self.count(chosen)
            else:
                met = hoping.met(judge(rounded, hoping))
                self.count(chosen, forwards=judge.forwards)
            self.done[chosen[met]] = True
            self.adversarial[chosen[met]] = rounded[met]

    def accept(self, index: torch.Tensor, candidates: torch.Tensor, met: torch.Tensor) -> None:
        """Freeze the images ``index[met]``: their (8-bit, in-budget) ``candidates[met]`` meet
        the goal, as the caller checked on exactly those images."""
        winners = index[met]
        if len(winners):
            self.done[winners] = True
            self.adversarial[winners] = candidates[met]

    def report(
        self,
        progress: ProgressCallback | None,
        step: int,
        steps: int,
        goal_prob: float | None = None,
    ) -> None:
        """Call ``progress`` (when given) with the run's state after ``step`` of ``steps``.

        ``goal_prob`` updates :attr:`goal_prob` first; by default the last value stands.
        """
        if goal_prob is not None:
            self.goal_prob = goal_prob
        if progress is not None:
            done = int(self.done.sum())
            progress(Progress(step, steps, done, len(self.done), self.goal_prob))

    def finish(self, round_fn: RoundFn, fallback: torch.Tensor) -> None:
        """Round ``fallback`` (best or last iterates) into ``adversarial`` for images not done."""
        pending = (~self.done).nonzero().squeeze(1)
        if len(pending):
            self.adversarial[pending] = round_fn(fallback[pending], pending)


@contextlib.contextmanager
def watch_gradients(model: torch.nn.Module, attack: str, batch: torch.Tensor) -> Iterator[None]:
    """Warn (:class:`~trompe.errors.GradientMaskingWarning`) once if the first gradients that
    reach ``model``'s input are all zero or not finite for some images.

    The engine (:meth:`~trompe.attacks.base.Attack.__call__`) wraps every gradient attack's
    run in it, so no attack has to remember the check: while it is active, a forward pre-hook
    gives each input that requires a gradient a hook of its own (on an alias, so that what the
    attack adds outside the model, such as C&W's distance term, is not mixed in). The gradients
    of the model's output that arrive there are checked until they have covered as many rows
    as the batch has images (usually the first one does; DI-FGSM splits its first step in two),
    and no later ones: once an image meets its goal, a clamped loss (C&W's, EAD's) has a zero
    gradient by design.

    Args:
        model: the classifier the attack runs on.
        attack: its name, for the message.
        batch: the positions in the caller's batch of the images the attack runs on; the
            message names them when one gradient covers them all.
    """
    state = _GradientCheck(attack, batch)

    def alias(module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if state.finished or not args or not torch.is_grad_enabled():
            return None
        x = args[0]
        if not isinstance(x, torch.Tensor) or not x.requires_grad:
            return None
        x = x.view_as(x)
        x.register_hook(state.check)  # type: ignore[no-untyped-call]
        return (x, *args[1:])

    handle = model.register_forward_pre_hook(alias)
    try:
        yield
    finally:
        handle.remove()
    state.finish()  # not on an error: the error says more


class _GradientCheck:
    """The gradients :func:`watch_gradients` has seen, and the one warning it gives."""

    def __init__(self, attack: str, batch: torch.Tensor) -> None:
        self.attack = attack
        self.batch = batch
        self.finished = False
        self.rows = self.zero = self.not_finite = 0
        self.bad: torch.Tensor | None = None  # positions of bad rows, when one grad covers all

    def check(self, grad: torch.Tensor) -> None:
        """Count the bad rows of one gradient of the model's input (an autograd hook)."""
        if self.finished:
            return
        with torch.no_grad():
            flat = grad.detach().flatten(1)
            finite = flat.isfinite().all(dim=1)
            zero = finite & (flat == 0).all(dim=1)
            if not self.rows and len(flat) == len(self.batch):
                self.bad = (~finite | zero).nonzero().squeeze(1)
            self.rows += len(flat)
            self.zero += int(zero.sum())
            self.not_finite += int((~finite).sum())
        if self.rows >= len(self.batch):
            self.finish()

    def finish(self) -> None:
        """Warn once, if any row seen was bad."""
        if self.finished:
            return
        self.finished = True
        count = self.zero + self.not_finite
        if not count:
            return
        shown = ""
        if self.bad is not None:
            images = self.batch[self.bad.to(self.batch.device)].tolist()
            listed = ", ".join(str(i) for i in images[:5]) + (", ..." if len(images) > 5 else "")
            shown = f" ({'images' if len(images) > 1 else 'image'} {listed} among them)"
        what = " or ".join(
            name for name, n in (("zero", self.zero), ("not finite", self.not_finite)) if n
        )
        warnings.warn(
            GradientMaskingWarning(
                f"attack {self.attack!r}: the model's gradient is {what} for {count} of "
                f"{self.rows} images attacked{shown}: masked or saturated gradients, so a "
                "failure there says little about robustness; try a score-based attack "
                "(square) or check the model for non-differentiable layers"
            ),
            stacklevel=2,
        )
