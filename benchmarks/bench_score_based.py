"""Benchmark trompe's score-based attacks (Square, SimBA) against torchattacks' and ART's.

Score-based attacks read the model's output scores and spend queries; what they buy is success
at a fixed budget. Every row gets the same budget ``eps`` and the same number of queries per
image, untargeted, and is scored the same way:

- the output is rounded to the 8-bit grid within the budget (nearest level; an L2 change that
  rounding pushes past ``eps`` is shrunk back into it, as trompe's engine does for its own
  output), re-predicted by the classifier, and counts as a success when the label is no longer
  the true class and the change is within ``eps``;
- ``q/img`` is every model evaluation the call made, divided by the number of images: the
  network is wrapped in a module that counts the images it is given (trompe's two engine passes
  per image, before and after, are counted too);
- ``median q`` is the median query count of the successful images as the tool itself reports it:
  trompe's ``result.queries``, torchattacks' per-image counter (from its ``attack_single_run``),
  ART SimBA's per-image counts (it attacks one image at a time, so the counting module gives
  them). ART ``SquareAttack`` reports none.

Rows:

- Square Attack, L-inf and L2: ``trompe square`` (``queries=N``), torchattacks ``Square``
  (``n_queries=N``, p_init 0.8, margin loss, one restart: the reference's settings) and ART
  ``SquareAttack`` (``max_iter=N``, p_init 0.8). Foolbox 3 has no Square Attack.
- SimBA (DCT), L2: ``trompe simba`` (budget ``eps``, ``queries=N``) and ART ``SimBA``
  (``attack="dct"``, ``max_iter=N/2``: it queries both signs every step; same step size and
  low-frequency block as trompe's). ART's SimBA has no norm budget: its images that end past
  ``eps`` count as failures. torchattacks and Foolbox have no SimBA.

Models: the digits CNN of :mod:`trompe.models.digits` (trained here in a few seconds) on the first
``--digits`` correctly classified test digits; EfficientNet-Lite0 on ``--photos`` photos (the
bundled cat and espresso, then scikit-image's colour photos if it is installed) brought to
224 x 224 and rounded to 8 bits, their true class taken as the model's prediction, Square L-inf
only (each query is a 224 x 224 forward pass). Times are medians over ``--repeats`` runs.

ART's ``SquareAttack`` evaluates the model more than once per iteration (about 2.3 evaluations
per image and iteration here), so at ``max_iter=N`` it spends more queries than the others: the
``q/img`` column shows it; its budget is read as its documentation gives it.

Usage::

    /tmp/benchvenv/bin/python benchmarks/bench_score_based.py --markdown
    /tmp/benchvenv/bin/python benchmarks/bench_score_based.py --digits 16 --queries 300 \\
        --photos 0 --repeats 1

Progress goes to stderr, the tables to stdout.
"""

from __future__ import annotations

import os

# Passive OpenMP waiting: spinning threads turn any other busy process into a 10x slowdown.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# benchmarks/_harness.py and _peers.py: found because a script's own folder is first on sys.path.
import _harness as h
import numpy as np
import torch
from _peers import Counting, art_simba, art_square, counted, torchattacks_square

from trompe.attacks import Untargeted
from trompe.attacks.simba import SimBA
from trompe.attacks.square import Square
from trompe.models import Classifier


@dataclass
class Task:
    name: str
    clf: Classifier  # the counted classifier, at "scores" access for trompe
    counter: Counting
    images: torch.Tensor  # on the 8-bit grid
    labels: torch.Tensor


def task_of(name: str, clf: Classifier, images: torch.Tensor, labels: torch.Tensor) -> Task:
    scores, counter = counted(clf, "scores")
    return Task(name, scores, counter, images, labels)


@dataclass
class ScoreRow(h.Row):
    per_image: float = math.nan  # model evaluations per image, counted


#: A run gives the output, or (output, the per-image query counts the tool reports).
Run = Callable[[torch.Tensor, torch.Tensor], object]


