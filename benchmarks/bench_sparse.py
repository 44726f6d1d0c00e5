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

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

# benchmarks/_harness.py and _peers.py: found because a script's own folder is first on sys.path.
import _harness as h
import numpy as np
import torch
from _peers import (
    art_jsma,
    art_pixel,
    foolbox_pointwise,
    torchattacks_jsma,
    torchattacks_onepixel,
    torchattacks_sparsefool,
)

import trompe
from trompe.attacks import Attack, Goal, Targeted, Untargeted, measure
from trompe.attacks.onepixel import OnePixel
from trompe.attacks.sparse import JSMA, PGDL0


@dataclass
class SparseRow(h.Row):
    budgets: tuple[int, ...] = ()  # budgets scored from this row's output


def trompe_runner(attack: Attack, clf: trompe.Classifier, goal: Goal) -> Callable[..., object]:
    """A run gives the output and, for a scores-only attack, its mean queries per image."""

    def run(images: torch.Tensor, _classes: torch.Tensor) -> tuple[torch.Tensor, float | None]:
        result = attack(clf, images, goal)
        queries = float(result.queries.float().mean()) if attack.access == "scores" else None
        return result.adversarial, queries

    return run


def row(
    name: str, budgets: Sequence[int], note: str, make: Callable[..., Any], *args: object
) -> SparseRow:
    """A row scored at ``budgets``, its runner ``make(*args)``."""
    out: SparseRow = h.setup_row(
        name, make, *args, cls=SparseRow, note=note, budgets=tuple(budgets)
    )
    return out


def white_box_rows(
    clf: trompe.Classifier,
    images: torch.Tensor,
    classes: torch.Tensor,
    targeted: bool,
    k: int,
    aims: torch.Tensor,
) -> list[SparseRow]:
    """trompe's pgd-l0 and jsma and the peers' JSMA at a budget of k pixels (the peers' gamma,
    the fraction of input values they may change: enough for k whole pixels)."""
    goal: Goal = Targeted(classes) if targeted else Untargeted(classes)
    gamma = min(1.0, 3 * k / images[0].numel())
    note = "" if targeted else "aims at label + 1"
    return [
        row("trompe pgd-l0", [k], "", trompe_runner, PGDL0(eps=k), clf, goal),
        row("trompe pgd-l0 step_size=1", [k], "", trompe_runner,
            PGDL0(eps=k, step_size=1.0), clf, goal),
        row("trompe jsma", [k], "", trompe_runner, JSMA(eps=k), clf, goal),
        row("trompe jsma saliency=softmax", [k], "", trompe_runner,
            JSMA(eps=k, saliency="softmax"), clf, goal),
        row("torchattacks JSMA", [k], note, torchattacks_jsma, clf, gamma, targeted),
        row("ART SaliencyMapMethod", [k], note, _aimed, clf, gamma, aims),
    ]  # fmt: skip


def _aimed(clf: trompe.Classifier, gamma: float, aims: torch.Tensor) -> Callable[..., torch.Tensor]:
    """ART's JSMA has no untargeted form: it is given ``aims`` (label + 1) instead."""
    run = art_jsma(clf, gamma)
    return lambda images, _classes: run(images, aims)


def scored(
    rows: list[SparseRow],
    clf: trompe.Classifier,
    images: torch.Tensor,
    classes: torch.Tensor,
    targeted: bool,
    repeats: int,
    skip: Sequence[str],
) -> list[list[str]]:
    """Run the rows and score each at its budgets: success when the goal holds and at most k
    pixels changed after 8-bit rounding; the median L0 of the successes."""
    rows = [r.bind(images, classes) for r in rows if not h.skipped(r.name, skip)]
    for r in rows:
        h.log(f"  {r.name} (budgets {list(r.budgets)})")
    h.run_rows(rows, repeats, interleave=False)
    cells: list[tuple[int, str, list[str]]] = []
    for r in rows:
        for budget in r.budgets:
            if not r.done:
                cells.append(
                    (budget, r.name, ["-", "-", "-", "-", f"failed: {str(r.reason)[:80]}"])
                )
                continue
            output, queries = r.outcome if isinstance(r.outcome, tuple) else (r.outcome, None)
            output = h.rounded(images, output)
            predicted = h.predict(clf, output)
            met = predicted == classes if targeted else predicted != classes
            l0 = measure(images, output).l0.to(met.device)
            ok = met & (l0 <= budget)
            median = f"{float(l0[ok].median()):g}" if ok.any() else "-"
            rate = f"{float(ok.float().mean()):.0%}"
            shown = "-" if queries is None else f"{queries:.0f}"
            cells.append((budget, r.name, [rate, median, f"{r.median:.2f}", shown, r.note]))
    return [
        [name, str(budget), *c] for budget, name, c in sorted(cells, key=lambda c: (c[0], c[1]))
    ]


