"""Benchmark trompe's sparse (L0) attacks against torchattacks, ART and Foolbox.

Model and images: the small digits CNN (``trompe.models.digits``, trained here in seconds with
seed 0) on the first ``--digits`` test digits that it classifies correctly (8 x 8 RGB, 64
pixels each). Three tables:

1. **White box, untargeted**, at each pixel budget of ``--pixels``: trompe ``pgd-l0`` (the
   reference defaults, 100 steps x 5 restarts, and with ``step_size=1.0``) and ``jsma`` (the
   paper's saliency on the logits, and on the softmax);
   torchattacks ``JSMA`` and ART ``SaliencyMapMethod`` (theta = 1, as in the paper; neither has
   an untargeted form: torchattacks aims for class ``label + 1`` by itself and ART for a random
   class, and we give ART ``label + 1`` too; a success is any label change); and the
   minimum-L0 attacks that a budget does not steer, run once: torchattacks ``SparseFool``
   and Foolbox ``PointwiseAttack`` (label only, from salt-and-pepper noise).
2. **White box, targeted**, one target per digit (``(label + 1 + i % 9) % 10`` for digit i),
   at each budget of ``--target-pixels``: trompe ``pgd-l0`` and ``jsma``, torchattacks
   ``JSMA`` and ART ``SaliencyMapMethod`` with those targets.
3. **Scores only, untargeted: the one-pixel attack**, on the first ``--de-digits`` digits (the
   peers evaluate candidates in Python loops, about 1 ms each here), at each budget of
   ``--de-pixels``, with a population of 400 (the paper's, and the one ART fixes) and
   ``--generations`` generations:
   trompe ``one-pixel``, torchattacks ``OnePixel`` (``popsize=400``) and ART ``PixelAttack``
   (differential evolution). Queries are counted by a wrapper around the network for the
   peers, and reported exactly by trompe.

Scoring, the same for every row: the output is rounded to 8 bits
(:func:`trompe.images.quantize`, what saving a PNG does) and re-predicted; an image counts as a
success at budget k when the goal holds and at most k pixels (positions, any channel) differ
from the original after rounding. "median L0" is over the successes. The budgets given to the
peers: JSMA's ``gamma`` (the fraction of input values it may change) is set to ``3 k / 192``,
enough to change k whole pixels, so the peers may go beyond k pixels on the way: those images
count as failures at k. Times: median wall clock over ``--repeats`` runs.

Usage::

    /tmp/benchvenv/bin/python benchmarks/bench_sparse.py                    # CPU, 1 repeat
    /tmp/benchvenv/bin/python benchmarks/bench_sparse.py --repeats 3 --markdown
    /tmp/benchvenv/bin/python benchmarks/bench_sparse.py --digits 32 --generations 5

Progress goes to stderr, the tables to stdout.
"""

from __future__ import annotations

import os

# Passive OpenMP waiting: spinning threads on a shared machine make every timing meaningless.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import logging
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

# benchmarks/_common.py: found because a script's own folder is first on sys.path.
from _common import (
    Counting,
    art_classifier,
    comma_list,
    cpu_threads,
    device_line,
    digits_batch,
    load_lines,
    log,
    package_version,
    render,
    versions_line,
)

import trompe
from trompe.attacks import Attack, Targeted, Untargeted, measure
from trompe.attacks.onepixel import OnePixel
from trompe.attacks.sparse import JSMA, PGDL0
from trompe.images import quantize


@dataclass
class Outcome:
    adversarial: torch.Tensor
    queries: float | None = None  # mean model evaluations per image, when counted


@dataclass
class Row:
    name: str
    run: Callable[[], Outcome]
    budgets: list[int]  # budgets scored from this row's output
    note: str = ""


@dataclass
class Scored:
    name: str
    budget: int
    success: float
    median_l0: float
    seconds: float
    queries: float | None
    note: str


