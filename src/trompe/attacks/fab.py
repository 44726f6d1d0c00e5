"""The fast adaptive boundary attack (FAB).

Croce & Hein, "Minimally distorted Adversarial Examples with a Fast Adaptive Boundary Attack",
ICML 2020, arXiv:1907.02044.

Threat model: the smallest change in L-inf, L2 or L1 that meets the goal; white box (gradients
of the logits). No budget and no step size: FAB walks along the decision boundary towards the
original image.

At each iterate ``x`` the boundary is replaced by its linear approximation: for an untargeted
goal the hyperplane ``h_k(x) + <grad h_k(x), z - x> = 0`` of each rival class ``k``, where
``h_k = logit_k - logit_true``, and the one whose distance ``|h_k| / ||grad h_k||_q`` is
smallest (``q`` the dual norm) is chosen. Both ``x`` and the original image ``x0`` are
projected onto that hyperplane within the box [0, 1] (exact projections, one per norm, see
:func:`project_on_hyperplane`), giving the moves ``d`` and ``d0``. The next iterate mixes the
two, biased towards the original::

    alpha = min(||d|| / (||d|| + ||d0||), alpha_max)
    x <- clip((1 - alpha) * (x + eta * d) + alpha * (x0 + eta * d0), 0, 1)

``eta`` > 1 overshoots the hyperplane a little. When ``x`` meets the goal it is recorded, and
it is pulled back towards the original, ``x <- x0 + beta * (x - x0)``, so that the next steps
search closer to ``x0``. Restarts begin from random points at half the best norm found so far
(or ``eps``) around ``x0``.

Where trompe departs from the reference implementation, and why:

- Untargeted, the rivals are the ``candidates`` classes most likely at the original image
  (default 9: every class of a ten-class problem, as in the paper). The reference takes the
  gradient of every class, which is 1000 backward passes per step on ImageNet.
- Targeted (a target per image, chosen by the user), the boundary linearised is that of the
  target's log-odds, ``logit_t - logsumexp_{k != t} logit_k``: positive only where the target
  is top-1, and smooth. The reference's targeted FAB linearises ``logit_t - logit_true`` and
  counts any change of label as a success; the natural fix, the target against its strongest
  rival, alternates between two rivals and never converges on some images (1 in 32 digits).
- With a confidence, each function is also capped by ``log p - log confidence``, so that its
  zero set is the boundary of the goal as :meth:`~trompe.attacks.goal.Goal.margin` defines it.
- 8 bits: an iterate that meets the goal in float counts only once its 8-bit rounding meets
  the goal too (a counted forward pass), and each image keeps the smallest such 8-bit change,
  measured on the 8-bit values. Small changes are lost to rounding (below half a level,
  rounding restores the original), so at the end the smallest float success of an image is
  enlarged step by step until its rounding meets the goal, if that beats its 8-bit best. An
  image whose 8-bit change is already one level of one channel, the smallest there is, stops.

Cost per step and image: one forward pass and one backward pass per linearised function
(``candidates`` untargeted, one targeted), one forward pass to test the new iterate, and one
for its 8-bit version when that is smaller than the best so far and the iterate met the goal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from trompe.attacks.base import (
    Attack,
    Norm,
    Progress,
    ProgressCallback,
    check_norm,
    check_positive,
    lp_norm,
    seen_pixels,
)
from trompe.attacks.goal import Goal, Targeted
from trompe.attacks.tracker import Tracker
from trompe.errors import InvalidArgumentError
from trompe.images import quantize
from trompe.models.classifier import Classifier

__all__ = ["FAB", "FABT", "project_on_hyperplane"]

#: The radius of the random restarts when ``eps`` is not given, per norm, in [0, 1] units (the
#: reference implementation's defaults).
DEFAULT_EPS: dict[str, float] = {"linf": 0.3, "l2": 1.0, "l1": 5.0}


def project_on_hyperplane(
    points: torch.Tensor, w: torch.Tensor, r: torch.Tensor, norm: Norm
) -> torch.Tensor:
    """The smallest move ``d`` in ``norm`` with ``<w, d> = r`` and ``points + d`` in [0, 1].

    That is the projection of each point onto the hyperplane ``<w, z> = <w, point> + r`` within
    the box. Where the box does not reach the hyperplane, the move that comes closest is
    returned (every coordinate pushed to the bound that helps). Coordinates with ``w = 0``
    never move.

    L-inf and L2 have the same shape of solution, ``d_i = sign(w_i) min(s a_i, room_i)`` with
    ``a_i = 1`` (L-inf) or ``|w_i|`` (L2), where ``room_i`` is the distance to the helpful bound;
    ``<w, d>`` grows piecewise linearly in ``s``, so ``s`` is found exactly from the sorted
    breakpoints ``room_i / a_i``. L1 fills the coordinates in order of decreasing ``|w_i|``,
    each up to its bound, until ``r`` is reached (the solution is sparse).

    Args:
        points: (N, D) points in [0, 1].
        w: (N, D) normals of the hyperplanes.
        r: (N,) the change of ``<w, z>`` wanted.
        norm: ``"linf"``, ``"l2"`` or ``"l1"``.

    Returns:
        (N, D) moves.
    """
    if norm not in ("linf", "l2", "l1"):
        raise InvalidArgumentError(f"FAB projects in linf, l2 or l1, not {norm!r}")
    # Make the wanted change non-negative: <-w, d> = -r is the same constraint.
    flip = torch.where(r < 0, -1.0, 1.0).to(w.dtype)
    w = w * flip[:, None]
    r = r * flip
    direction = torch.sign(w)
    room = torch.where(w > 0, 1 - points, points).clamp_min(0) * (w != 0)
    gain = w.abs()
    capacity = gain * room  # what each coordinate can add to <w, d> at most
    reachable = capacity.sum(dim=1) > r  # else: move every coordinate fully
    dims = w.shape[1]
    if norm == "l1":
        order = gain.argsort(dim=1, descending=True)
        filled = capacity.gather(1, order).cumsum(dim=1)
        k = (filled < r[:, None]).sum(dim=1, keepdim=True).clamp_max(dims - 1)
        before = torch.where(k > 0, filled.gather(1, (k - 1).clamp_min(0)), 0.0)
        partial = (r[:, None] - before) / gain.gather(1, order).gather(1, k).clamp_min(1e-30)
        rank = torch.arange(dims, device=w.device).expand_as(w)
        sorted_room = room.gather(1, order)
        amount = torch.where(rank < k, sorted_room, torch.where(rank == k, partial, 0.0))
        amount = torch.minimum(amount, sorted_room)
        move = torch.zeros_like(w).scatter(1, order, amount)
    else:
        scale = torch.ones_like(w) if norm == "linf" else gain
        breaks = torch.where(scale > 0, room / scale.clamp_min(1e-30), 0.0)
        breaks, order = breaks.sort(dim=1)
        slope = (gain * scale).gather(1, order)
        filled = capacity.gather(1, order).cumsum(dim=1)
        tail = slope.sum(dim=1, keepdim=True) - slope.cumsum(dim=1)
        value = filled + breaks * tail  # <w, d> when s sits at each breakpoint
        k = (value < r[:, None]).sum(dim=1, keepdim=True).clamp_max(dims - 1)
        before = torch.where(k > 0, filled.gather(1, (k - 1).clamp_min(0)), 0.0)
        tail_before = torch.where(
            k > 0, tail.gather(1, (k - 1).clamp_min(0)), slope.sum(dim=1, keepdim=True)
        )
        s = ((r[:, None] - before) / tail_before.clamp_min(1e-30)).clamp_min(0)
        move = torch.minimum(s * scale, room)
    move = torch.where(reachable[:, None], move, room)
    out: torch.Tensor = direction * move
    return out


def _dual_norm(grads: torch.Tensor, norm: Norm) -> torch.Tensor:
    """The dual norm of each gradient: (N, K, D) -> (N, K)."""
    if norm == "linf":
        size: torch.Tensor = grads.abs().sum(dim=-1)
    elif norm == "l2":
        size = grads.norm(dim=-1)
    else:
        size = grads.abs().amax(dim=-1)
    return size


class FAB(Attack):
    """The fast adaptive boundary attack: smallest L-inf, L2 or L1 change, targeted or not.

    Args:
        norm: ``"linf"``, ``"l2"`` or ``"l1"``: the norm minimised.
        steps: iterations per restart (default 100, as in the reference implementation and in
            AutoAttack; torchattacks defaults to 10).
        restarts: runs per image; the first starts at the image, the others at random points
            (default 1).
        eps: sizes the random restarts, in [0, 1] units: they start at distance
            ``min(eps, best norm found) / 2`` from the image (default per norm: 0.3, 1.0, 5.0,
            as in the reference); used only when ``restarts > 1``.
        alpha_max: the largest weight of the step from the original image (default 0.1).
        eta: overshoot of the projections (default 1.05).
        beta: the backward step: an iterate that meets the goal is pulled to
            ``x0 + beta * (x - x0)`` (default 0.9).
        candidates: untargeted: how many rival classes have their boundary linearised at each
            step, the most likely ones at the original image (default 9: all of them for ten
            classes, as in the paper; on ImageNet, the nine most likely, as AutoAttack's FAB-T).
            Each costs one backward pass per step. Targeted goals linearise one boundary.
        seed: seeds the random restarts.

    Example:
        >>> attack = FAB(norm="l2", steps=100)
        >>> result = attack(clf, images, Untargeted(labels))  # doctest: +SKIP
        >>> result.norms.l2  # 0-255 units, per image       # doctest: +SKIP
    """

    name = "fab"
    family = "minimum-norm"
    rank = 40
    summary = "fast adaptive boundary: projections on the linearised boundary (Croce & Hein 2020)"
    norms: tuple[Norm, ...] = ("linf", "l2", "l1")
    minimum_norm = True

    def __init__(
        self,
        *,
        norm: Norm = "linf",
        steps: int = 100,
        restarts: int = 1,
        eps: float | None = None,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
        candidates: int = 9,
        seed: int | None = 0,
    ) -> None:
        check_norm(self, norm)
        check_positive("steps", steps, integer=True)
        check_positive("restarts", restarts, integer=True)
        check_positive("candidates", candidates, integer=True)
        if eps is not None:
            check_positive("eps", eps)
            if norm == "linf" and eps > 1:
                raise InvalidArgumentError(
                    f"eps is in [0, 1] units in the Python API (10 / 255 for 10 pixel levels), "
                    f"got {eps}"
                )
        check_positive("alpha_max", alpha_max)
        if alpha_max > 1:
            raise InvalidArgumentError(f"alpha_max is a weight in (0, 1], got {alpha_max}")
        check_positive("eta", eta)
        if eta < 1:
            raise InvalidArgumentError(f"eta overshoots the hyperplane: it must be >= 1, got {eta}")
        check_positive("beta", beta)
        if beta >= 1:
            raise InvalidArgumentError(f"beta is a backward step: it must be in (0, 1), got {beta}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise InvalidArgumentError(f"seed must be a whole number or None, got {seed!r}")
        self.norm: Norm = norm
        self.steps = int(steps)
        self.restarts = int(restarts)
        self.eps = float(eps) if eps is not None else DEFAULT_EPS[norm]
        self.alpha_max = float(alpha_max)
        self.eta = float(eta)
        self.beta = float(beta)
        self.candidates = int(candidates)
        self.seed = seed

    # -- the linearised boundary -----------------------------------------------------------------

    def _boundaries(self, logits: torch.Tensor, goal: Goal, rivals: torch.Tensor) -> torch.Tensor:
        """Per image, the functions whose zero sets are the boundaries: > 0 on the goal side.

        Untargeted: ``logit_k - logit_true`` for each rival ``k`` (with a confidence, also at
        most ``log p_k - log confidence``), so that the goal's margin is their maximum.
        Targeted: the log-odds of the target, ``logit_t - logsumexp_{k != t} logit_k`` (with a
        confidence, also at most ``log p_t - log confidence``): one smooth function, positive
        only where the goal is met. Shape: (B, C) -> (B, K).
        """
        if goal.targeted:
            target = goal.classes[:, None]
            others = logits.scatter(1, target, -math.inf).logsumexp(dim=1, keepdim=True)
            odds = logits.gather(1, target) - others
            if goal.confidence is None:
                return odds
            log_prob = logits.log_softmax(dim=1).gather(1, target)
            return torch.minimum(odds, log_prob - math.log(goal.confidence))
        own = logits.gather(1, goal.classes[:, None])
        lead = logits.gather(1, rivals) - own
        if goal.confidence is None:
            return lead
        log_probs = logits.log_softmax(dim=1).gather(1, rivals)
        return torch.minimum(lead, log_probs - math.log(goal.confidence))

    def _linearise(
        self, model: Classifier, x: torch.Tensor, goal: Goal, rivals: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The boundary values and their gradients (N, K, D) at ``x``, and the rivals used.

        ``rivals=None`` (untargeted, first step, where ``x`` is the original image) takes the
        ``candidates`` most likely other classes at ``x``.
        """
        current = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(current)
            if rivals is None and goal.targeted:
                rivals = goal.classes[:, None]  # unused: a targeted goal has one boundary
            elif rivals is None:
                count = min(self.candidates, logits.shape[1] - 1)
                others = logits.detach().scatter(1, goal.classes[:, None], -math.inf)
                rivals = others.topk(count, dim=1).indices
            values = self._boundaries(logits, goal, rivals)
            grads = []
            count = values.shape[1]
            for k in range(count):
                (grad,) = torch.autograd.grad(
                    values[:, k].sum(), current, retain_graph=k + 1 < count
                )
                grads.append(grad.flatten(1))
        return values.detach(), torch.stack(grads, dim=1), rivals

    # -- the attack -------------------------------------------------------------------------------

    def _restart_point(
        self, images: torch.Tensor, radius: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """A random point at distance ``radius / 2`` of each image (before clipping)."""
        shape, device = images.shape, images.device
        if self.norm == "linf":
            noise = 2 * torch.rand(shape, generator=generator, device=device) - 1
        else:
            noise = torch.randn(shape, generator=generator, device=device)
        size = lp_norm(noise, self.norm).clamp_min(1e-12)
        delta = noise * (radius / 2 / size).view(-1, 1, 1, 1)
        return (images + delta).clamp(0.0, 1.0)

    def _run(
        self,
        model: Classifier,
        images: torch.Tensor,
        goal: Goal,
        progress: ProgressCallback | None,
    ) -> Tracker:
        return self._search(model, images, goal, goal, progress)

    def _search(
        self,
        model: Classifier,
        images: torch.Tensor,
        goal: Goal,
        aim: Goal,
        progress: ProgressCallback | None,
    ) -> Tracker:
        """The FAB run: linearise the boundary of ``aim``, count success by ``goal``.

        :class:`FAB` aims at its goal; :class:`FABT` aims at one class at a time (a targeted
        ``aim``) while any misclassification counts (an untargeted ``goal``).
        """
        batch = images.shape[0]
        tracker = Tracker(images, goal, early_stop=False)
        state = _State.start(images)
        generator = self._generator(images.device)
        seen = seen_pixels(model, images) if self.restarts > 1 else None
        rivals: torch.Tensor | None = None  # untargeted: fixed at the first step
        total = self.steps * self.restarts
        for restart in range(self.restarts):
            if restart == 0:
                x = images.clone()
            else:
                radius = state.best_float.clamp_max(self.eps)
                x = self._restart_point(images, radius, generator)
                if seen is not None:
                    x = torch.where(seen, x, images)
            for step in range(self.steps):
                # An image whose best 8-bit change is one level of one channel is finished.
                index = (state.best > 1 / 255 + 1e-6).nonzero().squeeze(1)
                if not len(index):
                    break
                sub_rivals = None if rivals is None else rivals[index]
                values, grads, used = self._linearise(
                    model, x[index], aim.subset(index), sub_rivals
                )
                if rivals is None:
                    rivals = used  # the first step runs on every image, at the original
                cpu = index.cpu()
                tracker.forwards[cpu] += 1
                tracker.gradients[cpu] += values.shape[1]
                tracker.steps[cpu] += 1
                with torch.no_grad():
                    x[index] = self._step(x[index], images[index], values, grads)
                    x[index] = self._record(model, tracker, state, x[index], images, index)
                if progress is not None:
                    done = int(tracker.done.sum())
                    at = restart * self.steps + step + 1
                    progress(Progress(at, total, done, batch, tracker.goal_prob))
        with torch.no_grad():
            self._repair(model, tracker, state, images)
        tracker.finish(lambda candidates, _: quantize(candidates), tracker.best)
        return tracker

    def _step(
        self,
        x: torch.Tensor,
        images: torch.Tensor,
        values: torch.Tensor,
        grads: torch.Tensor,
    ) -> torch.Tensor:
        """One FAB step: project the iterates and the originals, mix, overshoot, clip."""
        n = len(x)
        here = x.flatten(1)
        start = images.flatten(1)
        # The closest linearised boundary (in the attack's norm, ignoring the box).
        distance = values.abs() / (_dual_norm(grads, self.norm) + 1e-12)
        chosen = distance.argmin(dim=1)
        rows = torch.arange(n, device=x.device)
        w = grads[rows, chosen]
        value = values[rows, chosen]
        # The hyperplane value + <w, z - here> = 0, reached from here and from the original.
        wanted_here = -value
        wanted_start = -value - (w * (start - here)).sum(dim=1)
        moves = project_on_hyperplane(
            torch.cat((here, start)),
            torch.cat((w, w)),
            torch.cat((wanted_here, wanted_start)),
            self.norm,
        )
        move_here, move_start = moves[:n], moves[n:]
        size_here = lp_norm(move_here, self.norm).clamp_min(1e-8)
        size_start = lp_norm(move_start, self.norm).clamp_min(1e-8)
        alpha = (size_here / (size_here + size_start)).clamp(0, self.alpha_max)[:, None]
        mixed = (1 - alpha) * (here + self.eta * move_here) + alpha * (
            start + self.eta * move_start
        )
        return mixed.clamp(0.0, 1.0).view_as(x)

    def _record(
        self,
        model: Classifier,
        tracker: Tracker,
        state: _State,
        x: torch.Tensor,
        images: torch.Tensor,
        index: torch.Tensor,
    ) -> torch.Tensor:
        """Test the new iterates ``x`` of images ``index``; keep successes; step them back."""
        goal = tracker.goal.subset(index)
        logits = model(x)
        tracker.count(index, forwards=1)
        margin = goal.margin(logits)
        tracker.goal_prob = float(logits[:1].softmax(dim=1)[0, goal.classes[0]])
        fallback = (margin > tracker.best_margin[index]) & ~tracker.done[index]
        tracker.best_margin[index[fallback]] = margin[fallback]
        tracker.best[index[fallback]] = x[fallback]
        met = margin > 0
        if not bool(met.any()):
            return x
        winners = index[met]
        origin = images[winners]
        size = lp_norm(x[met] - origin, self.norm)
        smaller = size < state.best_float[winners]
        state.best_float[winners[smaller]] = size[smaller]
        state.best_iterate[winners[smaller]] = x[met][smaller]
        # The 8-bit version counts only if it meets the goal (one more forward pass), and is
        # tried only if it is smaller than the best 8-bit success so far.
        rounded = self._try_8bit(model, tracker, state, images, winners, quantize(x[met]))
        # Lost to rounding: try once more with the largest coordinate half a level further
        # (below half a level everywhere, rounding gives the original back).
        lost = ~rounded
        if bool(lost.any()):
            delta = x[met][lost] - origin[lost]
            top = delta.flatten(1).abs().amax(dim=1).clamp_min(1e-12) * 255
            scale = 1 + _REPAIR_LEVELS[0] / top
            self._try_scaled(model, tracker, state, images, winners[lost], delta, scale)
        x = x.clone()
        x[met] = origin + self.beta * (x[met] - origin)
        return x

    def _try_8bit(
        self,
        model: Classifier,
        tracker: Tracker,
        state: _State,
        images: torch.Tensor,
        index: torch.Tensor,
        rounded: torch.Tensor,
    ) -> torch.Tensor:
        """Keep the 8-bit ``rounded`` of images ``index`` that beat the best and meet the goal.

        Returns, per image, whether the candidate met the goal (False where not tried).
        """
        size = lp_norm(rounded - images[index], self.norm)
        hopeful = (size < state.best[index] - 1e-6) & (size > 0)
        met = torch.zeros(len(index), dtype=torch.bool, device=index.device)
        if not bool(hopeful.any()):
            return met
        chosen = index[hopeful]
        ok = tracker.goal.subset(chosen).met(model(rounded[hopeful]))
        tracker.count(chosen, forwards=1)
        keep = chosen[ok]
        state.best[keep] = size[hopeful][ok]
        tracker.adversarial[keep] = rounded[hopeful][ok]
        tracker.done[keep] = True
        met[hopeful.nonzero().squeeze(1)[ok]] = True
        return met

    def _repair(
        self, model: Classifier, tracker: Tracker, state: _State, images: torch.Tensor
    ) -> None:
        """Bring the smallest float success to 8 bits where plain rounding loses the goal.

        An iterate past the boundary by less than the rounding noise (the common case for
        small changes: below half a level, rounding restores the original) is enlarged,
        ``x0 + c * (x - x0)``, so that its largest coordinate grows by 0.5, 1, 2, ... levels,
        until its rounding meets the goal; then two bisection steps on ``c``. Each try is a
        counted forward pass, and only candidates smaller than the best 8-bit success are
        tried.
        """
        index = (state.best_float.isfinite() & (state.best > 1 / 255 + 1e-6)).nonzero()
        index = index.squeeze(1)
        if not len(index):
            return
        delta = state.best_iterate[index] - images[index]
        top = delta.flatten(1).abs().amax(dim=1).clamp_min(1e-12) * 255
        low = torch.ones(len(index), device=index.device)
        high = torch.full_like(low, math.inf)
        for levels in _REPAIR_LEVELS:
            open_ = high.isinf()
            if not bool(open_.any()):
                break
            scale = 1 + levels / top[open_]
            met = self._try_scaled(model, tracker, state, images, index[open_], delta[open_], scale)
            sub = open_.nonzero().squeeze(1)
            high[sub[met]] = scale[met]
            low[sub[~met]] = scale[~met]
        for _ in range(2):
            found = high.isfinite()
            if not bool(found.any()):
                break
            scale = (low[found] + high[found]) / 2
            met = self._try_scaled(model, tracker, state, images, index[found], delta[found], scale)
            sub = found.nonzero().squeeze(1)
            high[sub[met]] = scale[met]
            low[sub[~met]] = scale[~met]

    def _try_scaled(
        self,
        model: Classifier,
        tracker: Tracker,
        state: _State,
        images: torch.Tensor,
        index: torch.Tensor,
        delta: torch.Tensor,
        scale: torch.Tensor,
    ) -> torch.Tensor:
        candidate = quantize(images[index] + scale.view(-1, 1, 1, 1) * delta)
        return self._try_8bit(model, tracker, state, images, index, candidate)


class FABT(FAB):
    """FAB-T: targeted FAB towards the classes ranked next, in turn (AutoAttack's FAB-T).

    With an untargeted goal, the attack linearises the boundary of the class the model ranks
    first after the true one on the clean image, and runs FAB towards it; then, on the images
    that have no success yet (or, with ``stop_at``, none that small), towards the class ranked
    next, and so on for ``targets`` classes. Any class other than the true one counts as a
    success, wherever the walk towards the target crosses it; each image keeps its smallest
    8-bit success over the targets tried. With a targeted goal it is :class:`FAB`.

    This is how AutoAttack's standard version runs FAB (``fab-t``: 9 target classes, 100
    iterations, one restart each). A targeted walk costs one backward pass per step where the
    untargeted FAB takes one per rival class, so FAB-T with 9 targets costs about as much as
    FAB over 9 rivals, spent one class at a time, and stops early on the easy images.

    Args:
        norm: ``"linf"``, ``"l2"`` or ``"l1"``: the norm minimised.
        targets: how many of the top other classes to aim at, in turn (default 9, as in
            AutoAttack; at most the number of classes less one).
        stop_at: an image tries no further target once it has a success of at most this norm
            ([0, 1] units, the attack's norm): AutoAttack's FAB-T at a budget ``eps``. ``None``
            (the default): once it has any success.
        steps: iterations per target and restart (default 100).
        restarts: runs per target; the first starts at the image, the others at random
            points (default 1).
        eps: sizes the random restarts, as for :class:`FAB`.
        alpha_max: the largest weight of the step from the original image (default 0.1).
        eta: overshoot of the projections (default 1.05).
        beta: the backward step (default 0.9).
        seed: seeds the random restarts.

    Example:
        >>> attack = FABT(norm="linf", targets=9, stop_at=8 / 255)
        >>> result = attack(clf, images, Untargeted(labels))  # doctest: +SKIP
    """

    name = "fab-t"
    rank = 45
    summary = "FAB towards each of the top-k other classes in turn, as in AutoAttack (Croce & Hein)"

    def __init__(
        self,
        *,
        norm: Norm = "linf",
        targets: int = 9,
        stop_at: float | None = None,
        steps: int = 100,
        restarts: int = 1,
        eps: float | None = None,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
        seed: int | None = 0,
    ) -> None:
        super().__init__(
            norm=norm,
            steps=steps,
            restarts=restarts,
            eps=eps,
            alpha_max=alpha_max,
            eta=eta,
            beta=beta,
            candidates=1,
            seed=seed,
        )
        del self.candidates  # one boundary per target: not a choice, so not a parameter
        check_positive("targets", targets, integer=True)
        if stop_at is not None:
            check_positive("stop_at", stop_at)
        self.targets = int(targets)
        self.stop_at = None if stop_at is None else float(stop_at)

    def _run(
        self,
        model: Classifier,
        images: torch.Tensor,
        goal: Goal,
        progress: ProgressCallback | None,
    ) -> Tracker:
        if goal.targeted:
            return super()._run(model, images, goal, progress)
        batch = images.shape[0]
        tracker = Tracker(images, goal, early_stop=False)
        # The clean ranking of the classes other than the true one: one forward pass each.
        with torch.no_grad():
            logits = model(images)
        tracker.count(tracker.everyone, forwards=1)
        targets = min(self.targets, logits.shape[1] - 1)
        others = logits.scatter(1, goal.classes[:, None], -math.inf)
        ranked = others.topk(targets, dim=1).indices  # (B, targets)
        best = torch.full((batch,), math.inf, device=images.device)
        per_target = self.steps * self.restarts
        for rank in range(targets):
            # Not yet successful, or (with stop_at) not within stop_at yet.
            todo = ~tracker.done if self.stop_at is None else best > self.stop_at + 1e-6
            index = todo.nonzero().squeeze(1)
            if not len(index):
                break
            aim = Targeted(ranked[index, rank], goal.confidence)
            run = self._search(
                model,
                images[index],
                goal.subset(index),
                aim,
                _shifted(progress, rank, per_target, targets),
            )
            cpu = index.cpu()
            tracker.forwards[cpu] += run.forwards
            tracker.gradients[cpu] += run.gradients
            tracker.steps[cpu] += run.steps
            size = lp_norm(run.adversarial - images[index], self.norm)
            better = run.done & (size < best[index])
            winners = index[better]
            best[winners] = size[better]
            tracker.adversarial[winners] = run.adversarial[better]
            tracker.done[winners] = True
            # Images without any success return the last target's best try.
            failed = ~tracker.done[index]
            tracker.adversarial[index[failed]] = run.adversarial[failed]
        return tracker


def _shifted(
    progress: ProgressCallback | None, rank: int, per_target: int, targets: int
) -> ProgressCallback | None:
    """A progress callback of one target's run that reports on the whole FAB-T run."""
    if progress is None:
        return None

    def report(p: Progress) -> None:
        progress(
            Progress(rank * per_target + p.step, targets * per_target, p.done, p.total, p.goal_prob)
        )

    return report


#: How many levels the largest coordinate of a float success grows by in :meth:`FAB._repair`.
_REPAIR_LEVELS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)


@dataclass
class _State:
    """Per image: the best 8-bit success's norm, and the smallest float success."""

    best: torch.Tensor
    best_float: torch.Tensor
    best_iterate: torch.Tensor

    @classmethod
    def start(cls, images: torch.Tensor) -> _State:
        nothing = torch.full((images.shape[0],), math.inf, device=images.device)
        return cls(nothing, nothing.clone(), images.clone())
