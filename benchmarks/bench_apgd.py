"""Benchmark trompe's Auto-PGD (APGD-CE, APGD-DLR, APGD-T) against torchattacks and ART.

Croce & Hein's APGD (ICML 2020, arXiv:2003.01690) with the same budget, iterations (100 by
default: torchattacks' APGD defaults to 10) and restarts (1) in every library:

- ``apgd-ce``: trompe ``APGD``, torchattacks ``APGD(loss="ce")``, ART
  ``AutoProjectedGradientDescent(loss_type="cross_entropy")``;
- ``apgd-dlr``: trompe ``APGDDLR``, torchattacks ``APGD(loss="dlr")``, ART
  ``AutoProjectedGradientDescent(loss_type="difference_logits_ratio")``;
- ``apgd-t``: trompe ``APGDT`` and torchattacks ``APGDT`` over the 9 top other classes (ART has
  no top-k APGD-T); Foolbox has no APGD;
- and trompe's PGD with the same number of steps (its default step, eps / 4) for context.

Model and images: the small digits CNN (``trompe.models.digits``, trained here in seconds with
seed 0) on the first ``--digits`` test digits, untargeted, L-inf and L2. With ``--photos N``,
also EfficientNet-Lite0 on N photos at 224 x 224 (8-bit), untargeted.

Scoring, the same for every row: the output is rounded to 8 bits (:func:`trompe.images.quantize`,
what saving a PNG does), re-predicted by the model, and an image is robust when the model still
gives its true label. Digits the model gets wrong to begin with count as not robust for
everyone. "max norm" is the largest change after rounding, in 0-255 units, and "over budget"
the number of images whose rounded change exceeds eps: the library's output left the ball once
saved. "in budget" is the robust accuracy when the output is instead rounded to 8 bits within
the budget, as trompe rounds (the same for trompe's rows; for the peers, what an honest
evaluation of their output would report). Times: median wall clock over
``--repeats`` runs, after one untimed warm-up run of each row with 2 iterations.

Usage::

    /tmp/benchvenv/bin/python benchmarks/bench_apgd.py                  # CPU, 3 repeats
    /tmp/benchvenv/bin/python benchmarks/bench_apgd.py --repeats 1 --digits 100 --markdown
    /tmp/benchvenv/bin/python benchmarks/bench_apgd.py --photos 4 --device cuda

Progress goes to stderr, the tables to stdout.
"""

from __future__ import annotations

import os

# Passive OpenMP waiting: spinning threads on a shared machine make every timing meaningless.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

# benchmarks/_harness.py and _peers.py: found because a script's own folder is first on sys.path.
import _harness as h
import torch
from _peers import art_apgd, torchattacks_apgd

import trompe
from trompe.attacks import PGD, Attack, Untargeted, measure
from trompe.attacks.apgd import APGD, APGDDLR, APGDT
from trompe.attacks.base import FixedBudgetAttack, Norm


def trompe_runner(clf: trompe.Classifier, make: Callable[[int], Attack]) -> Callable[..., object]:
    """``make(steps)`` builds the attack with that many iterations; a run gives the output and
    the gradient count (the peers' runs give the output alone)."""

    def run(images: torch.Tensor, labels: torch.Tensor, steps: int) -> tuple[torch.Tensor, int]:
        result = make(steps)(clf, images, Untargeted(labels))
        return result.adversarial, int(result.gradients.sum())

    return run


def build_rows(
    clf: trompe.Classifier, norm: Norm, eps: float, batch: int, args: argparse.Namespace
) -> list[h.Row]:
    """The rows; ``group`` is the library."""
    restarts, targets, device = args.restarts, args.targets, torch.device(args.device)
    makers: dict[str, Callable[[int], Attack]] = {
        "apgd-ce": lambda s: APGD(eps=eps, norm=norm, steps=s, restarts=restarts, seed=0),
        "apgd-dlr": lambda s: APGDDLR(eps=eps, norm=norm, steps=s, restarts=restarts, seed=0),
        "apgd-t": lambda s: APGDT(
            eps=eps, norm=norm, steps=s, restarts=restarts, targets=targets, seed=0
        ),
    }
    pgd = trompe_runner(clf, lambda s: PGD(eps=eps, norm=norm, steps=s, seed=0))
    rows = [h.Row("pgd (step eps/4)", pgd, group="trompe")]
    for kind, make in makers.items():
        rows.append(h.Row(kind, trompe_runner(clf, make), group="trompe"))
        peers: list[tuple[str, str, Callable[..., Callable[..., Any]], tuple[Any, ...]]] = [
            ("torchattacks", "torchattacks", torchattacks_apgd, (restarts, targets, 0)),
            ("art", "ART", art_apgd, (restarts, batch, 0, device)),
        ]
        for key, library, peer, settings in peers:
            if key == "art" and kind == "apgd-t":
                rows.append(h.Row(kind, None, "no top-k APGD-T in ART", group=library))
                continue
            args_ = (clf, kind, norm, eps, *settings)
            rows.append(h.setup_row(kind, peer, *args_, skip=key in args.skip, group=library))
    return rows