def score(
    clf: trompe.Classifier,
    images: torch.Tensor,
    adversarial: torch.Tensor,
    classes: torch.Tensor,
    targeted: bool,
    budget: int,
) -> tuple[float, float]:
    """(success rate at the budget, median L0 of the successes) on the 8-bit output."""
    adversarial = quantize(adversarial.detach().to(images.device).float().clamp(0, 1))
    with torch.no_grad():
        predicted = clf(adversarial).argmax(dim=1)
    met = predicted == classes if targeted else predicted != classes
    l0 = measure(images, adversarial).l0.to(met.device)
    ok = met & (l0 <= budget)
    median = float(l0[ok].median()) if ok.any() else float("nan")
    return float(ok.float().mean()), median


# -- rows -------------------------------------------------------------------------------------


def trompe_row(
    attack: Attack, clf: trompe.Classifier, images: torch.Tensor, goal: object
) -> Callable[[], Outcome]:
    def run() -> Outcome:
        result = attack(clf, images, goal)  # type: ignore[arg-type]
        queries = float(result.queries.float().mean()) if attack.access == "scores" else None
        return Outcome(result.adversarial, queries)

    return run


def torchattacks_jsma(
    clf: trompe.Classifier, images: torch.Tensor, classes: torch.Tensor, targeted: bool, k: int
) -> Callable[[], Outcome]:
    import torchattacks

    gamma = min(1.0, 3 * k / images[0].numel())

    def run() -> Outcome:
        attack = torchattacks.JSMA(clf, theta=1.0, gamma=gamma)
        if targeted:
            attack.set_mode_targeted_by_label(quiet=True)
        return Outcome(attack(images, classes))  # untargeted: aims at label + 1 by itself

    return run


def art_jsma(
    clf: trompe.Classifier, images: torch.Tensor, aims: torch.Tensor, k: int
) -> Callable[[], Outcome]:
    from art.attacks.evasion import SaliencyMapMethod

    gamma = min(1.0, 3 * k / images[0].numel())

    def run() -> Outcome:
        attack = SaliencyMapMethod(
            art_classifier(clf, images.shape[1:], 10, images.device),
            theta=1.0,
            gamma=gamma,
            batch_size=len(images),
            verbose=False,
        )
        out = attack.generate(images.cpu().numpy(), y=aims.cpu().numpy())
        return Outcome(torch.from_numpy(out))

    return run


def torchattacks_sparsefool(
    clf: trompe.Classifier, images: torch.Tensor, labels: torch.Tensor
) -> Callable[[], Outcome]:
    import torchattacks

    def run() -> Outcome:
        return Outcome(
            torchattacks.SparseFool(clf, steps=10, lam=3, overshoot=0.02)(images, labels)
        )

    return run


def foolbox_pointwise(
    clf: trompe.Classifier, images: torch.Tensor, labels: torch.Tensor
) -> Callable[[], Outcome]:
    import foolbox as fb

    def run() -> Outcome:
        model = fb.PyTorchModel(clf, bounds=(0, 1))
        attack = fb.attacks.PointwiseAttack()
        _, clipped, _ = attack(model, images, labels, epsilons=None)
        return Outcome(clipped)

    return run


def torchattacks_onepixel(
    clf: trompe.Classifier, images: torch.Tensor, labels: torch.Tensor, k: int, generations: int
) -> Callable[[], Outcome]:
    import torchattacks

    def run() -> Outcome:
        counting = Counting(clf)
        attack = torchattacks.OnePixel(counting, pixels=k, steps=generations, popsize=400)
        out = attack(images, labels)
        return Outcome(out, counting.images / len(images))

    return run


def art_pixel(
    clf: trompe.Classifier, images: torch.Tensor, labels: torch.Tensor, k: int, generations: int
) -> Callable[[], Outcome]:
    from art.attacks.evasion import PixelAttack

    def run() -> Outcome:
        counting = Counting(clf)
        attack = PixelAttack(
            art_classifier(counting, images.shape[1:], 10, images.device),
            th=k,
            es=1,
            max_iter=generations,
            verbose=False,
        )
        before = counting.images
        out = attack.generate(images.cpu().numpy(), y=labels.cpu().numpy())
        return Outcome(torch.from_numpy(out), (counting.images - before) / len(images))

    return run