def table(lines: list[list[str]], with_queries: bool) -> str:
    head = ["attack", "pixels k", "success at k", "median L0", "seconds", "queries / image"]
    if not with_queries:
        head, lines = head[:5], [cells[:5] + cells[6:] for cells in lines]
    return h.render([*head, "note"], lines, markdown=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = h.arguments(__doc__, repeats=1, threads=2)
    parser.add_argument("--digits", type=int, default=64, help="test digits (default 64)")
    parser.add_argument("--pixels", default="1,3,5", help="untargeted budgets (pixels)")
    parser.add_argument("--target-pixels", default="5,10,20", help="targeted budgets (pixels)")
    parser.add_argument("--de-pixels", default="1,3", help="one-pixel attack budgets (pixels)")
    parser.add_argument("--generations", type=int, default=5, help="DE generations (5)")
    parser.add_argument(
        "--de-digits", type=int, default=32, help="digits for the one-pixel table (32)"
    )
    args = h.parse(parser, argv)
    np.seterr(all="ignore")
    started = time.perf_counter()
    device = torch.device(args.device)

    h.log("training the digits CNN (seed 0)")
    clf, images, labels = h.digits_batch(args.digits, device)
    n = len(images)
    aims = (labels + 1) % 10  # what the peers' JSMA aims at in the untargeted table
    targets = (labels + 1 + torch.arange(n, device=device) % 9) % 10

    report = h.Report(args.markdown)
    report.heading("Sparse (L0) attacks: trompe vs torchattacks, ART and Foolbox")
    lines = h.environment(device, "torchattacks", "art", "foolbox")
    report.bullets(
        *lines[:2],
        f"digits CNN, {n} correctly classified test digits (8x8 RGB, 64 pixels); success at "
        "k: goal met and at most k pixels changed, on the output rounded to 8 bits and "
        f"re-predicted; seconds: median of {args.repeats} run(s)",
        *lines[2:],
    )

    # 1. white box, untargeted
    budgets = h.ints(args.pixels)
    rows = [r for k in budgets for r in white_box_rows(clf, images, labels, False, k, aims)]
    rows += [
        row("torchattacks SparseFool", budgets, "minimum L0, one run",
            torchattacks_sparsefool, clf),
        row("Foolbox PointwiseAttack", budgets, "minimum L0, labels only, one run",
            foolbox_pointwise, clf),
    ]  # fmt: skip
    h.log("untargeted, white box")
    first = scored(rows, clf, images, labels, False, args.repeats, args.skip)
    report.heading("White box, untargeted", 2)
    report.add(table(first, False))

    # 2. white box, targeted
    rows = [
        r
        for k in h.ints(args.target_pixels)
        for r in white_box_rows(clf, images, targets, True, k, targets)
    ]
    h.log("targeted, white box")
    second = scored(rows, clf, images, targets, True, args.repeats, args.skip)
    report.heading("White box, targeted (target (label + 1 + i % 9) % 10 for digit i)", 2)
    report.add(table(second, False))

    # 3. scores only: the one-pixel attack
    g = args.generations
    few, few_labels = images[: args.de_digits], labels[: args.de_digits]
    scores_clf = clf.with_access("scores")
    rows = []
    for k in h.ints(args.de_pixels):
        attack = OnePixel(eps=k, population=400, steps=g, seed=0)
        rows += [
            row("trompe one-pixel", [k], "", trompe_runner,
                attack, scores_clf, Untargeted(few_labels)),
            row("torchattacks OnePixel", [k], "", torchattacks_onepixel, clf, k, g),
            row("ART PixelAttack (DE)", [k], "", art_pixel, clf, k, g),
        ]  # fmt: skip
    h.log("one-pixel, scores only")
    third = scored(rows, clf, few, few_labels, False, args.repeats, args.skip)
    report.heading(
        f"Scores only, untargeted, first {len(few)} digits: differential evolution, "
        f"population 400, {g} generations",
        2,
    )
    report.add(table(third, True))
    report.print(started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
