"""Benchmark trompe's decision-based attacks against Foolbox's and ART's, at one query budget.

Decision-based attacks see only the model's top-1 label, and what they buy with their queries is
a smaller change. So every row gets the same number of queries per image and is scored on its
median distance to the original:

- ``trompe hsj``: :class:`trompe.attacks.hsj.HopSkipJump` with ``queries=N`` (a hard budget per
  image, starting points included), on the classifier at ``labels`` access. Also with
  ``batch_starts=False`` (noise starts only, as the peers do).
- Foolbox 3 ``HopSkipJumpAttack`` and ART ``HopSkipJump`` have no query budget, only a number of
  iterations. The model they get is wrapped in a module that counts the images it is given;
  each peer runs with the most iterations whose mean query count per image (its start-up search
  included) stays within ``N``. That number is found from two short calibration runs (0 and 1
  iteration) and checked on the real run, with one iteration less until it fits. Their other
  settings are their defaults (100 probes growing as sqrt(t), geometric step search;
  Foolbox's noise-blend start, ART's 100 noise tries).
- The Boundary attack likewise: ``trompe boundary`` (:class:`trompe.attacks.boundary.
  BoundaryAttack`, ``queries=N``) against Foolbox 3 ``BoundaryAttack`` and ART
  ``BoundaryAttack`` (untargeted), whose step counts are calibrated the same way (a step of
  Foolbox costs about 1.1 queries, an iteration of ART 20 or more).

Scoring is the same for every row: the output is rounded to 8 bits, re-predicted by the same
classifier, an image counts as a success when its label is no longer the true class, and its
distance is measured on the 8-bit values in 0-255 units (``inf`` for a failure, so a failure
raises the median). For reference, the same figures for the output as the attack returned it
(floats, not rounded) are shown too: an attack that stops on the decision boundary in float loses
about half its images to rounding. Times are medians over ``--repeats`` runs (calibration runs
not timed).

Models: the digits CNN of :mod:`trompe.models.digits` (trained here in a few seconds) on the first
``--digits`` correctly classified test digits, L2 and L-inf; and EfficientNet-Lite0 on the
bundled photos (cat, espresso) brought to 224 x 224 and rounded to 8 bits, L2 (``--photos 0``
skips it; each of its queries is a 224 x 224 forward pass, about 20-80 ms of CPU).

Usage::

    /tmp/benchvenv/bin/python benchmarks/bench_decision_based.py --markdown
    /tmp/benchvenv/bin/python benchmarks/bench_decision_based.py --queries 500 --digits 16 \\
        --photos 0 --repeats 1

Progress goes to stderr, the tables to stdout.
"""

from __future__ import annotations

import os

# Passive OpenMP waiting: spinning threads turn any other busy process into a 10x slowdown.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# benchmarks/_harness.py and _peers.py: found because a script's own folder is first on sys.path.
import _harness as h
import numpy as np
import torch
from _peers import Iterated, art_decision, foolbox_decision, hsj_cost

from trompe.attacks import Untargeted, measure
from trompe.attacks.base import Norm
from trompe.attacks.boundary import BoundaryAttack
from trompe.attacks.hsj import HopSkipJump
from trompe.models import Classifier


@dataclass
class Task:
    name: str
    clf: Classifier
    images: torch.Tensor
    labels: torch.Tensor
    norms: tuple[str, ...]


@dataclass
class Outcome:
    adversarial: torch.Tensor
    queries: float  # mean per image
    max_queries: float
    iterations: str


def trompe_runner(
    task: Task, attack: HopSkipJump | BoundaryAttack, digits: int
) -> Callable[[], Outcome]:
    clf = task.clf.with_access("labels")

    def run() -> Outcome:
        result = attack(clf, task.images, Untargeted(task.labels))
        return Outcome(
            result.adversarial,
            float(result.queries.double().mean()),
            float(result.queries.max()),
            f"{float(result.steps.double().mean()):.{digits}f}",
        )

    return run