# -- running ----------------------------------------------------------------------------------


def run_rows(
    rows: list[Row],
    clf: trompe.Classifier,
    images: torch.Tensor,
    classes: torch.Tensor,
    targeted: bool,
    repeats: int,
    skip: list[str],
) -> list[Scored]:
    scored: list[Scored] = []
    for row in rows:
        if any(s in row.name.lower() for s in skip):
            continue
        log(f"  {row.name} (budgets {row.budgets})")
        times: list[float] = []
        outcome: Outcome | None = None
        try:
            for _ in range(repeats):
                start = time.perf_counter()
                outcome = row.run()
                times.append(time.perf_counter() - start)
        except Exception as error:  # a peer that fails is listed with the reason
            for budget in row.budgets:
                reason = f"failed: {type(error).__name__}: {str(error)[:80]}"
                scored.append(Scored(row.name, budget, math.nan, math.nan, 0.0, None, reason))
            continue
        assert outcome is not None
        for budget in row.budgets:
            rate, median = score(clf, images, outcome.adversarial, classes, targeted, budget)
            scored.append(
                Scored(
                    row.name,
                    budget,
                    rate,
                    median,
                    statistics.median(times),
                    outcome.queries,
                    row.note,
                )
            )
    return scored


def table(scored: list[Scored], with_queries: bool) -> str:
    head = ["attack", "pixels k", "success at k", "median L0", "seconds"]
    if with_queries:
        head.append("queries / image")
    head.append("note")
    body = []
    for s in sorted(scored, key=lambda s: (s.budget, s.name)):
        cells = [
            s.name,
            str(s.budget),
            "-" if s.success != s.success else f"{s.success:.0%}",
            "-" if s.median_l0 != s.median_l0 else f"{s.median_l0:g}",
            f"{s.seconds:.2f}" if s.seconds else "-",
        ]
        if with_queries:
            cells.append("-" if s.queries is None else f"{s.queries:.0f}")
        cells.append(s.note)
        body.append(cells)
    return render(head, body, markdown=True)


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--digits", type=int, default=64, help="test digits (default 64)")
    parser.add_argument("--pixels", default="1,3,5", help="untargeted budgets (pixels)")
    parser.add_argument("--target-pixels", default="5,10,20", help="targeted budgets (pixels)")
    parser.add_argument("--de-pixels", default="1,3", help="one-pixel attack budgets (pixels)")
    parser.add_argument("--generations", type=int, default=5, help="DE generations (5)")
    parser.add_argument(
        "--de-digits", type=int, default=32, help="digits for the one-pixel table (32)"
    )
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per row (median)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (0: torch's)")
    parser.add_argument("--skip", default="", help="comma-separated row names to leave out")
    parser.add_argument("--markdown", action="store_true", help="markdown lists and headings")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    cpu_threads(args.device, args.threads)
    device = torch.device(args.device)
    warnings.filterwarnings("ignore")
    logging.getLogger("art").setLevel(logging.ERROR)
    skip = comma_list(args.skip, lower=True)
    md = "- " if args.markdown else ""
    title = "#" if args.markdown else ""

    log("training the digits CNN (seed 0)")
    clf, images, labels = digits_batch(args.digits, device)
    n = len(images)
    aims = (labels + 1) % 10  # what the peers' JSMA aims at in the untargeted table
    targets = (labels + 1 + torch.arange(n, device=device) % 9) % 10
    scores_clf = clf.with_access("scores")

    out = [
        f"{title}# Sparse (L0) attacks: trompe vs torchattacks, ART and Foolbox",
        "",
        f"{md}{versions_line()}, torchattacks {package_version('torchattacks')}, ART "
        f"{package_version('adversarial-robustness-toolbox')}, Foolbox "
        f"{package_version('foolbox')}",
        f"{md}{device_line(device)}",
        f"{md}digits CNN, {n} correctly classified test digits (8x8 RGB, 64 pixels); success at "
        "k: goal met and at most k pixels changed, on the output rounded to 8 bits and "
        f"re-predicted; seconds: median of {args.repeats} run(s)",
    ]
    out += [md + line for line in load_lines()]

    # 1. white box, untargeted
    budgets = ints(args.pixels)
    untargeted = Untargeted(labels)
    rows: list[Row] = []
    for k in budgets:
        rows += [
            Row("trompe pgd-l0", trompe_row(PGDL0(eps=k), clf, images, untargeted), [k]),
            Row(
                "trompe pgd-l0 step_size=1",
                trompe_row(PGDL0(eps=k, step_size=1.0), clf, images, untargeted),
                [k],
            ),
            Row("trompe jsma", trompe_row(JSMA(eps=k), clf, images, untargeted), [k]),
            Row(
                "trompe jsma saliency=softmax",
                trompe_row(JSMA(eps=k, saliency="softmax"), clf, images, untargeted),
                [k],
            ),
            Row(
                "torchattacks JSMA",
                torchattacks_jsma(clf, images, labels, False, k),
                [k],
                "aims at label + 1",
            ),
            Row("ART SaliencyMapMethod", art_jsma(clf, images, aims, k), [k], "aims at label + 1"),
        ]
    rows += [
        Row(
            "torchattacks SparseFool",
            torchattacks_sparsefool(clf, images, labels),
            budgets,
            "minimum L0, one run",
        ),
        Row(
            "Foolbox PointwiseAttack",
            foolbox_pointwise(clf, images, labels),
            budgets,
            "minimum L0, labels only, one run",
        ),
    ]
    log("untargeted, white box")
    first = run_rows(rows, clf, images, labels, False, args.repeats, skip)
    out += ["", f"{title}## White box, untargeted", "", table(first, False)]

    # 2. white box, targeted
    targeted = Targeted(targets)
    rows = []
    for k in ints(args.target_pixels):
        rows += [
            Row("trompe pgd-l0", trompe_row(PGDL0(eps=k), clf, images, targeted), [k]),
            Row(
                "trompe pgd-l0 step_size=1",
                trompe_row(PGDL0(eps=k, step_size=1.0), clf, images, targeted),
                [k],
            ),
            Row("trompe jsma", trompe_row(JSMA(eps=k), clf, images, targeted), [k]),
            Row(
                "trompe jsma saliency=softmax",
                trompe_row(JSMA(eps=k, saliency="softmax"), clf, images, targeted),
                [k],
            ),
            Row("torchattacks JSMA", torchattacks_jsma(clf, images, targets, True, k), [k]),
            Row("ART SaliencyMapMethod", art_jsma(clf, images, targets, k), [k]),
        ]
    log("targeted, white box")
    second = run_rows(rows, clf, images, targets, True, args.repeats, skip)
    out += [
        "",
        f"{title}## White box, targeted (target (label + 1 + i % 9) % 10 for digit i)",
        "",
        table(second, False),
    ]

    # 3. scores only: the one-pixel attack
    g = args.generations
    few, few_labels = images[: args.de_digits], labels[: args.de_digits]
    rows = []
    for k in ints(args.de_pixels):
        attack = OnePixel(eps=k, population=400, steps=g, seed=0)
        rows += [
            Row(
                "trompe one-pixel", trompe_row(attack, scores_clf, few, Untargeted(few_labels)), [k]
            ),
            Row("torchattacks OnePixel", torchattacks_onepixel(clf, few, few_labels, k, g), [k]),
            Row("ART PixelAttack (DE)", art_pixel(clf, few, few_labels, k, g), [k]),
        ]
    log("one-pixel, scores only")
    third = run_rows(rows, clf, few, few_labels, False, args.repeats, skip)
    out += [
        "",
        f"{title}## Scores only, untargeted, first {len(few)} digits: differential evolution, "
        f"population 400, {g} generations",
        "",
        table(third, True),
    ]

    out += ["", f"{md}total time {time.perf_counter() - started:.0f} s"]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
