"""Benchmark trompe's Carlini-Wagner L2 and EAD (L1) against the peer libraries.

Minimum-norm attacks are compared by the size of the change they find (the median over the
images, in 0-255 units) at a success rate, and by time. Everyone attacks the same model and the
same images with the same goal; every output is scored the same way: rounded to 8 bits with
:func:`trompe.images.quantize`, re-predicted by the classifier, and an image counts as a success
only if its rounded version meets the goal (a peer image that stops being adversarial once
rounded is a failure). The median norm counts failures as infinitely large (so it is finite only
when more than half the images succeed), as Foolbox's and AutoAttack's evaluations do; the
median over the successful images alone is shown too, and, since easy images are the ones a
weak attack gets, the median ratio of each peer's norm to trompe's on the images both turn
adversarial ("vs trompe, same images"; above 1: trompe's changes are smaller). Foolbox's CW and
EAD return an all-zero image where they found nothing; that placeholder is scored as the
original image (a failure). Note that trompe's CW asks for a margin kappa = 0.05 and raises it
where rounding loses the goal, while the peers run with kappa 0 (their default): their float
adversarials sit on the decision boundary, and many do not survive rounding.

Rows (same steps per run and same number of binary-search runs wherever the peer has them):

- L2 (Carlini & Wagner): trompe ``cw`` (defaults: 9 runs of 200 Adam steps, c from 10) and
  ``cw`` with one run; torchattacks ``CW`` (no binary search: one run with its c=1, with the same
  200 steps and with the 1,800 steps that trompe's 9 runs may take); Foolbox
  ``L2CarliniWagnerAttack`` and ART ``CarliniL2Method`` with 9 runs of 200 steps, learning rate
  0.01, kappa/confidence 0 and their own initial constants (1e-3 and 1e-2).
- L1 (EAD): trompe ``ead`` (defaults: 9 runs of 200 iterations, c from 1e-3, beta 1e-3, the L1
  decision rule); torchattacks ``EADL1``, Foolbox ``EADAttack`` (regularization = beta) and ART
  ``ElasticNet`` with the same runs, iterations, learning rate, beta, initial constant and
  decision rule.

Model: the digits CNN of :mod:`trompe.models.digits` (trained in seconds, deterministically),
on the first ``--images`` test digits it classifies correctly. ``--photos 2`` adds the two
bundled photos on EfficientNet-Lite0 at 224 x 224 (slow on a CPU: minutes per row).

Usage::

    /tmp/benchvenv/bin/python benchmarks/bench_cw_ead.py --images 32 --markdown
    python benchmarks/bench_cw_ead.py --targeted --repeats 3 --device cuda

Progress goes to stderr, the tables to stdout.
"""

from __future__ import annotations

import os

# Spinning OpenMP threads make every other busy process a 10x slowdown on a shared machine; set
# before torch is imported (an explicit setting is respected).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# benchmarks/_harness.py and _peers.py: found because a script's own folder is first on sys.path.
import _harness as h
import torch
from _peers import art_cw_ead, foolbox_cw_ead, torchattacks_cw, torchattacks_ead

import trompe
from trompe.attacks import CarliniWagnerL2, Goal, Targeted, Untargeted, measure
from trompe.attacks.ead import EAD

# One attack run: (images, classes) -> adversarial images (any float values; scored after).
Runner = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class NormRow(h.Row):
    success: torch.Tensor | None = None
    norms: torch.Tensor | None = None