def _calibrated(
    run_steps: Iterated,
    budget: int,
    name: str,
    probe: int,
    cost: Callable[[int], float] = lambda _: 0.0,
) -> Callable[[], Outcome]:
    """A runner with the most iterations whose mean queries per image fit in ``budget``.

    Calibrated from runs of 0 and ``probe`` iterations: queries at iteration ``t`` are taken to
    be ``cost(t)`` plus a constant measured from those two runs; the guess is then checked on
    the real run and lowered until it fits.
    """
    chosen: dict[str, int] = {}

    def pick() -> tuple[int, float]:
        _, q0 = run_steps(0)
        _, q1 = run_steps(probe)
        overhead = max(0.0, (q1 - q0 - sum(cost(t) for t in range(1, probe + 1))) / probe)
        total, steps = q0, 0
        while total + cost(steps + 1) + overhead <= budget:
            total += cost(steps + 1) + overhead
            steps += 1
        h.log(f"  {name}: {q0:.0f} queries/image at 0 iterations, {q1:.0f} at {probe}; try {steps}")
        return steps, overhead

    def run() -> Outcome:
        if "steps" not in chosen:
            steps, overhead = pick()
            while True:
                _, queries = run_steps(steps)
                if queries <= budget or steps == 0:
                    break
                per = max(1.0, cost(steps) + overhead)
                fewer = max(1, math.ceil((queries - budget) / per))
                h.log(
                    f"  {name}: {steps} iterations took {queries:.0f} queries/image; {fewer} less"
                )
                steps = max(0, steps - fewer)
            chosen["steps"] = steps
        adversarial, queries = run_steps(chosen["steps"])
        return Outcome(adversarial, queries, math.nan, str(chosen["steps"]))

    return run


def peer_runner(task: Task, key: str, attack: str, norm: str, budget: int) -> Callable[[], Outcome]:
    """A peer's runner, its iterations calibrated to the budget."""
    if key == "foolbox":
        run = foolbox_decision(task.clf, task.images, task.labels, attack, norm)
    else:
        run = art_decision(task.clf, task.images, attack, norm)
    tag = key if attack == "hsj" else f"{key} boundary"
    probe = 1 if attack == "hsj" else {"foolbox": 50, "art": 3}[key]
    cost = hsj_cost if attack == "hsj" else lambda _: 0.0
    return _calibrated(run, budget, tag, probe, cost)


def build_rows(task: Task, norm: Norm, budget: int, skip: list[str], attack: str) -> list[h.Row]:
    if attack == "hsj":
        hsj = HopSkipJump(norm=norm, queries=budget, seed=0)
        hsj_noise = HopSkipJump(norm=norm, queries=budget, batch_starts=False, seed=0)
        rows = [
            h.Row("trompe hsj", trompe_runner(task, hsj, 1)),
            h.Row("trompe hsj, batch_starts=False", trompe_runner(task, hsj_noise, 1)),
        ]
        names = {"foolbox": "Foolbox HopSkipJumpAttack", "art": "ART HopSkipJump"}
    else:
        boundary = BoundaryAttack(queries=budget, seed=0)
        rows = [h.Row("trompe boundary", trompe_runner(task, boundary, 0))]
        names = {"foolbox": "Foolbox BoundaryAttack", "art": "ART BoundaryAttack"}
    for key, name in names.items():
        make_args = (task, key, attack, norm, budget)
        rows.append(h.setup_row(name, peer_runner, *make_args, skip=key in skip))
    return rows


# -- scoring --------------------------------------------------------------------------------------


