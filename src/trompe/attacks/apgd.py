"""Auto-PGD: projected gradient ascent that sets its own step size (APGD-CE, APGD-DLR, APGD-T).

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020, arXiv:2003.01690.

Threat model: L-inf or L2 ball of radius ``eps`` around each image; white box (gradients).

The method in short. Plain PGD needs a step size, and a poor one (too large: it oscillates;
too small: it crawls) is the commonest reason for an evaluation to overrate a model. APGD
starts with a large step, twice the budget, and halves it only when progress stalls. The
budget of ``N`` iterations is cut at checkpoints ``w_j = ceil(p_j N)`` with ``p_0 = 0``,
``p_1 = 0.22`` and ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``: long phases at first,
then shorter ones. At each checkpoint, an image's step is halved, and its run restarts from the
point of highest loss seen so far, when (a) fewer than a fraction ``rho = 0.75`` of the steps
since the last checkpoint raised the loss, or (b) neither the step size nor the best loss
changed since the last checkpoint. Each step is a projected gradient step (the sign of the
gradient for L-inf, the gradient scaled to unit L2 length for L2) blended with the previous
move: ``z = P(x_k + eta * step(grad))``, ``x_{k+1} = P(x_k + alpha (z - x_k) + (1 - alpha)
(x_k - x_{k-1}))`` with ``alpha = 0.75`` (momentum), the first step taken in full.

Losses. APGD-CE ascends the cross-entropy of the true class. APGD-DLR ascends the difference of
logits ratio, ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)`` (``pi`` sorts the logits in
decreasing order), which does not change when the logits are shifted or scaled, so it sees
through models whose softmax saturates and starves the cross-entropy of gradient. APGD-T runs
the targeted DLR loss ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`` towards each of the
``targets`` classes that the model ranks highest after the true one, in turn, on the images
that are still classified correctly: the strongest of the three in the paper, and the one
AutoAttack uses.

trompe's version follows the paper and the authors' reference implementation (100 iterations,
one restart, a random start), with what the engine adds to every attack: each image stops as
soon as its 8-bit version meets the goal (checked with one forward pass), the best iterate is
kept as the fallback, and the output is rounded to 8 bits within the budget. Targeted goals
(a class chosen per image) work with every variant: APGD-CE ascends the log-probability of the
target, APGD-DLR and APGD-T the targeted DLR loss in which ``z_y`` is the largest logit other
than the target's. Two details follow the reference rather than the paper's text: condition
(b) is not tested at the first checkpoint, and a run restarted from its best point keeps the
gradient computed there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F

from trompe.attacks.base import (
    FixedBudgetAttack,
    Norm,
    Progress,
    ProgressCallback,
    check_positive,
    l2_normalise,
    seen_pixels,
)
from trompe.attacks.goal import Goal
from trompe.attacks.tracker import Tracker
from trompe.errors import InvalidArgumentError
from trompe.models.classifier import Classifier

__all__ = ["APGD", "APGDDLR", "APGDT", "checkpoints", "dlr_loss", "targeted_dlr_loss"]

Loss = Literal["ce", "dlr"]
LOSSES: tuple[str, ...] = ("ce", "dlr")

# A per-image loss to ascend: (logits of some images, their indices in the batch) -> (n,).
_LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def checkpoints(steps: int) -> list[int]:
    """The iterations at which APGD may halve its step, for a run of ``steps`` iterations.

    ``w_j = ceil(p_j * steps)`` with ``p_0 = 0``, ``p_1 = 0.22`` and ``p_{j+1} = p_j +
    max(p_j - p_{j-1} - 0.03, 0.06)``; only those strictly between 0 and ``steps`` are returned
    (the ones at which a decision can still matter), without repeats.

    Example:
        >>> checkpoints(100)
        [22, 41, 57, 70, 80, 87, 93, 99]
    """
    # In hundredths, so that 0.22 + 0.19 is exactly 0.41 and the ceilings come out right.
    previous, current = 0, 22
    found: list[int] = []
    while True:
        at = -(-current * steps // 100)
        if at >= steps:
            return found
        if at > 0 and (not found or at > found[-1]):
            found.append(at)
        previous, current = current, current + max(current - previous - 3, 6)


def _sorted_logits(logits: torch.Tensor) -> torch.Tensor:
    return logits.sort(dim=1, descending=True).values


def dlr_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The difference of logits ratio, per image (higher: further from the class ``labels``).

    ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)`` where ``pi`` orders the logits from
    the largest. Positive exactly when the image is misclassified. Needs at least 3 classes.

    Shape:
        - Input: (B, C) logits, (B,) class indices.
        - Output: (B,).
    """
    own = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf")).amax(dim=1)
    ordered = _sorted_logits(logits)
    loss: torch.Tensor = -(own - others) / (ordered[:, 0] - ordered[:, 2] + 1e-12)
    return loss