def trompe_runner(task: Task, attack: Square | SimBA) -> Run:
    def run(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        result = attack(task.clf, images, Untargeted(labels))
        return result.adversarial, result.queries

    return run


def peer_row(
    name: str, key: str, skip: Sequence[str], make: Callable[..., Run], *args: object
) -> ScoreRow:
    version = h.package_version(key)
    label = f"{name} {version}" if version != "not installed" else name
    return h.setup_row(label, make, *args, skip=key in skip, cls=ScoreRow)  # type: ignore[no-any-return]


def square_rows(
    task: Task, norm: str, eps: float, queries: int, skip: Sequence[str]
) -> list[ScoreRow]:
    attack = Square(eps=eps, norm=norm, queries=queries, seed=0)  # type: ignore[arg-type]
    return [
        ScoreRow("trompe square", trompe_runner(task, attack)),
        peer_row("torchattacks Square", "torchattacks", skip, torchattacks_square,
                 task.clf, norm, eps, queries),
        peer_row("ART SquareAttack", "art", skip, art_square, task.clf, norm, eps, queries),
    ]  # fmt: skip


def simba_rows(task: Task, eps: float, queries: int, skip: Sequence[str]) -> list[ScoreRow]:
    side = int(task.images.shape[-1])
    # trompe's defaults, given to both: the DCT step and the low-frequency block and bands.
    step = max(0.2, math.sqrt(side * side) / 255)
    freq = max(1, round(side / 8))
    stride = max(1, round(freq / 4))
    attack = SimBA(eps=eps, step_size=step, queries=queries, seed=0)
    return [
        ScoreRow(f"trompe simba (dct, step {step:.2f})", trompe_runner(task, attack)),
        peer_row(f"ART SimBA (dct, step {step:.2f})", "art", skip, art_simba,
                 task.clf, task.counter, step, freq, stride, queries),
    ]  # fmt: skip


def score(
    task: Task, norm: str, eps: float, adversarial: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Round within the budget, re-predict, measure: success and the size (0-255) of the
    8-bit change."""
    images = task.images
    adversarial = adversarial.detach().to(images.device).float().clamp(0, 1)
    size_float = (adversarial - images).flatten(1)
    size_float = size_float.abs().amax(1) if norm == "linf" else size_float.norm(dim=1)
    within = size_float <= eps * (1 + 1e-4) + 1e-6  # the attack's own output kept the budget
    rounded = Square(eps=eps, norm=norm).round_into_budget(adversarial, images)  # type: ignore[arg-type]
    delta = ((rounded - images) * 255).round().flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    return ((h.predict(task.clf, rounded) != task.labels) & within).cpu(), size.cpu()


def table(
    report: h.Report,
    task: Task,
    title: str,
    norm: str,
    eps: float,
    rows: list[ScoreRow],
    repeats: int,
) -> None:
    def reset(_: h.Row) -> None:
        task.counter.images = 0

    def count(row: h.Row) -> None:
        row.per_image = task.counter.images / len(task.images)  # type: ignore[attr-defined]

    for row in rows:
        row.bind(task.images, task.labels)
    h.run_rows(rows, repeats, interleave=False, before=reset, after=count)
    header = [
        "attack",
        "success",
        "median q (successes)",
        "q/img",
        f"median {norm} (0-255)",
        "time (s)",
    ]
    body = []
    for row in rows:
        if not row.done:
            body.append([row.name, row.error or row.note or "no run", "", "", "", ""])
            continue
        output, reported = row.outcome if isinstance(row.outcome, tuple) else (row.outcome, None)
        won, size = score(task, norm, eps, output)
        rate = f"{int(won.sum())}/{len(won)} ({float(won.float().mean()):.0%})"
        if reported is not None and bool(won.any()):
            median_q = f"{float(np.median(reported.cpu()[won].numpy())):.0f}"
        else:
            median_q = "n/a" if reported is None else "-"
        median = f"{float(np.median(size[won].numpy())):.1f}" if bool(won.any()) else "-"
        body.append([row.name, rate, median_q, f"{row.per_image:.0f}", median, f"{row.median:.2f}"])
    report.add(("### " if report.markdown else "") + f"{title}: {task.name}", "")
    report.table(header, body)
    report.add("", "")


def main(argv: Sequence[str] | None = None) -> int:
    parser = h.arguments(__doc__, repeats=1, threads=0)
    parser.add_argument("--digits", type=int, default=64, help="digits to attack (64; 0 skips)")
    parser.add_argument("--queries", type=int, default=1000, help="queries per digit (1000)")
    parser.add_argument("--linf", type=float, default=30.0, help="digits L-inf eps, 0-255 (30)")
    parser.add_argument("--l2", type=float, default=1.5, help="digits L2 eps, [0, 1] units (1.5)")
    parser.add_argument("--photos", type=int, default=4, help="photos for Lite0 (4; 0 skips)")
    parser.add_argument("--photo-queries", type=int, default=1000, help="queries per photo")
    parser.add_argument("--photo-linf", type=float, default=4.0, help="photos L-inf eps, 0-255 (4)")
    args = h.parse(parser, argv)
    device = torch.device(args.device)
    report = h.Report(args.markdown)
    q = args.queries
    if args.digits:
        clf, images, labels = h.digits_batch(args.digits, device)
        task = task_of(f"digits CNN, {len(images)} test digits", clf, images, labels)
        for title, norm, eps in (
            ("Square L-inf", "linf", args.linf / 255),
            ("Square L2", "l2", args.l2),
        ):
            h.log(f"{title} on {task.name}")
            budget = f"eps {eps * 255:g}/255" if norm == "linf" else f"eps {eps:g}"
            rows = square_rows(task, norm, eps, q, args.skip)
            table(report, task, f"{title}, {budget}, {q} queries", norm, eps, rows, args.repeats)
        h.log(f"SimBA on {task.name}")
        rows = simba_rows(task, args.l2, q, args.skip)
        table(
            report,
            task,
            f"SimBA L2, eps {args.l2:g}, {q} queries",
            "l2",
            args.l2,
            rows,
            args.repeats,
        )
    if args.photos:
        clf, images, labels, _ = h.lite0_photos(device, h.PHOTOS, limit=args.photos)
        task = task_of(f"EfficientNet-Lite0, {len(images)} photos at 224", clf, images, labels)
        eps = args.photo_linf / 255
        h.log(f"Square L-inf on {task.name}")
        title = f"Square L-inf, eps {args.photo_linf:g}/255, {args.photo_queries} queries"
        rows = square_rows(task, "linf", eps, args.photo_queries, args.skip)
        table(report, task, title, "linf", eps, rows, args.repeats)
    report.bullets(*h.environment(device, "torchattacks", "art"))
    report.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
