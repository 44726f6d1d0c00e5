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
import contextlib
import importlib
import importlib.metadata
import math
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

# benchmarks/_common.py: found because a script's own folder is first on sys.path.
from _common import PHOTOS, digits_batch, lite0_photos, log, render

import trompe
from trompe.attacks import Goal, Targeted, Untargeted, measure
from trompe.attacks.fab import FAB
from trompe.images import quantize

PEER_NORM = {"linf": "Linf", "l2": "L2"}
PEER_EPS = {"linf": 1.0, "l2": 100.0}  # large: torchattacks drops results above eps

#: (images, labels, targets or None) -> adversarial images
Runner = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


# -- scoring --------------------------------------------------------------------------------------


@dataclass
class Row:
    table: str
    name: str
    group: str = ""  # rows of one group attack the same images with the same norm and steps
    met: torch.Tensor | None = None  # per image: the goal holds after 8-bit rounding
    met_float: torch.Tensor | None = None  # per image: before rounding
    size: torch.Tensor | None = None  # per image: norm of the 8-bit change, 0-255 units
    seconds: float = math.nan
    note: str = ""


def score(
    clf: trompe.Classifier,
    images: torch.Tensor,
    output: torch.Tensor,
    goal: Goal,
    norm: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image: success after 8-bit rounding, success before, and the 8-bit norm."""
    rounded = quantize(output.clamp(0, 1))
    with torch.no_grad():
        met = goal.met(clf(rounded)).cpu()
        met_float = goal.met(clf(output.clamp(0, 1))).cpu()
    return met, met_float, measure(images, rounded).of(norm)


def summarise(row: Row, common: torch.Tensor | None) -> tuple[str, ...]:
    if row.met is None or row.size is None or row.met_float is None:
        return (row.name, "-", "-", "-", "-", "-", "-", row.note)
    inf = torch.full_like(row.size, math.inf)
    with_failures = torch.where(row.met, row.size, inf)
    ok = row.size[row.met]
    shared = row.size[common] if common is not None and bool(common.any()) else None
    return (
        row.name,
        f"{float(row.met.float().mean()):.0%}",
        _fmt(float(with_failures.median())),
        _fmt(float(ok.median())) if len(ok) else "-",
        _fmt(float(shared.median())) + f" ({len(shared)})" if shared is not None else "-",
        f"{float(row.met_float.float().mean()):.0%}",
        _fmt(row.seconds, 2),
        row.note,
    )


def timed(
    run: Runner,
    images: torch.Tensor,
    labels: torch.Tensor,
    targets: torch.Tensor | None,
    repeats: int,
) -> tuple[torch.Tensor, float]:
    times, output = [], images
    for _ in range(repeats):
        start = time.perf_counter()
        output = run(images, labels, targets)
        times.append(time.perf_counter() - start)
    return output, statistics.median(times)


# -- the runners ----------------------------------------------------------------------------------


def trompe_fab(clf: trompe.Classifier, norm: str, steps: int, **options: int) -> Runner:
    attack = FAB(norm=norm, steps=steps, **options)  # type: ignore[arg-type]

    def run(
        images: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None
    ) -> torch.Tensor:
        goal = Untargeted(labels) if targets is None else Targeted(targets)
        return attack(clf, images, goal).adversarial.to(images.device)

    return run


def torchattacks_fab(clf: trompe.Classifier, norm: str, steps: int, multi: bool = False) -> Runner:
    import torchattacks

    attack = torchattacks.FAB(
        clf,
        norm=PEER_NORM[norm],
        eps=PEER_EPS[norm],
        steps=steps,
        n_restarts=1,
        multi_targeted=multi,
        n_classes=10,
        seed=0,
    )

    def run(
        images: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None
    ) -> torch.Tensor:
        with contextlib.redirect_stdout(sys.stderr):  # it prints the mode change
            if targets is None:
                attack.set_mode_default()
            else:
                # torchattacks takes the true labels and computes the targets with a function.
                attack.set_mode_targeted_by_function(lambda _images, _labels: targets)
        output: torch.Tensor = attack(images, labels)
        return output

    return run


def _has_fab(package: str, module: str) -> str:
    try:
        found = importlib.import_module(module)
    except ImportError:
        return f"{package} not installed"
    names = [n for n in dir(found) if "fab" in n.lower() or "adaptiveboundary" in n.lower()]
    version = importlib.metadata.version(package)
    return f"{package} {version}: " + (f"has {names}" if names else "no FAB attack")


# -- the tables -----------------------------------------------------------------------------------


def digits_rows(args: argparse.Namespace, device: torch.device) -> list[Row]:
    log("training the digits CNN ...")
    clf, images, labels = digits_batch(args.size, device)
    targets = (labels + 1 + torch.arange(len(labels), device=device) % 9) % 10
    rows: list[Row] = []
    peers = (
        _has_fab("foolbox", "foolbox.attacks"),
        _has_fab("adversarial-robustness-toolbox", "art.attacks.evasion"),
    )
    for targeted in (False, True):
        table = "digits, targeted" if targeted else "digits, untargeted"
        wanted = targets if targeted else None
        goal: Goal = Targeted(targets) if targeted else Untargeted(labels)
        for norm in ("linf", "l2", "l1"):
            for steps in sorted({args.steps, 10}, reverse=True):
                runners: list[tuple[str, Runner]] = [
                    (f"trompe FAB {norm}, {steps} steps", trompe_fab(clf, norm, steps))
                ]
                if norm in PEER_NORM:
                    runners.append(
                        (
                            f"torchattacks FAB {norm}, {steps} steps",
                            torchattacks_fab(clf, norm, steps),
                        )
                    )
                for name, run in runners:
                    log(f"{table}: {name}")
                    run(images[:4], labels[:4], None if wanted is None else wanted[:4])
                    output, seconds = timed(run, images, labels, wanted, args.repeats)
                    met, met_float, size = score(clf, images, output, goal, norm)
                    group = f"{table} {norm} {steps}"
                    rows.append(Row(table, name, group, met, met_float, size, seconds))
            if norm == "l1":
                rows.append(Row(table, "torchattacks FAB l1", note="no L1 in its perturb()"))
        for peer in peers:
            rows.append(Row(table, peer.split(":")[0], note=peer.split(": ", 1)[1]))
    return rows


def photo_rows(args: argparse.Namespace, device: torch.device) -> list[Row]:
    if args.photos <= 0:
        return []
    log("loading EfficientNet-Lite0 and the photos ...")
    clf, batch, labels, _ = lite0_photos(device, PHOTOS, limit=args.photos)
    table = f"{len(batch)} photos, Lite0 224 px, untargeted"
    goal = Untargeted(labels)
    steps = args.photo_steps
    runners: list[tuple[str, Runner]] = [
        (
            f"trompe FAB linf, {steps} steps x 9 rivals",
            trompe_fab(clf, "linf", steps, candidates=9),
        ),
        (
            f"torchattacks FAB-T linf, 9 targets x {steps} steps",
            torchattacks_fab(clf, "linf", steps, multi=True),
        ),
    ]
    rows = []
    for name, run in runners:
        log(f"{table}: {name}")
        output, seconds = timed(run, batch, labels, None, 1)
        met, met_float, size = score(clf, batch, output, goal, "linf")
        rows.append(Row(table, name, table, met, met_float, size, seconds))
    return rows


# -- output ---------------------------------------------------------------------------------------


def _fmt(value: float, digits: int = 1) -> str:
    if math.isnan(value):
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


def render_tables(rows: list[Row], markdown: bool) -> str:
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
    lines = []
    for table in dict.fromkeys(r.table for r in rows):
        lines.append(f"\n### {table}\n" if markdown else f"\n== {table} ==")
        body = [summarise(r, common.get(r.group)) for r in rows if r.table == table]
        lines.append(render(header, body, markdown))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=64, help="digits attacked (default 64)")
    parser.add_argument("--steps", type=int, default=100, help="FAB iterations (default 100)")
    parser.add_argument("--photos", type=int, default=4, help="photos on Lite0 (0: none)")
    parser.add_argument("--photo-steps", type=int, default=20, help="FAB steps on photos")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per row (median)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (0: default)")
    parser.add_argument("--markdown", action="store_true", help="print markdown tables")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    device = torch.device(args.device)
    rows = digits_rows(args, device) + photo_rows(args, device)
    versions = ", ".join(f"{p} {importlib.metadata.version(p)}" for p in ("torch", "torchattacks"))
    print(
        f"FAB benchmark: {platform.processor() or platform.machine()}, {args.device}, "
        f"{torch.get_num_threads()} threads, {versions}; norms in 0-255 units on the 8-bit "
        f"outputs; times: median of {args.repeats} (photos: 1 run)"
    )
    print(render_tables(rows, args.markdown))


if __name__ == "__main__":
    main()