def score(
    task: Task, norm: str, adversarial: torch.Tensor, *, on_grid: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Success and distance (0-255, inf for failures) of the output rounded to 8 bits (or, for
    reference, as it is)."""
    output = adversarial.to(task.images.device, torch.float32).clamp(0, 1)
    if on_grid:
        output = h.rounded(task.images, output)
    success = (h.predict(task.clf, output) != task.labels).cpu()
    if on_grid:
        distances = measure(task.images, output).of(norm).clone()
    else:
        delta = (output - task.images).flatten(1).double() * 255
        size = delta.norm(dim=1) if norm == "l2" else delta.abs().amax(dim=1)
        distances = size.cpu()
    distances[~success] = math.inf
    return success, distances


def _median(values: torch.Tensor) -> float:
    """The median, the mean of the two middle values for an even count (torch takes the lower)."""
    return float(np.median(values.double().numpy()))


def table(task: Task, norm: str, rows: list[h.Row], markdown: bool) -> str:
    header = [
        "method",
        "iterations",
        "queries / image (mean, max)",
        "success",
        f"median {norm} (0-255)",
        "unrounded: success, median",
        "s (median)",
    ]
    few = len(task.images) <= 4
    if few:
        header.insert(5, f"{norm} per image")
    body = []
    n = len(task.images)
    for row in rows:
        if not row.done:
            body.append([row.name, *("-" for _ in header[1:-1]), row.reason])
            continue
        outcome: Outcome = row.outcome
        success, distances = score(task, norm, outcome.adversarial)
        success_float, distances_float = score(task, norm, outcome.adversarial, on_grid=False)
        top = "-" if math.isnan(outcome.max_queries) else f"{outcome.max_queries:.0f}"
        cells = [
            row.name,
            outcome.iterations,
            f"{outcome.queries:.0f}, {top}",
            f"{int(success.sum())}/{n}",
            f"{_median(distances):.1f}",
            f"{int(success_float.sum())}/{n}, {_median(distances_float):.1f}",
            f"{row.median:.2f}",
        ]
        if few:
            cells.insert(5, ", ".join(f"{float(v):.0f}" for v in distances))
        body.append(cells)
    return h.render(header, body, markdown, rule=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = h.arguments(__doc__, repeats=1, threads=2)
    parser.add_argument("--queries", type=int, default=1000, help="queries per image (1000)")
    parser.add_argument(
        "--photo-queries", type=int, default=None, help="queries per photo (default --queries)"
    )
    parser.add_argument("--digits", type=int, default=32, help="digits attacked (32; 0 skips)")
    parser.add_argument("--photos", type=int, default=2, help="photos attacked (2; 0 skips)")
    parser.add_argument("--norms", default="l2,linf", help="threat models on the digits")
    parser.add_argument(
        "--attacks", default="hsj,boundary", help="attacks compared: hsj,boundary (both)"
    )
    parser.add_argument(
        "--only-trompe", action="store_true", help="trompe's rows only (for quick checks)"
    )
    args = h.parse(parser, argv)
    if args.queries < 1:
        parser.error("--queries must be at least 1")
    started = time.perf_counter()
    device = torch.device(args.device)
    tasks: list[tuple[Task, int]] = []
    if args.digits > 0:
        clf, images, labels = h.digits_batch(args.digits, device)
        norms = tuple(h.comma_list(args.norms))
        tasks.append((Task("digits CNN, 8x8", clf, images, labels, norms), args.queries))
    if args.photos > 0:
        clf, images, labels, _ = h.lite0_photos(device, h.BUNDLED[: args.photos])
        task = Task("Lite0, photos at 224", clf, images, labels, ("l2",))
        tasks.append((task, args.photo_queries or args.queries))

    report = h.Report(args.markdown)
    report.heading("Decision-based attacks, untargeted, the same query budget per row")
    report.bullets(
        *h.environment(device, "foolbox", "art"),
        "success and distance on the output rounded to 8 bits and re-predicted; "
        "distances in 0-255 units, median over all images (a failure counts as inf); peers' "
        "queries counted by a wrapper around the model, their iterations set to fit the budget",
    )
    for attack in h.comma_list(args.attacks):
        for task, budget in tasks:
            for norm in task.norms:
                if attack == "boundary" and norm != "l2":
                    continue
                heading = f"{attack}: {task.name}, {len(task.images)} images, {norm}"
                h.log(f"== {heading}, {budget} queries")
                rows = build_rows(task, norm, budget, args.skip, attack)  # type: ignore[arg-type]
                if args.only_trompe:
                    rows = [r for r in rows if r.name.startswith("trompe")]
                h.run_rows(rows, args.repeats, interleave=False)
                report.heading(f"{heading}, {budget} queries per image", 2)
                report.add(table(task, norm, rows, args.markdown))
    report.print(started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
