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

import argparse
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

# benchmarks/_common.py: found because a script's own folder is first on sys.path.
from _common import (
    BUNDLED,
    Counting,
    art_classifier,
    comma_list,
    cpu_threads,
    device_line,
    digits_batch,
    lite0_photos,
    load_lines,
    log,
    package_version,
    render,
    require_device,
    versions_line,
)

from trompe.attacks import Untargeted, measure
from trompe.attacks.boundary import BoundaryAttack
from trompe.attacks.hsj import HopSkipJump
from trompe.images import quantize
from trompe.models import Classifier

# -- models, data, counting -----------------------------------------------------------------------


def counting(clf: Classifier) -> Counting:
    """The classifier, counting the images it is asked about (the peers' queries).

    The peers read its decisions only: no autograd; and ART hands float64 batches from its
    numpy arithmetic, where the network is float32.
    """
    return Counting(clf, no_grad=True, float32=True).eval()


@dataclass
class Task:
    name: str
    clf: Classifier
    images: torch.Tensor
    labels: torch.Tensor
    norms: tuple[str, ...]


def digits_task(count: int, device: torch.device, norms: tuple[str, ...]) -> Task:
    clf, images, labels = digits_batch(count, device)
    return Task("digits CNN, 8x8", clf, images, labels, norms)


def photo_task(count: int, device: torch.device) -> Task:
    clf, images, labels, _ = lite0_photos(device, BUNDLED[:count])
    return Task("Lite0, photos at 224", clf, images, labels, ("l2",))


# -- rows -----------------------------------------------------------------------------------------


@dataclass
class Outcome:
    adversarial: torch.Tensor
    queries: float  # mean per image
    max_queries: float
    iterations: str


@dataclass
class Row:
    name: str
    runner: Callable[[], Outcome] | None
    note: str = ""
    seconds: list[float] = field(default_factory=list)
    outcome: Outcome | None = None
    error: str = ""


def trompe_runner(task: Task, norm: str, budget: int, batch_starts: bool) -> Callable[[], Outcome]:
    clf = task.clf.with_access("labels")

    def run() -> Outcome:
        attack = HopSkipJump(norm=norm, queries=budget, batch_starts=batch_starts, seed=0)  # type: ignore[arg-type]
        result = attack(clf, task.images, Untargeted(task.labels))
        steps = result.steps.double()
        return Outcome(
            result.adversarial,
            float(result.queries.double().mean()),
            float(result.queries.max()),
            f"{float(steps.mean()):.1f}",
        )

    return run


def hsj_cost(iteration: int) -> float:
    """Probes of HopSkipJump's gradient estimate at ``iteration`` (the peers' defaults)."""
    return min(int(100 * math.sqrt(iteration)), 10_000)