def trompe_runner(clf: trompe.Classifier, attack: CarliniWagnerL2 | EAD, targeted: bool) -> Runner:
    def run(images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        goal = Targeted(classes) if targeted else Untargeted(classes)
        return attack(clf, images, goal).adversarial

    return run


def build_rows(clf: trompe.Classifier, args: argparse.Namespace, batch: int) -> list[NormRow]:
    """The rows, ``group`` the norm ("L2" or "L1")."""
    steps, runs, targeted, device, total = (
        args.steps,
        args.runs,
        args.targeted,
        torch.device(args.device),
        args.steps * args.runs,
    )
    peers: list[tuple[str, str, str, Callable[..., Runner], tuple[object, ...]]] = [
        ("L2", "torchattacks", f"torchattacks CW, c=1, {steps} steps", torchattacks_cw,
         (clf, steps, targeted)),
        ("L2", "torchattacks", f"torchattacks CW, c=1, {total} steps", torchattacks_cw,
         (clf, total, targeted)),
        ("L2", "foolbox", f"Foolbox L2CarliniWagnerAttack, {runs} x {steps}", foolbox_cw_ead,
         (clf, "cw", steps, runs, targeted, device)),
        ("L2", "art", f"ART CarliniL2Method, {runs} x {steps}", art_cw_ead,
         (clf, "cw", steps, runs, targeted, batch)),
        ("L1", "torchattacks", f"torchattacks EADL1, {runs} x {steps}", torchattacks_ead,
         (clf, steps, runs, targeted)),
        ("L1", "foolbox", f"Foolbox EADAttack, {runs} x {steps}", foolbox_cw_ead,
         (clf, "ead", steps, runs, targeted, device)),
        ("L1", "art", f"ART ElasticNet, {runs} x {steps}", art_cw_ead,
         (clf, "ead", steps, runs, targeted, batch)),
    ]  # fmt: skip
    cw, ead = CarliniWagnerL2, EAD
    rows = [
        NormRow(f"trompe cw, {runs} x {steps}", trompe_runner(
            clf, cw(steps=steps, binary_search_steps=runs), targeted), group="L2"),
        NormRow(f"trompe cw, 1 x {steps}", trompe_runner(
            clf, cw(steps=steps, binary_search_steps=1), targeted), group="L2"),
        NormRow(f"trompe ead, {runs} x {steps}", trompe_runner(
            clf, ead(steps=steps, binary_search_steps=runs), targeted), group="L1"),
    ]  # fmt: skip
    for family, key, name, make, make_args in peers:
        label = f"{name} ({h.PEERS[key]} {h.package_version(key)})"
        skip = key in args.skip
        rows.append(h.setup_row(label, make, *make_args, skip=skip, cls=NormRow, group=family))
    return sorted(rows, key=lambda row: row.group, reverse=True)


def score(row: NormRow, clf: trompe.Classifier, images: torch.Tensor, goal: Goal) -> None:
    """Success after 8-bit rounding, and the norm (0-255) of the rounded change."""
    if row.done:
        output = h.rounded(images, row.outcome)
        with torch.no_grad():
            row.success = goal.met(clf(output)).cpu()
        row.norms = measure(images, output).of("l2" if row.group == "L2" else "l1")


def table(report: h.Report, title: str, rows: list[NormRow]) -> None:
    header = [
        "attack",
        "norm",
        "success",
        "median (failures = inf)",
        "median of successes",
        "vs trompe, same images",
        "time (s)",
    ]
    body = []
    reference: dict[str, NormRow] = {}
    for row in rows:  # the first trompe row of each family is the reference
        if row.name.startswith("trompe") and row.success is not None:
            reference.setdefault(row.group, row)
    for row in rows:
        if row.success is None or row.norms is None:
            body.append([row.name, row.group, "-", "-", "-", "-", row.reason])
            continue
        ok = row.success
        of_successes = float(row.norms[ok].median()) if ok.any() else float("nan")
        ratio = "-"
        ref = reference.get(row.group)
        if ref is not None and ref is not row and ref.norms is not None and ref.success is not None:
            both = ok & ref.success & (ref.norms > 0)
            if both.any():
                ratio = (
                    f"{float((row.norms[both] / ref.norms[both]).median()):.2f} ({int(both.sum())})"
                )
        body.append(
            [
                row.name,
                row.group,
                f"{ok.float().mean():.0%}",
                f"{h.median_inf(ok, row.norms, lower=True):.1f}",
                f"{of_successes:.1f}",
                ratio,
                f"{row.median:.2f}",
            ]
        )
    report.add("", title, "")
    report.table(header, body)
    report.add(
        "",
        "'vs trompe, same images': the median over the images that both this row and the "
        "first trompe row of its norm turn adversarial of (this row's norm / trompe's norm), "
        "and how many images that is; above 1: trompe's changes are smaller.",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = h.arguments(__doc__, repeats=1, threads=0)
    parser.add_argument("--images", type=int, default=32, help="digits to attack (default 32)")
    parser.add_argument(
        "--photos",
        type=int,
        default=0,
        choices=[0, 1, 2],
        help="also attack this many bundled photos on Lite0 at 224 (slow)",
    )
    parser.add_argument("--steps", type=int, default=200, help="steps per run (default 200)")
    parser.add_argument("--runs", type=int, default=9, help="binary-search runs (default 9)")
    parser.add_argument(
        "--targeted",
        action="store_true",
        help="targeted: each image to (label + 1) mod 10 (photos: label + 1)",
    )
    args = h.parse(parser, argv)
    device = torch.device(args.device)
    report = h.Report(args.markdown)
    report.add("; ".join(h.environment(device, "torchattacks", "foolbox", "art")))
    batches = [("digits CNN", *h.digits_batch(args.images, device))]
    if args.photos:
        clf, images, labels, _ = h.lite0_photos(device, h.BUNDLED[: args.photos])
        batches.append(("EfficientNet-Lite0, 224 x 224", clf, images, labels))
    for title, clf, images, labels in batches:
        classes = (labels + 1) % clf.num_classes if args.targeted else labels
        rows = [r.bind(images, classes) for r in build_rows(clf, args, len(images))]
        h.run_rows(rows, args.repeats, device, interleave=False)
        goal = Targeted(classes) if args.targeted else Untargeted(classes)
        for row in rows:
            score(row, clf, images, goal)
        kind = "targeted (label + 1)" if args.targeted else "untargeted"
        table(
            report,
            f"{title}: {len(images)} images, {kind}; norms in 0-255 units after 8-bit rounding",
            rows,
        )
    report.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
