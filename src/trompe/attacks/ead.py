"""EAD, the elastic-net attack: the smallest L1 change, found by shrinkage-thresholding.

Chen, Sharma, Zhang, Yi & Hsieh, "EAD: Elastic-Net Attacks to Deep Neural Networks via
Adversarial Examples", AAAI 2018, arXiv:1709.04114.

Threat model: minimum L1 change; white box (gradients), targeted or untargeted. EAD minimises
the elastic-net objective ``c * max(kappa - margin(x), 0) + ||x - x0||_2^2 + beta * ||x - x0||_1``
over images ``x`` in [0, 1]: the hinge of Carlini & Wagner on how far the image is past its goal,
plus both the squared L2 and the L1 size of the change. The L1 term is not differentiable, so
the paper uses the iterative shrinkage-thresholding algorithm (ISTA) in its accelerated form
(FISTA): a gradient step on the smooth part (hinge and squared distance), then the proximal
step of the L1 term restricted to the box, which sets every pixel that moved by less than
``beta`` back to its original value and shrinks the others by ``beta`` towards it (clipped to
[0, 1]). The changes are therefore sparse: most pixels stay exactly as they were. The step size
decays as the square root of the remaining fraction of the run, as in the reference code, and
the threshold is ``beta`` itself (not the step size times ``beta``), also as in the reference.

Like Carlini & Wagner, EAD runs a binary search over the constant ``c``: each image gets
``binary_search_steps`` runs of ``steps`` iterations from the image itself; after a run that met
the goal ``c`` goes down (bisection), after one that did not it goes up (times 10 while no run
has worked). Among the adversarial iterates it keeps the one with the smallest L1 change (the
"L1" decision rule; "EN", the elastic-net distance, is an option).

trompe's version is 8-bit honest: an iterate counts only once its 8-bit rounding meets the goal
(a counted forward pass, made when the model sees the goal met at the current point and the
rounded change is 1 % below the best of the run), and distances are measured on the rounded
image. An image whose rounding loses the goal has its ``kappa`` raised by 0.1, as in
:class:`~trompe.attacks.cw.CarliniWagnerL2`; with a confidence goal, ``kappa`` is kept below
what the confidence allows. Runs and searches stop early per image: a run that has not met the
goal once its loss stops falling (the paper's "abort early": less than 0.01 % in a tenth of the
run); the search once the bracket around ``c`` is within 5 %, or once a run inside the bracket
met the goal but improved the best distance by less than ``search_tolerance``. Runs that have
met the goal go on to the end: their loss stalls long before the shrinkage has made the
change as sparse as it will get. In the last run there is no larger ``c`` to go on with, so
there, at each tenth of the run, an image that no run has got to its goal and that is not on
course to (at the pace of the last tenth, its margin would not reach ``kappa`` by the end of
the run) has its ``c`` multiplied by 10 instead of stopping. With ``binary_search_steps=1`` EAD
is then a quick one-run attack that meets the goal. Its changes can be far larger than the
search's: about the same median L1 on 16 targeted digits (2,238 against 2,271 in 0-255 units),
but 12 times the L1 on the cat photo to "lemon" at 99 % (1.1 million against 90,000).

The paper runs 1,000 iterations per value of ``c`` (9 values). The default here is 200: on the
digits CNN this costs about 550 forward-backward passes per image instead of about 2,600 and
gives a median L1 5-10 % larger; pass ``steps=1000`` for the paper's setting. (More iterations
give sparser changes partly because the threshold does not scale with the step size.)
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch

from trompe.attacks._constant_search import ConstantSearch, check_margin, check_unit, reachable
from trompe.attacks.base import Attack, Norm, Progress, ProgressCallback, check_positive
from trompe.attacks.goal import Goal
from trompe.attacks.tracker import Tracker
from trompe.errors import InvalidArgumentError
from trompe.images import quantize
from trompe.models.classifier import Classifier

__all__ = ["EAD"]

DecisionRule = Literal["l1", "en"]


def shrink_into_box(z: torch.Tensor, images: torch.Tensor, beta: float) -> torch.Tensor:
    """The projected shrinkage-thresholding step of EAD (eq. 4 of the paper).

    Each value of ``z`` within ``beta`` of the original goes back to it; the others move
    ``beta`` towards it and are clipped to [0, 1]. Shape: (B, ...) twice -> (B, ...).
    """
    delta = z - images
    shrunk = delta.sign() * (delta.abs() - beta).clamp_min(0)
    out: torch.Tensor = (images + shrunk).clamp(0.0, 1.0)
    return out


class EAD(Attack):
    """The smallest L1 change that meets the goal, by FISTA on the elastic-net objective.

    Args:
        steps: iterations per run (per value of ``c``); default 200 (the paper: 1,000).
        lr: the initial step size of the gradient step (default 0.01, the paper's); it decays
            to 0 over the run as ``lr * sqrt(1 - k / steps)``.
        c: the initial constant, the weight of the goal term (default 1e-3, the paper's).
        beta: the weight of the L1 term, which is also the shrinkage threshold (default 1e-3).
        binary_search_steps: runs per image, each with a new ``c`` (default 9, the paper's).
        search_tolerance: an image's search ends when a run inside its bracket of ``c`` (some
            run has failed) met the goal but improved the best distance by less than this
            fraction (default 0.01; 0 runs every step unless the bracket closes).
        decision_rule: which adversarial iterate to keep: ``"l1"`` the smallest L1 change
            (default), ``"en"`` the smallest elastic-net distance ``L2^2 + beta * L1``; both
            measured on the 8-bit image, in [0, 1] units.
        kappa: required margin past the goal, in the goal's margin units (log-probability
            differences of the logits; default 0, the paper's). Raised per image when
            rounding to 8 bits loses the goal.
        fista: use FISTA's momentum (default, the paper's best); ``False`` for plain ISTA.
        early_stop: the early stops (the loss plateau, the end of the search); without them
            every image takes every iteration of every run.
        seed: unused (the attack is deterministic); kept for the common interface.

    Example:
        >>> attack = EAD(steps=100)
        >>> result = attack(clf, images, Untargeted(labels))  # doctest: +SKIP
        >>> result.norms.l1                                   # 0-255 units, per image
    """

    name = "ead"
    aliases: ClassVar[tuple[str, ...]] = ("elastic-net", "ead-l1")
    family = "minimum-norm"
    rank = 50
    summary = "smallest L1 change: elastic-net FISTA + binary search over c (Chen et al. 2018)"
    norms: tuple[Norm, ...] = ("l1",)
    minimum_norm = True

    def __init__(
        self,
        *,
        steps: int = 200,
        lr: float = 0.01,
        c: float = 1e-3,
        beta: float = 1e-3,
        binary_search_steps: int = 9,
        search_tolerance: float = 0.01,
        decision_rule: DecisionRule = "l1",
        kappa: float = 0.0,
        fista: bool = True,
        early_stop: bool = True,
        seed: int | None = 0,
    ) -> None:
        check_positive("steps", steps, integer=True)
        check_positive("lr", lr)
        check_positive("c", c)
        check_positive("beta", beta)
        check_positive("binary_search_steps", binary_search_steps, integer=True)
        check_unit("search_tolerance", search_tolerance)
        check_margin("kappa", kappa)
        if decision_rule not in ("l1", "en"):
            raise InvalidArgumentError(
                f"decision_rule must be 'l1' or 'en' (elastic net), got {decision_rule!r}"
            )
        self.steps = int(steps)
        self.lr = float(lr)
        self.c = float(c)
        self.beta = float(beta)
        self.binary_search_steps = int(binary_search_steps)
        self.search_tolerance = float(search_tolerance)
        self.decision_rule: DecisionRule = decision_rule
        self.kappa = float(kappa)
        self.fista = bool(fista)
        self.early_stop = bool(early_stop)
        self.norm: Norm = "l1"
        self.seed = seed

    def _distance(self, delta: torch.Tensor) -> torch.Tensor:
        """The decision rule's distance of each change (in [0, 1] units)."""
        flat = delta.flatten(1)
        l1 = flat.abs().sum(dim=1)
        if self.decision_rule == "l1":
            return l1
        out: torch.Tensor = flat.square().sum(dim=1) + self.beta * l1
        return out

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
        kappa = torch.full((batch,), self.kappa, device=device)
        best = torch.full((batch,), math.inf, device=device)
        searching = torch.ones(batch, dtype=torch.bool, device=device)
        for run in range(self.binary_search_steps):
            index = searching.nonzero().squeeze(1)
            if not len(index):
                break
            c = search.c[index].float()
            before = best[index].clone()
            found = self._descend(
                model, images, goal, index, c, kappa, best, tracker, progress, run
            )
            search.update(index, found, c)
            if self.early_stop:
                gain = 1 - best[index] / before
                searching[index] = ~search.settled(index, found, gain, self.search_tolerance)
        tracker.done = torch.isfinite(best)
        tracker.finish(lambda x, _: quantize(x), tracker.best)
        return tracker

    def _descend(
        self,
        model: Classifier,
        images: torch.Tensor,
        goal: Goal,
        index: torch.Tensor,
        c: torch.Tensor,
        kappa: torch.Tensor,
        best: torch.Tensor,
        tracker: Tracker,
        progress: ProgressCallback | None,
        run: int,
    ) -> torch.Tensor:
        """One (F)ISTA run for the images ``index``; whether each met the goal (8-bit)."""
        count = len(index)
        device = images.device
        originals = images[index]
        sub_goal = goal.subset(index)
        x = originals.clone()  # the iterate
        y = originals.clone()  # FISTA's slack point, where the gradient is taken
        found = torch.zeros(count, dtype=torch.bool, device=device)
        run_best = torch.full((count,), math.inf, device=device)
        running = torch.ones(count, dtype=torch.bool, device=device)
        last_loss = torch.full((count,), math.inf, device=device)
        checkpoint = max(1, self.steps // 10)
        last_run = run == self.binary_search_steps - 1
        last_margin = torch.full((count,), -math.inf, device=device)
        for step in range(self.steps):
            local = running.nonzero().squeeze(1)
            if not len(local):
                break
            rows = index[local]
            point = y[local].requires_grad_(True)
            logits = model(point)
            margin = sub_goal.subset(local).margin(logits)
            delta = point - originals[local]
            hinge = c[local] * (reachable(kappa[rows], goal) - margin).clamp_min(0)
            smooth = hinge + delta.flatten(1).square().sum(dim=1)
            (grad,) = torch.autograd.grad(smooth.sum(), point)
            tracker.count(rows, forwards=1, gradients=1)

            with torch.no_grad():
                margin = margin.detach()
                point = point.detach()
                loss = smooth.detach() + self.beta * delta.detach().flatten(1).abs().sum(dim=1)
                never = ~torch.isfinite(best[rows])
                better = (margin > tracker.best_margin[rows]) & never
                tracker.best_margin[rows[better]] = margin[better]
                tracker.best[rows[better]] = point[better]

                step_size = self.lr * math.sqrt(1 - step / self.steps)
                previous = x[local]
                moved = shrink_into_box(point - step_size * grad, originals[local], self.beta)
                x[local] = moved
                if self.fista:
                    slack = moved + step / (step + 3) * (moved - previous)
                    y[local] = slack.clamp(0.0, 1.0)
                else:
                    y[local] = moved

                # Check the new iterate on 8 bits where the model sees the goal met at the
                # current point and the rounded change is 1 % below the best of this run.
                rounded = quantize(moved)
                distance = self._distance(rounded - originals[local])
                closer = distance < 0.99 * run_best[local]
                hopeful = ((margin > 0) & closer).nonzero().squeeze(1)
                if len(hopeful):
                    chosen = local[hopeful]
                    met = sub_goal.subset(chosen).met(model(rounded[hopeful]))
                    tracker.count(index[chosen])
                    found[chosen[met]] = True
                    run_best[chosen[met]] = distance[hopeful][met]
                    keep = met & (distance[hopeful] < best[index[chosen]])
                    winners = index[chosen[keep]]
                    best[winners] = distance[hopeful][keep]
                    tracker.adversarial[winners] = rounded[hopeful][keep]
                    kappa[index[chosen[~met]]] += 0.1
                if (step + 1) % checkpoint == 0:
                    # The paper's abort, for runs that have not met the goal: the loss has
                    # stopped falling. (Applied to runs that have, it cuts the shrinkage short:
                    # the loss stalls long before the L1 does.)
                    flat = ~found[local] & (loss > 0.9999 * last_loss[local])
                    last_loss[local] = loss
                    # In the last run, an image that no run got to its goal has no later run
                    # to raise c: raise it here where, at the pace of the last tenth, its
                    # margin would not reach what is asked of it by the end of the run.
                    hopeless = last_run & ~torch.isfinite(best[rows])
                    if hopeless.any():
                        left = (self.steps - step - 1) / checkpoint
                        wanted = reachable(kappa[rows], goal)
                        late = margin + (margin - last_margin[local]) * left <= wanted
                        c[local[hopeless & late]] *= 10
                    if self.early_stop:
                        running[local[flat & ~hopeless]] = False
                    last_margin[local] = margin
            if progress is not None:
                prob = logits[:1].detach().softmax(dim=1)[0, sub_goal.classes[local[0]]]
                done = int(torch.isfinite(best).sum())
                total = self.steps * self.binary_search_steps
                at = run * self.steps + step + 1
                progress(Progress(at, total, done, len(images), float(prob)))
        return found
