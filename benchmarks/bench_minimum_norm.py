"""Benchmark trompe's minimum-norm attacks against the peer libraries: median norm and time.

Rows (one attack and threat model each; a peer that is not installed or fails is listed with the
reason):

- L2: trompe ``DeepFool`` (its default: one SuperDeepFool projection round) and
  ``DeepFool(projections=0)`` (as published), trompe ``DDN``, torchattacks ``DeepFool``, Foolbox
  ``L2DeepFoolAttack`` and ``DDNAttack``, ART ``DeepFool``.
- L-inf: trompe ``DeepFool(norm="linf")`` with and without the projection, Foolbox
  ``LinfDeepFoolAttack``.

Everyone gets the hyper-parameters of the papers / reference implementations: DeepFool 50 steps,
10 candidate classes, overshoot 0.02; DDN 100 steps, initial epsilon 1.0, gamma 0.05. The goal is
untargeted (change the top-1 class) on images the model classifies correctly.

Every row is scored the same way: its output is rounded to 8 bits (what a saved PNG holds) with
:func:`trompe.images.quantize`, re-predicted by the classifier, and measured on those 8-bit
values in 0-255 units. An output that is adversarial in floating point but not once rounded is
a failure (the "float ok" column shows how many were adversarial before rounding). The median
norm counts failures as infinite (so it is "inf" when half the images fail; with an even count
it is the mean of the two middle values); the median over the successes alone is shown next to
it. Times are medians over ``--repeats`` runs, after an untimed
warm-up run of every row on one image (``--no-warmup`` leaves it out).

Data: the digits CNN of :mod:`trompe.models.digits` (trained here in a few seconds) on the first
``--digits`` correctly classified test digits, and, with ``--photos N``, EfficientNet-Lite0 on N
photos brought to its 224 x 224 input (torchattacks' DeepFool is left out there: it takes a
backward pass for every one of the 1000 classes at every step).

To add a minimum-norm attack (FAB, C&W, EAD...), append a :class:`Method` to the list returned
by :func:`build_methods`: a name, a norm, the package it needs, and a function that builds its
runner from a :class:`Context` (a peer's runner goes in ``_peers.py``).

Usage::

    /tmp/benchvenv/bin/python benchmarks/bench_minimum_norm.py                 # 128 digits
    /tmp/benchvenv/bin/python benchmarks/bench_minimum_norm.py --photos 4 --markdown
    /tmp/benchvenv/bin/python benchmarks/bench_minimum_norm.py --digits 32 --repeats 1 --only trompe

Progress goes to stderr, the tables to stdout.
"""

from __future__ import annotations

import os

# Passive OpenMP waiting keeps timings meaningful on a shared machine (see bench_pgd.py). Set
# before torch is imported; an explicit setting is respected.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# benchmarks/_harness.py and _peers.py: found because a script's own folder is first on sys.path.
import _harness as h
import numpy as np
import torch
from _peers import art_deepfool, foolbox_ddn, foolbox_deepfool, torchattacks_deepfool

import trompe
from trompe.attacks import AttackResult, Untargeted, measure
from trompe.attacks.ddn import DDN
from trompe.attacks.deepfool import DeepFool

# DeepFool and DDN settings of the papers / reference implementations, for every library.
DEEPFOOL_STEPS = 50
DEEPFOOL_CANDIDATES = 10
OVERSHOOT = 0.02
DDN_STEPS = 100
DDN_INIT_EPSILON = 1.0
DDN_GAMMA = 0.05


@dataclass(frozen=True)
class Context:
    clf: trompe.Classifier
    device: torch.device
    batch: int
    photos: bool  # the ImageNet model (1000 classes, 224 x 224)


#: A runner attacks (images, labels); the labels are the true classes (untargeted). It returns
#: the output, or trompe's AttackResult (for its gradient counts).
Runner = Callable[[torch.Tensor, torch.Tensor], torch.Tensor | AttackResult]


