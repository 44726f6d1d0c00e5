"""Benchmark trompe's FAB against the peer libraries' FAB: median norm, success and time.

FAB (Croce & Hein, ICML 2020, arXiv:1907.02044) is a minimum-norm attack, so the score is the
size of the change it finds, per image, in 0-255 units. Every row is scored the same way: the
output is rounded to 8 bits with :func:`trompe.images.quantize` (what a saved PNG holds),
re-predicted, and an image whose rounded output does not meet the goal is a failure; the
median norm counts failures as infinite (so a row with more than half failures has median
inf), and the median over successes is shown too. Times are medians over ``--repeats`` runs
after a warm-up run of every row on a few images.

Peers: torchattacks ``FAB`` (the port of the reference implementation; its ``eps`` is set to
1 in L-inf and 100 in L2 so that it caps nothing: it only sizes random restarts, off here).
Foolbox 3 and ART have no FAB (checked in the installed versions: the rows say so).

Tables:

1. Digits CNN (trompe.models.digits, trained in seconds), ``--size`` correctly classified test
   digits, untargeted, L-inf, L2 and L1, at ``--steps`` iterations (100, the reference
   implementation's and AutoAttack's default) and at 10 (torchattacks' default).
2. The same digits, targeted at a user-chosen class per image (``label + 1 + i mod 9``):
   torchattacks' targeted FAB judges success as "not the true label" internally, so its output
   is scored here on the target, as every row.
3. ``--photos N`` (default 4): photos at 224 x 224 on EfficientNet-Lite0, untargeted L-inf.
   trompe linearises the 9 most likely rival classes per step; torchattacks' untargeted FAB
   takes one backward pass per class (1000 per step), so it runs as FAB-T (``multi_targeted``,
   9 target classes, ``--photo-steps`` each), AutoAttack's ImageNet setting.

Usage::

    /tmp/benchvenv/bin/python benchmarks/bench_fab.py --markdown
    /tmp/benchvenv/bin/python benchmarks/bench_fab.py --size 16 --repeats 1 --photos 0

Progress goes to stderr, the tables to stdout.
"""

from __future__ import annotations

import os

# Passive OpenMP waiting keeps timings meaningful on a shared machine (see bench_pgd.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# benchmarks/_harness.py and _peers.py: found because a script's own folder is first on sys.path.
import _harness as h
import torch
from _peers import has_attack, torchattacks_fab

import trompe
from trompe.attacks import Goal, Targeted, Untargeted, measure
from trompe.attacks.fab import FAB

#: (images, labels, targets or None) -> adversarial images
Runner = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


@dataclass
class FabRow(h.Row):
    table: str = ""
    met: torch.Tensor | None = None  # per image: the goal holds after 8-bit rounding
    met_float: torch.Tensor | None = None  # per image: before rounding
    size: torch.Tensor | None = None  # per image: norm of the 8-bit change, 0-255 units


def trompe_fab(clf: trompe.Classifier, norm: str, steps: int, **options: int) -> Runner:
    attack = FAB(norm=norm, steps=steps, **options)  # type: ignore[arg-type]

    def run(
        images: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None
    ) -> torch.Tensor:
        goal = Untargeted(labels) if targets is None else Targeted(targets)
        return attack(clf, images, goal).adversarial.to(images.device)

    return run


def score(row: FabRow, clf: trompe.Classifier, images: torch.Tensor, goal: Goal, norm: str) -> None:
    """Per image: success after 8-bit rounding, success before, and the 8-bit norm."""
    if not row.done:
        return
    output = row.outcome
    with torch.no_grad():
        row.met = goal.met(clf(h.rounded(images, output))).cpu()
        row.met_float = goal.met(clf(output.clamp(0, 1))).cpu()
    row.size = measure(images, h.rounded(images, output)).of(norm)