def table(
    report: h.Report,
    clf: trompe.Classifier,
    rows: list[h.Row],
    images: torch.Tensor,
    labels: torch.Tensor,
    norm: Norm,
    eps: float,
) -> None:
    """Robust accuracy on the 8-bit output, and within the budget as trompe rounds; the largest
    rounded change (0-255) and the images whose rounded change exceeds eps."""
    n = len(images)
    clean = int((h.predict(clf, images) == labels).sum())
    header = ["attack", "library", "robust acc. (8-bit)", "in budget", "max norm (0-255)"]
    header += ["over budget", "seconds", "gradients"]
    body = [["none (clean)", "-", f"{clean / n:.1%} ({clean}/{n})", "-", "0", "0", "-", "-"]]
    for row in rows:
        if not row.done:
            body.append([row.name, row.group, row.reason] + [""] * 5)
            continue
        out, gradients = row.outcome if isinstance(row.outcome, tuple) else (row.outcome, None)
        out = out.to(images.device).clamp(0, 1)
        # What the output would give if rounded as trompe rounds: never out of the ball.
        inside = FixedBudgetAttack.round_into_budget(APGD(eps=eps, norm=norm), out, images)
        robust = int((h.predict(clf, h.rounded(images, out)) == labels).sum())
        robust_inside = int((h.predict(clf, inside) == labels).sum())
        size = measure(images, h.rounded(images, out)).of(norm)
        over = int((size > eps * 255 + 1e-3).sum())
        body.append(
            [
                row.name,
                row.group,
                f"{robust / n:.1%} ({robust}/{n})",
                f"{robust_inside / n:.1%}",
                f"{float(size.max()):.2f}",
                str(over),
                f"{row.median:.2f}",
                "-" if gradients is None else str(gradients),
            ]
        )
    report.table(header, body)
    report.bullets(*(f"{r.group} {r.name}: {r.error}" for r in rows if r.error))


def main(argv: Sequence[str] | None = None) -> int:
    parser = h.arguments(__doc__, repeats=3, threads=2)
    parser.add_argument("--digits", type=int, default=200, help="test digits to attack (200)")
    parser.add_argument("--photos", type=int, default=0, help="also N photos on Lite0 (0)")
    parser.add_argument("--steps", type=int, default=100, help="iterations (100, the paper's)")
    parser.add_argument("--restarts", type=int, default=1, help="restarts (1)")
    parser.add_argument("--targets", type=int, default=9, help="APGD-T target classes (9)")
    parser.add_argument(
        "--linf", type=float, default=25.0, help="digits L-inf budget, 0-255 units (25 ~ 0.1)"
    )
    parser.add_argument("--l2", type=float, default=1.0, help="digits L2 budget, [0, 1] units")
    parser.add_argument(
        "--photo-linf", type=float, default=1.0, help="photos L-inf budget, 0-255 units (1)"
    )
    parser.add_argument("--norms", default="linf,l2", help="threat models to run (linf,l2)")
    args = h.parse(parser, argv)
    started = time.perf_counter()
    device = torch.device(args.device)

    report = h.Report(args.markdown)
    report.heading(
        f"Auto-PGD: trompe vs torchattacks and ART ({args.steps} iterations, "
        f"{args.restarts} restart(s), untargeted)"
    )
    lines = h.environment(device, "torchattacks", "art")
    report.bullets(
        *lines[:2],
        f"robust accuracy on the output rounded to 8 bits and re-predicted; seconds: median of "
        f"{args.repeats} run(s); gradients: per-image gradient passes (trompe; the peers run "
        f"every iteration on every image: {args.steps} per image and run, times the targets "
        "for APGD-T)",
        *lines[2:],
    )

    h.log("training the digits CNN (seed 0)")
    # The first test digits, wrong ones too (they count as not robust for everyone).
    digits_clf, images, labels = h.digits_batch(args.digits, device, correct_only=False)
    suites: list[tuple[str, trompe.Classifier, torch.Tensor, torch.Tensor, Norm, float]] = []
    for norm in h.comma_list(args.norms):
        eps = args.linf / 255 if norm == "linf" else args.l2
        shown = f"{args.linf:g}/255" if norm == "linf" else f"{args.l2:g} ({args.l2 * 255:g}/255)"
        name = f"digits CNN, {len(images)} test digits (8x8), {norm} eps {shown}"
        suites.append((name, digits_clf, images, labels, norm, eps))  # type: ignore[arg-type]
    if args.photos > 0:
        # Labels: the model's own top-1 (attacked).
        lite, photos, photo_labels, _ = h.lite0_photos(device, h.PHOTOS, limit=args.photos)
        name = (
            f"EfficientNet-Lite0, {len(photos)} photos at 224x224, linf eps {args.photo_linf:g}"
            "/255, label = the model's clean top-1"
        )
        suites.append((name, lite, photos, photo_labels, "linf", args.photo_linf / 255))

    for name, clf, x, y, norm, eps in suites:
        h.log(name)
        rows = [
            r.bind(x, y, args.steps, warm=(x, y, 2))
            for r in build_rows(clf, norm, eps, len(x), args)
        ]
        h.run_rows(rows, args.repeats, device)
        report.heading(name, 2)
        table(report, clf, rows, x, y, norm, eps)
    report.print(started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