@dataclass
class Method:
    """One row: ``make`` builds the runner (raising ImportError when the package is missing)."""

    name: str
    norm: str  # "l2" or "linf": the norm the row is measured in
    package: str  # "trompe" or the peer's short name
    make: Callable[[Context], Runner]
    note: str = ""


def trompe_runner(attack: trompe.attacks.Attack) -> Callable[[Context], Runner]:
    def make(ctx: Context) -> Runner:
        return lambda images, labels: attack(ctx.clf, images, Untargeted(labels))

    return make


def torchattacks_row(ctx: Context) -> Runner:
    if ctx.photos:
        raise h.Skipped("left out: a backward pass for each of the 1000 classes at every step")
    return torchattacks_deepfool(ctx.clf, DEEPFOOL_STEPS, OVERSHOOT)


def foolbox_deepfool_row(norm: str) -> Callable[[Context], Runner]:
    return lambda ctx: foolbox_deepfool(
        ctx.clf, norm, DEEPFOOL_STEPS, DEEPFOOL_CANDIDATES, OVERSHOOT, ctx.device
    )


def build_methods() -> list[Method]:
    """Every row, in table order. Other minimum-norm attacks are added here."""
    published = "as published"
    return [
        Method("trompe DeepFool", "l2", "trompe", trompe_runner(DeepFool(norm="l2"))),
        Method("trompe DeepFool, projections=0", "l2", "trompe",
               trompe_runner(DeepFool(norm="l2", projections=0)), published),
        Method("trompe DDN", "l2", "trompe", trompe_runner(DDN())),
        Method("torchattacks DeepFool", "l2", "torchattacks", torchattacks_row),
        Method("Foolbox L2DeepFoolAttack", "l2", "foolbox", foolbox_deepfool_row("l2")),
        Method("Foolbox DDNAttack", "l2", "foolbox", lambda ctx: foolbox_ddn(
            ctx.clf, DDN_INIT_EPSILON, DDN_STEPS, DDN_GAMMA, ctx.device)),
        Method("ART DeepFool", "l2", "art",
               # On the photos, one image per batch: ART linearises over the union of the
               # batch's top classes, which grows with the batch.
               lambda ctx: art_deepfool(ctx.clf, DEEPFOOL_STEPS, OVERSHOOT, DEEPFOOL_CANDIDATES,
                                        1 if ctx.photos else ctx.batch)),
        Method("trompe DeepFool", "linf", "trompe", trompe_runner(DeepFool(norm="linf"))),
        Method("trompe DeepFool, projections=0", "linf", "trompe",
               trompe_runner(DeepFool(norm="linf", projections=0)), published),
        Method("Foolbox LinfDeepFoolAttack", "linf", "foolbox", foolbox_deepfool_row("linf")),
    ]  # fmt: skip


# -- scoring and tables ---------------------------------------------------------------------------


@dataclass
class Score:
    success: torch.Tensor  # adversarial after 8-bit rounding
    float_success: torch.Tensor  # adversarial as returned (before rounding)
    distances: torch.Tensor  # in the row's norm, 0-255 units, on the 8-bit output; inf: failure


def score(
    clf: trompe.Classifier, images: torch.Tensor, labels: torch.Tensor, outcome: object, norm: str
) -> Score:
    """Round to 8 bits, re-predict, measure: the same for every row."""
    adversarial = outcome.adversarial if isinstance(outcome, AttackResult) else outcome
    assert isinstance(adversarial, torch.Tensor)
    output = h.rounded(images, adversarial)
    success = (h.predict(clf, output) != labels).cpu()
    float_success = (h.predict(clf, adversarial.float().clamp(0, 1)) != labels).cpu()
    distances = measure(images, output).of(norm).clone()
    distances[~success] = float("inf")
    return Score(success, float_success, distances)