def targeted_dlr_loss(
    logits: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor | None = None
) -> torch.Tensor:
    """The targeted difference of logits ratio, per image (higher: closer to ``targets``).

    ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)``, with ``y`` the true class
    ``labels`` or, without labels, the class other than the target with the largest logit (then
    the loss is positive exactly when the target is the top-1 class). Needs at least 4 classes.

    Shape:
        - Input: (B, C) logits, (B,) targets, optional (B,) labels.
        - Output: (B,).
    """
    wanted = logits.gather(1, targets[:, None]).squeeze(1)
    if labels is None:
        own = logits.scatter(1, targets[:, None], float("-inf")).amax(dim=1)
    else:
        own = logits.gather(1, labels[:, None]).squeeze(1)
    ordered = _sorted_logits(logits)
    scale = ordered[:, 0] - (ordered[:, 2] + ordered[:, 3]) / 2 + 1e-12
    loss: torch.Tensor = -(own - wanted) / scale
    return loss


class APGD(FixedBudgetAttack):
    """Auto-PGD with the cross-entropy (``loss="ce"``, APGD-CE) or the DLR loss (APGD-DLR).

    Args:
        eps: the budget in [0, 1] units (``8 / 255`` for 8 pixel levels).
        norm: ``"linf"`` or ``"l2"``.
        loss: ``"ce"`` (cross-entropy; targeted goals: log-probability of the target) or
            ``"dlr"`` (difference of logits ratio; targeted goals: the targeted DLR loss).
        steps: iterations per run (default 100, as in the paper).
        restarts: runs per image from new random points, each on the images that have not
            met their goal yet (default 1, as in the reference).
        rho: at a checkpoint, the step is halved if fewer than this fraction of the steps
            since the last one raised the loss (default 0.75).
        momentum: the weight ``alpha`` of the new gradient step against the previous move
            (default 0.75; 1 turns the momentum off).
        random_start: start each run from a random point of the ball (default, as in the
            paper); without it, from the image itself.
        early_stop: stop each image as soon as its 8-bit version meets the goal. Without it,
            every image takes every step of a run, and the best iterate is returned.
        seed: seeds the random starts; ``None`` draws a fresh seed.

    Example:
        >>> attack = APGD(eps=8 / 255, loss="ce")
        >>> result = attack(clf, images, Untargeted(labels))  # doctest: +SKIP
    """

    name = "apgd-ce"
    aliases: ClassVar[tuple[str, ...]] = ("apgd",)
    rank = 40
    summary = "Auto-PGD, cross-entropy, self-tuned step size (Croce & Hein 2020)"

    def __init__(
        self,
        *,
        eps: float,
        norm: Norm = "linf",
        loss: Loss = "ce",
        steps: int = 100,
        restarts: int = 1,
        rho: float = 0.75,
        momentum: float = 0.75,
        random_start: bool = True,
        early_stop: bool = True,
        seed: int | None = 0,
    ) -> None:
        super().__init__(eps=eps, norm=norm)
        if loss not in LOSSES:
            raise InvalidArgumentError(
                f"loss must be one of {', '.join(LOSSES)} (cross-entropy or difference of "
                f"logits ratio), got {loss!r}"
            )
        check_positive("steps", steps, integer=True)
        check_positive("restarts", restarts, integer=True)
        check_positive("rho", rho)
        check_positive("momentum", momentum)
        if rho > 1:
            raise InvalidArgumentError(f"rho is a fraction of the steps, in (0, 1]; got {rho}")
        if momentum > 1:
            raise InvalidArgumentError(
                f"momentum is the weight of the new step, in (0, 1]; got {momentum}"
            )
        if restarts > 1 and not random_start:
            raise InvalidArgumentError("restarts need random_start=True: they would repeat")
        self.loss: str = loss
        self._loss: str = loss  # what the code reads: APGD-T has no public ``loss``
        self.steps = int(steps)
        self.restarts = int(restarts)
        self.rho = float(rho)
        self.momentum = float(momentum)
        self.random_start = bool(random_start)
        self.early_stop = bool(early_stop)
        self.seed = seed

    # -- losses ------------------------------------------------------------------------------

    def _check_classes(self, num_classes: int, targeted_dlr: bool) -> None:
        needed = 4 if targeted_dlr else 3
        if self._loss == "dlr" and num_classes < needed:
            kind = "targeted " if targeted_dlr else ""
            raise InvalidArgumentError(
                f"attack {self.name!r}: the {kind}DLR loss needs a model with at least {needed} "
                f"classes, this one has {num_classes}; use apgd-ce"
            )

    def _loss_for(self, goal: Goal) -> _LossFn:
        """The loss to ascend for ``goal``, indexed like the batch of the call."""
        classes = goal.classes
        if self._loss == "ce":

            def ce(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
                value = F.cross_entropy(logits, classes[index], reduction="none")
                return -value if goal.targeted else value

            return ce

        def dlr(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
            if goal.targeted:
                return targeted_dlr_loss(logits, classes[index])
            return dlr_loss(logits, classes[index])

        return dlr

    # -- the attack ----------------------------------------------------------------------------

    def _run(
        self,
        model: Classifier,
        images: torch.Tensor,
        goal: Goal,
        progress: ProgressCallback | None,
    ) -> Tracker:
        self._check_classes(model.num_classes, goal.targeted)
        runner = _Runner(self, model, images, goal, progress, self.restarts)
        everyone = torch.arange(len(images), device=images.device)
        loss = self._loss_for(goal)
        for restart in range(self.restarts):
            if not runner.start(everyone, restart > 0):
                break
            runner.run(runner.pending(everyone), loss)
        return runner.finish()


class APGDDLR(APGD):
    """Auto-PGD with the difference of logits ratio loss (APGD-DLR); arguments as :class:`APGD`.

    The DLR loss is unchanged by shifting or scaling the logits, so it keeps its gradient on
    models whose softmax saturates. Needs a model with at least 3 classes (4 for a targeted
    goal).

    Example:
        >>> attack = APGDDLR(eps=8 / 255)
        >>> result = attack(clf, images, Untargeted(labels))  # doctest: +SKIP
    """

    name = "apgd-dlr"
    rank = 50
    summary = "Auto-PGD, difference of logits ratio loss (Croce & Hein 2020)"

    def __init__(
        self,
        *,
        eps: float,
        norm: Norm = "linf",
        loss: Loss = "dlr",
        steps: int = 100,
        restarts: int = 1,
        rho: float = 0.75,
        momentum: float = 0.75,
        random_start: bool = True,
        early_stop: bool = True,
        seed: int | None = 0,
    ) -> None:
        super().__init__(
            eps=eps,
            norm=norm,
            loss=loss,
            steps=steps,
            restarts=restarts,
            rho=rho,
            momentum=momentum,
            random_start=random_start,
            early_stop=early_stop,
            seed=seed,
        )


class APGDT(APGD):
    """APGD-T: Auto-PGD with the targeted DLR loss, towards the top classes in turn.

    With an untargeted goal, the attack runs towards the class the model ranks second on the
    clean image, then, on the images still classified correctly, towards the third, and so on
    for ``targets`` classes (each with ``restarts`` runs of ``steps`` iterations): any class
    other than the true one is a success. With a targeted goal it runs towards the given target
    of each image. Needs a model with at least 4 classes.

    Args:
        eps: the budget in [0, 1] units.
        norm: ``"linf"`` or ``"l2"``.
        targets: how many of the top other classes to try, in turn (default 9, as in the
            reference; at most the number of classes less one).
        steps: iterations per run (default 100).
        restarts: runs per target class from new random points (default 1).
        rho: the fraction of loss-raising steps below which the step is halved (0.75).
        momentum: the weight of the new gradient step against the previous move (0.75).
        random_start: start each run from a random point of the ball (default).
        early_stop: stop each image as soon as its 8-bit version meets the goal.
        seed: seeds the random starts.

    Example:
        >>> attack = APGDT(eps=8 / 255, targets=9)
        >>> result = attack(clf, images, Untargeted(labels))  # doctest: +SKIP
    """

    name = "apgd-t"
    aliases: ClassVar[tuple[str, ...]] = ("apgdt",)
    rank = 60
    summary = "Auto-PGD, targeted DLR loss over the top-k other classes (Croce & Hein 2020)"

    def __init__(
        self,
        *,
        eps: float,
        norm: Norm = "linf",
        targets: int = 9,
        steps: int = 100,
        restarts: int = 1,
        rho: float = 0.75,
        momentum: float = 0.75,
        random_start: bool = True,
        early_stop: bool = True,
        seed: int | None = 0,
    ) -> None:
        super().__init__(
            eps=eps,
            norm=norm,
            loss="dlr",
            steps=steps,
            restarts=restarts,
            rho=rho,
            momentum=momentum,
            random_start=random_start,
            early_stop=early_stop,
            seed=seed,
        )
        check_positive("targets", targets, integer=True)
        del self.loss  # always the targeted DLR loss: not a choice, so not a parameter
        self.targets = int(targets)

    def _run(
        self,
        model: Classifier,
        images: torch.Tensor,
        goal: Goal,
        progress: ProgressCallback | None,
    ) -> Tracker:
        self._check_classes(model.num_classes, targeted_dlr=True)
        if goal.targeted:
            return super()._run(model, images, goal, progress)
        targets = min(self.targets, model.num_classes - 1)
        runner = _Runner(self, model, images, goal, progress, self.restarts * targets)
        everyone = torch.arange(len(images), device=images.device)
        labels = goal.classes
        # The clean ranking of the classes other than the true one: one forward pass each.
        with torch.no_grad():
            logits = model(images)
        runner.tracker.count(everyone, forwards=1)
        others = logits.scatter(1, labels[:, None], float("-inf"))
        ranked = others.topk(targets, dim=1).indices  # (B, targets)
        first = True
        for rank in range(targets):
            wanted = ranked[:, rank]

            def loss(
                logits: torch.Tensor, index: torch.Tensor, wanted: torch.Tensor = wanted
            ) -> torch.Tensor:
                return targeted_dlr_loss(logits, wanted[index], labels[index])

            for _ in range(self.restarts):
                if not runner.start(everyone, not first):
                    return runner.finish()
                first = False
                runner.run(runner.pending(everyone), loss)
        return runner.finish()


class _Runner:
    """The APGD loop over the images of one attack call, shared by its restarts and targets."""

    def __init__(
        self,
        attack: APGD,
        model: Classifier,
        images: torch.Tensor,
        goal: Goal,
        progress: ProgressCallback | None,
        runs: int,
    ) -> None:
        self.attack = attack
        self.model = model
        self.images = images
        self.goal = goal
        self.progress = progress
        self.tracker = Tracker(images, goal, attack.early_stop)
        self.generator = attack._generator(images.device)
        self.seen = seen_pixels(model, images) if attack.random_start else None
        self.total = attack.steps * runs
        self.steps_done = 0
        self.checkpoints = set(checkpoints(attack.steps))

    def round_fn(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return self.attack.round_into_budget(x, self.images[index])

    def pending(self, index: torch.Tensor) -> torch.Tensor:
        """The images of ``index`` whose goal is not met yet."""
        return index[~self.tracker.done[index]]

    def start(self, index: torch.Tensor, again: bool) -> bool:
        """Before a run: whether any image of ``index`` still needs one.

        Without early stopping the goal is checked on the 8-bit version of each image's best
        iterate between runs (one forward pass each), so that the next run takes only the
        images that still need it, as in the reference.
        """
        tracker = self.tracker
        if again and not self.attack.early_stop:
            todo = self.pending(index)
            todo = todo[tracker.best_margin[todo] > 0]
            if len(todo):
                rounded = self.round_fn(tracker.best[todo], todo)
                with torch.no_grad():
                    met = tracker.goal.subset(todo).met(self.model(rounded))
                tracker.count(todo)
                tracker.done[todo[met]] = True
                tracker.adversarial[todo[met]] = rounded[met]
        return bool(len(self.pending(index)))

    def run(self, index: torch.Tensor, loss_fn: _LossFn) -> None:
        """One run of APGD (``steps`` iterations) on the images ``index`` of the batch."""
        attack, model, tracker = self.attack, self.model, self.tracker
        images = self.images[index]
        n = len(index)
        device = images.device
        if attack.random_start:
            x = attack.random_start_point(images, self.generator)
            if self.seen is not None:
                x = torch.where(self.seen[index], x, images)
        else:
            x = images.clone()
        everyone = torch.arange(n, device=device)

        def active() -> torch.Tensor:
            if not attack.early_stop:
                return everyone
            return everyone[~tracker.done[index]]

        def evaluate(pos: torch.Tensor, with_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
            """Loss and gradient (zeros without) at ``x[pos]``; counts and observes."""
            current = x[pos].requires_grad_(with_grad)
            with torch.set_grad_enabled(with_grad):
                logits = model(current)
                value = loss_fn(logits, index[pos])
                if with_grad:
                    (grad,) = torch.autograd.grad(value.sum(), current)
                else:
                    grad = torch.zeros_like(current)
            tracker.count(index[pos], forwards=1, gradients=int(with_grad))
            tracker.observe(model, index[pos], current.detach(), logits, self.round_fn)
            return value.detach(), grad

        pos = active()
        loss = torch.full((n,), -torch.inf, device=device)
        value, grad_pos = evaluate(pos, True)
        grad = torch.zeros_like(x)
        grad[pos] = grad_pos
        loss[pos] = value
        x_prev = x.clone()
        x_best = x.clone()
        grad_best = grad.clone()
        loss_best = loss.clone()
        step = torch.full((n,), 2 * attack.eps, device=device)
        increases = torch.zeros(n, device=device)
        best_at_check = loss_best.clone()
        reduced_last = torch.ones(n, dtype=torch.bool, device=device)
        last_check = 0

        for i in range(attack.steps):
            pos = active()
            if not len(pos):
                break
            with torch.no_grad():
                xi, base = x[pos], images[pos]
                direction = grad[pos].sign() if attack.norm == "linf" else l2_normalise(grad[pos])
                z = attack.project(xi + step[pos].view(-1, 1, 1, 1) * direction, base)
                alpha = 1.0 if i == 0 else attack.momentum
                moved = xi + alpha * (z - xi) + (1 - alpha) * (xi - x_prev[pos])
                x_prev[pos] = xi
                x[pos] = attack.project(moved, base)
            last = i == attack.steps - 1
            value, grad_pos = evaluate(pos, not last)
            with torch.no_grad():
                increases[pos] += (value > loss[pos]).float()
                loss[pos] = value
                grad[pos] = grad_pos
                better = value > loss_best[pos]
                improved = pos[better]
                loss_best[improved] = value[better]
                x_best[improved] = x[improved]
                grad_best[improved] = grad_pos[better]
                if i + 1 in self.checkpoints:
                    length = i + 1 - last_check
                    oscillating = increases < attack.rho * length
                    stuck = ~reduced_last & (loss_best <= best_at_check)
                    halve = oscillating | stuck
                    step[halve] /= 2
                    x[halve] = x_best[halve]
                    grad[halve] = grad_best[halve]
                    loss[halve] = loss_best[halve]
                    reduced_last = halve
                    best_at_check = loss_best.clone()
                    increases.zero_()
                    last_check = i + 1
            self.steps_done += 1
            if self.progress is not None:
                done = int(tracker.done.sum())
                self.progress(
                    Progress(self.steps_done, self.total, done, len(self.images), tracker.goal_prob)
                )

    def finish(self) -> Tracker:
        self.tracker.finish(self.round_fn, self.tracker.best)
        return self.tracker