def _calibrated(
    run_steps: Callable[[int], tuple[torch.Tensor, float]],
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
        log(f"  {name}: {q0:.0f} queries/image at 0 iterations, {q1:.0f} at {probe}; try {steps}")
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
                log(f"  {name}: {steps} iterations took {queries:.0f} queries/image; {fewer} less")
                steps = max(0, steps - fewer)
            chosen["steps"] = steps
        adversarial, queries = run_steps(chosen["steps"])
        return Outcome(adversarial, queries, math.nan, str(chosen["steps"]))

    return run


def foolbox_runner(task: Task, norm: str, budget: int) -> Callable[[], Outcome]:
    import foolbox as fb

    counter = counting(task.clf)
    model = fb.PyTorchModel(counter, bounds=(0, 1), device=task.images.device)
    criterion = fb.criteria.Misclassification(task.labels)

    def run_steps(steps: int) -> tuple[torch.Tensor, float]:
        counter.images = 0
        torch.manual_seed(0)  # Foolbox draws its noise from torch's global generator
        attack = fb.attacks.HopSkipJumpAttack(steps=steps, constraint=norm)
        adversarial = attack.run(model, task.images, criterion)
        return adversarial.detach(), counter.images / len(task.images)

    return _calibrated(run_steps, budget, "foolbox", 1, hsj_cost)


def _art_classifier(task: Task) -> tuple[Counting, Any]:
    counter = counting(task.clf)
    classes = task.clf.num_classes
    return counter, art_classifier(counter, task.images.shape[1:], classes, task.images.device)


def art_runner(task: Task, norm: str, budget: int) -> Callable[[], Outcome]:
    from art.attacks.evasion import HopSkipJump as ArtHopSkipJump

    counter, classifier = _art_classifier(task)
    device = task.images.device
    x = task.images.cpu().numpy()

    def run_steps(steps: int) -> tuple[torch.Tensor, float]:
        counter.images = 0
        attack = ArtHopSkipJump(
            classifier,
            targeted=False,
            norm=2 if norm == "l2" else np.inf,
            max_iter=steps,
            verbose=False,
        )
        # ART's seed is numpy's global state (it never takes a generator).
        np.random.seed(0)
        adversarial = attack.generate(x=x)
        return torch.from_numpy(adversarial).to(device), counter.images / len(x)

    return _calibrated(run_steps, budget, "art", 1, hsj_cost)


def boundary_runner(task: Task, budget: int) -> Callable[[], Outcome]:
    clf = task.clf.with_access("labels")

    def run() -> Outcome:
        result = BoundaryAttack(queries=budget, seed=0)(clf, task.images, Untargeted(task.labels))
        steps = result.steps.double()
        return Outcome(
            result.adversarial,
            float(result.queries.double().mean()),
            float(result.queries.max()),
            f"{float(steps.mean()):.0f}",
        )

    return run


def foolbox_boundary_runner(task: Task, norm: str, budget: int) -> Callable[[], Outcome]:
    import foolbox as fb

    counter = counting(task.clf)
    model = fb.PyTorchModel(counter, bounds=(0, 1), device=task.images.device)
    criterion = fb.criteria.Misclassification(task.labels)

    def run_steps(steps: int) -> tuple[torch.Tensor, float]:
        counter.images = 0
        torch.manual_seed(0)  # Foolbox draws its noise from torch's global generator
        adversarial = fb.attacks.BoundaryAttack(steps=steps).run(model, task.images, criterion)
        return adversarial.detach(), counter.images / len(task.images)

    return _calibrated(run_steps, budget, "foolbox boundary", 50)


def art_boundary_runner(task: Task, norm: str, budget: int) -> Callable[[], Outcome]:
    from art.attacks.evasion import BoundaryAttack as ArtBoundaryAttack

    counter, classifier = _art_classifier(task)
    x = task.images.cpu().numpy()

    def run_steps(steps: int) -> tuple[torch.Tensor, float]:
        counter.images = 0
        attack = ArtBoundaryAttack(classifier, targeted=False, max_iter=steps, verbose=False)
        np.random.seed(0)
        adversarial = attack.generate(x=x)
        return torch.from_numpy(adversarial).to(task.images.device), counter.images / len(x)

    return _calibrated(run_steps, budget, "art boundary", 3)


def build_rows(task: Task, norm: str, budget: int, skip: list[str], attack: str) -> list[Row]:
    peers: list[tuple[str, str, Callable[[Task, str, int], Callable[[], Outcome]]]]
    if attack == "hsj":
        rows = [
            Row("trompe hsj", trompe_runner(task, norm, budget, True)),
            Row("trompe hsj, batch_starts=False", trompe_runner(task, norm, budget, False)),
        ]
        peers = [
            ("foolbox", "Foolbox HopSkipJumpAttack", foolbox_runner),
            ("art", "ART HopSkipJump", art_runner),
        ]
    else:
        rows = [Row("trompe boundary", boundary_runner(task, budget))]
        peers = [
            ("foolbox", "Foolbox BoundaryAttack", foolbox_boundary_runner),
            ("art", "ART BoundaryAttack", art_boundary_runner),
        ]
    for key, name, make in peers:
        if key in skip:
            rows.append(Row(name, None, note="skipped (--skip)"))
            continue
        try:
            rows.append(Row(name, make(task, norm, budget)))
        except ImportError as error:
            rows.append(Row(name, None, note=f"not installed ({error.name})"))
    return rows


# -- running and scoring --------------------------------------------------------------------------


@dataclass
class Score:
    success: torch.Tensor
    distances: torch.Tensor  # attack norm, 0-255, inf for failures


def score(task: Task, norm: str, adversarial: torch.Tensor, *, rounded: bool = True) -> Score:
    """Success and distance of the output rounded to 8 bits (or, for reference, as it is)."""
    output = adversarial.to(task.images.device, torch.float32).clamp(0, 1)
    if rounded:
        output = quantize(output)
    with torch.no_grad():
        predicted = task.clf(output).argmax(dim=1)
    success = (predicted != task.labels).cpu()
    if rounded:
        distances = measure(task.images, output).of(norm).clone()
    else:
        delta = (output - task.images).flatten(1).double() * 255
        size = delta.norm(dim=1) if norm == "l2" else delta.abs().amax(dim=1)
        distances = size.cpu()
    distances[~success] = math.inf
    return Score(success, distances)


def run_rows(rows: list[Row], repeats: int) -> None:
    for row in rows:
        if row.runner is None:
            continue
        log(f"{row.name}")
        try:
            for repeat in range(repeats):
                start = time.perf_counter()
                outcome = row.runner()
                row.seconds.append(time.perf_counter() - start)
                row.outcome = outcome
                log(f"  run {repeat + 1}/{repeats}: {row.seconds[-1]:.1f} s")
        except Exception as error:  # a peer's failure is reported, not fatal
            row.error = f"failed: {type(error).__name__}: {error}"
            log(f"  {row.error}")


def _median(values: torch.Tensor) -> float:
    """The median, the mean of the two middle values for an even count (torch takes the lower)."""
    return float(np.median(values.double().numpy()))


def table(task: Task, norm: str, rows: list[Row], markdown: bool) -> str:
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
        if row.outcome is None or not row.seconds:
            reason = row.note or row.error or "no result"
            body.append([row.name, *("-" for _ in header[1:-1]), reason])
            continue
        result = score(task, norm, row.outcome.adversarial)
        floating = score(task, norm, row.outcome.adversarial, rounded=False)
        top = "-" if math.isnan(row.outcome.max_queries) else f"{row.outcome.max_queries:.0f}"
        cells = [
            row.name,
            row.outcome.iterations,
            f"{row.outcome.queries:.0f}, {top}",
            f"{int(result.success.sum())}/{n}",
            f"{_median(result.distances):.1f}",
            f"{int(floating.success.sum())}/{n}, {_median(floating.distances):.1f}",
            f"{statistics.median(row.seconds):.2f}",
        ]
        if few:
            cells.insert(5, ", ".join(f"{float(v):.0f}" for v in result.distances))
        body.append(cells)
    return render(header, body, markdown, rule=True)


def environment(device: torch.device) -> list[str]:
    art = package_version("adversarial-robustness-toolbox")
    return [
        versions_line(),
        f"peers: foolbox {package_version('foolbox')}, ART {art}",
        device_line(device),
        *load_lines(),
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=1000, help="queries per image (1000)")
    parser.add_argument(
        "--photo-queries", type=int, default=None, help="queries per photo (default --queries)"
    )
    parser.add_argument("--digits", type=int, default=32, help="digits attacked (32; 0 skips)")
    parser.add_argument("--photos", type=int, default=2, help="photos attacked (2; 0 skips)")
    parser.add_argument("--norms", default="l2,linf", help="threat models on the digits")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per row (1)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on the CPU (2)")
    parser.add_argument("--markdown", action="store_true", help="print GitHub markdown tables")
    parser.add_argument("--skip", default="", help="peers to leave out: foolbox,art")
    parser.add_argument(
        "--attacks", default="hsj,boundary", help="attacks compared: hsj,boundary (both)"
    )
    parser.add_argument(
        "--only-trompe", action="store_true", help="trompe's rows only (for quick checks)"
    )
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.queries < 1:
        parser.error("--repeats and --queries must be at least 1")
    require_device(parser, args.device)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    cpu_threads(args.device, args.threads)
    device = torch.device(args.device)
    warnings.filterwarnings("ignore")
    skip = comma_list(args.skip, lower=True)
    norms = tuple(comma_list(args.norms))
    tasks: list[tuple[Task, int]] = []
    if args.digits > 0:
        tasks.append((digits_task(args.digits, device, norms), args.queries))
    if args.photos > 0:
        tasks.append((photo_task(args.photos, device), args.photo_queries or args.queries))

    title = "#" if args.markdown else ""
    bullet = "- " if args.markdown else ""
    out = [f"{title}# Decision-based attacks, untargeted, the same query budget per row", ""]
    out += [bullet + line for line in environment(device)]
    out.append(
        bullet + "success and distance on the output rounded to 8 bits and re-predicted; "
        "distances in 0-255 units, median over all images (a failure counts as inf); peers' "
        "queries counted by a wrapper around the model, their iterations set to fit the budget"
    )
    attacks = comma_list(args.attacks)
    for attack in attacks:
        for task, budget in tasks:
            for norm in task.norms:
                if attack == "boundary" and norm != "l2":
                    continue
                heading = f"{attack}: {task.name}, {len(task.images)} images, {norm}"
                log(f"== {heading}, {budget} queries")
                rows = build_rows(task, norm, budget, skip, attack)
                if args.only_trompe:
                    rows = [r for r in rows if r.name.startswith("trompe")]
                run_rows(rows, args.repeats)
                out += ["", f"{title}## {heading}, {budget} queries per image", ""]
                out.append(table(task, norm, rows, args.markdown))
    out += ["", bullet + f"total wall time {time.perf_counter() - started:.0f} s"]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