def _number(value: float) -> str:
    if np.isinf(value):
        return "inf"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def table(
    report: h.Report, rows: list[h.Row], methods: dict[str, Method], scores: dict[str, Score]
) -> None:
    header = [
        "norm",
        "method",
        "8-bit success",
        "float ok",
        "median norm (fail = inf)",
        "median of successes",
        "s (median)",
        "grads / image",
    ]
    body = []
    for row in rows:
        method = methods[row.name]
        norm = "L2" if row.group == "l2" else "L-inf"
        name = row.name.split("\t")[1] + (f" [{method.note}]" if method.note else "")
        s = scores.get(row.name)
        if s is None:
            body.append([norm, name, *("-" for _ in header[2:-1]), row.reason])
            continue
        n = len(s.success)
        finite = s.distances[torch.isfinite(s.distances)]
        grads = "-"
        if isinstance(row.outcome, AttackResult):
            grads = f"{row.outcome.gradients.float().mean():.1f}"
        body.append(
            [
                norm,
                name,
                f"{int(s.success.sum())}/{n}",
                f"{int(s.float_success.sum())}/{n}",
                _number(h.median_inf(s.success, s.distances)),
                _number(float(np.median(finite.numpy()))) if len(finite) else "-",
                f"{row.median:.2f}",
                grads,
            ]
        )
    report.table(header, body, rule=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = h.arguments(__doc__, repeats=3, threads=2)
    parser.add_argument("--digits", type=int, default=128, help="digits to attack (default 128)")
    parser.add_argument(
        "--photos", type=int, default=0, help="also attack this many photos with Lite0 (max 6)"
    )
    parser.add_argument("--only", nargs="*", default=[], help="keep rows whose name has one of")
    parser.add_argument(
        "--no-warmup", action="store_true", help="no untimed warm-up run (saves time on photos)"
    )
    args = h.parse(parser, argv)
    np.seterr(all="ignore")
    device = torch.device(args.device)
    methods = build_methods()
    if args.only:
        methods = [m for m in methods if any(o.lower() in m.name.lower() for o in args.only)]

    report = h.Report(args.markdown)
    report.add(
        "; ".join(h.environment(device, "torchattacks", "foolbox", "art"))
        + f"; repeats {args.repeats}"
    )
    for kind, count in (("digits", args.digits), ("photos", args.photos)):
        if count <= 0:
            continue
        if kind == "digits":
            clf, images, labels = h.digits_batch(count, device)
            title, notes = f"digits CNN, {len(images)} test digits (8 x 8)", []
        else:
            # Labels: the model's own answers (untargeted: away from them).
            clf, images, labels, missing = h.lite0_photos(device, h.PHOTOS[:count])
            title = f"EfficientNet-Lite0, {len(images)} photos at 224 x 224"
            notes = (
                [f"photos not found: {', '.join(missing)} (install scikit-image)"]
                if missing
                else []
            )
        ctx = Context(clf, device, len(images), photos=kind == "photos")
        rows, by_name = [], {}
        for method in methods:
            version = (
                trompe.__version__
                if method.package == "trompe"
                else h.package_version(method.package)
            )
            label = method.name if version == "not installed" else f"{method.name} ({version})"
            key = f"{method.norm}\t{label}"  # a row's name: unique, the label after the tab
            by_name[key] = method
            skip = h.skipped(method.name, args.skip) or method.package in args.skip
            row = h.setup_row(key, method.make, ctx, skip=skip, group=method.norm)
            rows.append(
                row.bind(images, labels, warm=None if args.no_warmup else (images[:1], labels[:1]))
            )
        h.run_rows(rows, args.repeats, device)
        scores = {r.name: score(clf, images, labels, r.outcome, r.group) for r in rows if r.done}
        report.heading(f"{title}: untargeted, norms in 0-255 units after 8-bit rounding", 2)
        report.add(*(f"note: {note}" for note in notes), *([""] if notes else []))
        table(report, rows, by_name, scores)
    report.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