def digits_rows(args: argparse.Namespace, device: torch.device) -> list[FabRow]:
    h.log("training the digits CNN ...")
    clf, images, labels = h.digits_batch(args.size, device)
    targets = (labels + 1 + torch.arange(len(labels), device=device) % 9) % 10
    peers = (
        has_attack("foolbox", "foolbox.attacks", "fab", "adaptiveboundary"),
        has_attack(
            "adversarial-robustness-toolbox", "art.attacks.evasion", "fab", "adaptiveboundary"
        ),
    )
    rows: list[FabRow] = []
    for targeted in (False, True):
        table = "digits, targeted" if targeted else "digits, untargeted"
        wanted = targets if targeted else None
        goal: Goal = Targeted(targets) if targeted else Untargeted(labels)
        for norm in ("linf", "l2", "l1"):
            for steps in sorted({args.steps, 10}, reverse=True):
                group = f"{table} {norm} {steps}"
                batch = [
                    FabRow(
                        f"trompe FAB {norm}, {steps} steps",
                        trompe_fab(clf, norm, steps),
                        group=group,
                        table=table,
                    )
                ]
                if norm != "l1":
                    name = f"torchattacks FAB {norm}, {steps} steps"
                    batch.append(
                        h.setup_row(
                            name,
                            torchattacks_fab,
                            *(clf, norm, steps),
                            skip="torchattacks" in args.skip,
                            cls=FabRow,
                            group=group,
                            table=table,
                        )
                    )
                small = None if wanted is None else wanted[:4]
                batch = [
                    r.bind(images, labels, wanted, warm=(images[:4], labels[:4], small))
                    for r in batch
                ]
                h.log(f"{table}: {norm}, {steps} steps")
                h.run_rows(batch, args.repeats, device, interleave=False)
                for row in batch:
                    score(row, clf, images, goal, norm)
                rows += batch
            if norm == "l1":
                rows.append(
                    FabRow("torchattacks FAB l1", None, "no L1 in its perturb()", table=table)
                )
        for peer in peers:
            rows.append(FabRow(peer.split(":")[0], None, peer.split(": ", 1)[-1], table=table))
    return rows


def photo_rows(args: argparse.Namespace, device: torch.device) -> list[FabRow]:
    if args.photos <= 0:
        return []
    h.log("loading EfficientNet-Lite0 and the photos ...")
    clf, batch, labels, _ = h.lite0_photos(device, h.PHOTOS, limit=args.photos)
    table = f"{len(batch)} photos, Lite0 224 px, untargeted"
    steps = args.photo_steps
    rows = [
        FabRow(
            f"trompe FAB linf, {steps} steps x 9 rivals",
            trompe_fab(clf, "linf", steps, candidates=9),
            group=table,
            table=table,
        ),
        h.setup_row(
            f"torchattacks FAB-T linf, 9 targets x {steps} steps",
            torchattacks_fab,
            *(clf, "linf", steps, True),
            skip="torchattacks" in args.skip,
            cls=FabRow,
            group=table,
            table=table,
        ),
    ]
    rows = [r.bind(batch, labels, None) for r in rows]
    h.run_rows(rows, 1, device, interleave=False)
    for row in rows:
        score(row, clf, batch, Untargeted(labels), "linf")
    return rows


def summarise(row: FabRow, common: torch.Tensor | None) -> list[str]:
    if row.met is None or row.size is None or row.met_float is None:
        return [row.name, "-", "-", "-", "-", "-", "-", row.note or row.error or ""]
    ok = row.size[row.met]
    shared = row.size[common] if common is not None and bool(common.any()) else None
    return [
        row.name,
        f"{float(row.met.float().mean()):.0%}",
        h.number(h.median_inf(row.met, row.size, lower=True)),
        h.number(float(ok.median())) if len(ok) else "-",
        h.number(float(shared.median())) + f" ({len(shared)})" if shared is not None else "-",
        f"{float(row.met_float.float().mean()):.0%}",
        h.number(row.median, 2),
        row.note,
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = h.arguments(__doc__, repeats=3, threads=2)
    parser.add_argument("--size", type=int, default=64, help="digits attacked (default 64)")
    parser.add_argument("--steps", type=int, default=100, help="FAB iterations (default 100)")
    parser.add_argument("--photos", type=int, default=4, help="photos on Lite0 (0: none)")
    parser.add_argument("--photo-steps", type=int, default=20, help="FAB steps on photos")
    args = h.parse(parser, argv)
    device = torch.device(args.device)
    rows = digits_rows(args, device) + photo_rows(args, device)
    report = h.Report(args.markdown)
    report.add(
        f"FAB benchmark: {'; '.join(h.environment(device, 'torchattacks'))}; norms in 0-255 units "
        f"on the 8-bit outputs; times: median of {args.repeats} (photos: 1 run)"
    )
    header = (
        "attack",
        "success (8-bit)",
        "median norm (failures inf)",
        "median norm of successes",
        "median norm where all rows succeed (images)",
        "success before rounding",
        "time (s)",
        "note",
    )
    common: dict[str, torch.Tensor] = {}
    for row in rows:
        if row.met is not None:
            common[row.group] = common.get(row.group, row.met) & row.met
    for table in dict.fromkeys(r.table for r in rows):
        report.heading(table, 2)
        report.table(header, [summarise(r, common.get(r.group)) for r in rows if r.table == table])
    report.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
