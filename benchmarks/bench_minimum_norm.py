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
runner from a :class:`Context`.

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

import argparse
import logging
import math
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

# benchmarks/_common.py: found because a script's own folder is first on sys.path.
from _common import (
    PHOTOS,
    art_classifier,
    digits_batch,
    lite0_photos,
    log,
    package_version,
    render,
    sync,
)

import trompe
from trompe.attacks import AttackResult, Untargeted, measure
from trompe.attacks.ddn import DDN
from trompe.attacks.deepfool import DeepFool
from trompe.images import quantize

# DeepFool and DDN settings of the papers / reference implementations, for every library.
DEEPFOOL_STEPS = 50
DEEPFOOL_CANDIDATES = 10
OVERSHOOT = 0.02
DDN_STEPS = 100
DDN_INIT_EPSILON = 1.0
DDN_GAMMA = 0.05


# -- data -----------------------------------------------------------------------------------------


@dataclass
class Dataset:
    name: str
    clf: trompe.Classifier
    images: torch.Tensor  # (N, 3, H, W) on the 8-bit grid
    labels: torch.Tensor  # the model's (correct) predictions
    notes: list[str] = field(default_factory=list)


def digits_dataset(count: int, device: torch.device) -> Dataset:
    clf, images, labels = digits_batch(count, device)
    return Dataset(f"digits CNN, {len(images)} test digits (8 x 8)", clf, images, labels)


def photos_dataset(count: int, device: torch.device) -> Dataset:
    # Labels: the model's own answers (untargeted: away from them).
    clf, batch, labels, missing = lite0_photos(device, PHOTOS[:count])
    notes = [f"photos not found: {', '.join(missing)} (install scikit-image)"] if missing else []
    name = f"EfficientNet-Lite0, {len(batch)} photos at 224 x 224"
    return Dataset(name, clf, batch, labels, notes)


# -- methods --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    clf: trompe.Classifier
    device: torch.device
    batch: int
    photos: bool  # the ImageNet model (1000 classes, 224 x 224)


@dataclass
class Outcome:
    adversarial: torch.Tensor
    result: AttackResult | None = None  # trompe's own result, for its gradient counts


#: A runner attacks (images, labels); the labels are the true classes (untargeted).
Runner = Callable[[torch.Tensor, torch.Tensor], Outcome]


@dataclass
class Method:
    """One row: ``make`` builds the runner (raising ImportError when the package is missing)."""

    name: str
    norm: str  # "l2" or "linf": the norm the row is measured in
    package: str  # "trompe" or the peer's distribution name
    make: Callable[[Context], Runner]
    note: str = ""


def trompe_runner(attack: trompe.attacks.Attack) -> Callable[[Context], Runner]:
    def make(ctx: Context) -> Runner:
        def run(images: torch.Tensor, labels: torch.Tensor) -> Outcome:
            result = attack(ctx.clf, images, Untargeted(labels))
            return Outcome(result.adversarial, result)

        return run

    return make


class Skipped(Exception):
    """A row left out on purpose; the message says why."""


def torchattacks_deepfool(ctx: Context) -> Runner:
    import torchattacks

    if ctx.photos:
        raise Skipped("left out: a backward pass for each of the 1000 classes at every step")
    attack = torchattacks.DeepFool(ctx.clf, steps=DEEPFOOL_STEPS, overshoot=OVERSHOOT)

    def run(images: torch.Tensor, labels: torch.Tensor) -> Outcome:
        return Outcome(attack(images, labels))

    return run


def _foolbox(ctx: Context, make_attack: Callable[[object], object]) -> Runner:
    import foolbox as fb

    model = fb.PyTorchModel(ctx.clf, bounds=(0, 1), device=ctx.device)
    attack = make_attack(fb)

    def run(images: torch.Tensor, labels: torch.Tensor) -> Outcome:
        criterion = fb.criteria.Misclassification(labels)
        _, clipped, _ = attack(model, images, criterion, epsilons=None)  # type: ignore[operator]
        return Outcome(clipped)

    return run


def foolbox_deepfool(norm: str) -> Callable[[Context], Runner]:
    def make(ctx: Context) -> Runner:
        def build(fb: object) -> object:
            cls = fb.attacks.L2DeepFoolAttack if norm == "l2" else fb.attacks.LinfDeepFoolAttack  # type: ignore[attr-defined]
            return cls(steps=DEEPFOOL_STEPS, candidates=DEEPFOOL_CANDIDATES, overshoot=OVERSHOOT)

        return _foolbox(ctx, build)

    return make


def foolbox_ddn(ctx: Context) -> Runner:
    def build(fb: object) -> object:
        return fb.attacks.DDNAttack(  # type: ignore[attr-defined]
            init_epsilon=DDN_INIT_EPSILON, steps=DDN_STEPS, gamma=DDN_GAMMA
        )

    return _foolbox(ctx, build)


def art_deepfool(ctx: Context) -> Runner:
    from art.attacks.evasion import DeepFool as ArtDeepFool

    logging.getLogger("art").setLevel(logging.WARNING)
    state: dict[str, object] = {}

    def run(images: torch.Tensor, labels: torch.Tensor) -> Outcome:
        if "attack" not in state:
            estimator = art_classifier(ctx.clf, images.shape[1:], ctx.clf.num_classes, ctx.device)
            state["attack"] = ArtDeepFool(
                estimator,
                max_iter=DEEPFOOL_STEPS,
                epsilon=OVERSHOOT,
                nb_grads=DEEPFOOL_CANDIDATES,
                # On the photos, one image per batch: ART linearises over the union of the
                # batch's top classes, which grows with the batch.
                batch_size=1 if ctx.photos else ctx.batch,
                verbose=False,
            )
        attack = state["attack"]
        # ART works on NumPy arrays (and attacks the model's own predictions): the conversions
        # are part of its cost.
        adversarial = attack.generate(x=images.cpu().numpy())  # type: ignore[attr-defined]
        return Outcome(torch.from_numpy(adversarial).to(images.device))

    return run


def build_methods() -> list[Method]:
    """Every row, in table order. Other minimum-norm attacks are added here."""
    return [
        Method("trompe DeepFool", "l2", "trompe", trompe_runner(DeepFool(norm="l2"))),
        Method(
            "trompe DeepFool, projections=0",
            "l2",
            "trompe",
            trompe_runner(DeepFool(norm="l2", projections=0)),
            note="as published",
        ),
        Method("trompe DDN", "l2", "trompe", trompe_runner(DDN())),
        Method("torchattacks DeepFool", "l2", "torchattacks", torchattacks_deepfool),
        Method("Foolbox L2DeepFoolAttack", "l2", "foolbox", foolbox_deepfool("l2")),
        Method("Foolbox DDNAttack", "l2", "foolbox", foolbox_ddn),
        Method("ART DeepFool", "l2", "adversarial-robustness-toolbox", art_deepfool),
        Method("trompe DeepFool", "linf", "trompe", trompe_runner(DeepFool(norm="linf"))),
        Method(
            "trompe DeepFool, projections=0",
            "linf",
            "trompe",
            trompe_runner(DeepFool(norm="linf", projections=0)),
            note="as published",
        ),
        Method("Foolbox LinfDeepFoolAttack", "linf", "foolbox", foolbox_deepfool("linf")),
    ]


# -- scoring and running --------------------------------------------------------------------------


@dataclass
class Score:
    success: torch.Tensor  # adversarial after 8-bit rounding
    float_success: torch.Tensor  # adversarial as returned (before rounding)
    distances: torch.Tensor  # in the row's norm, 0-255 units, on the 8-bit output; inf: failure


def score(
    clf: trompe.Classifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    adversarial: torch.Tensor,
    norm: str,
) -> Score:
    """Round to 8 bits, re-predict, measure: the same for every row."""
    adversarial = adversarial.detach().to(images.device).float()
    rounded = quantize(adversarial.clamp(0, 1))
    with torch.no_grad():
        success = clf(rounded).argmax(dim=1) != labels
        float_success = clf(adversarial.clamp(0, 1)).argmax(dim=1) != labels
    distances = measure(images, rounded).of(norm).clone()
    distances[~success.cpu()] = math.inf
    return Score(success.cpu(), float_success.cpu(), distances)


@dataclass
class Row:
    method: Method
    label: str
    runner: Runner | None = None
    seconds: list[float] = field(default_factory=list)
    outcome: Outcome | None = None
    score: Score | None = None
    error: str | None = None


def set_up(methods: Sequence[Method], ctx: Context, skip: Sequence[str]) -> list[Row]:
    rows = []
    for method in methods:
        version = (
            package_version(method.package) if method.package != "trompe" else trompe.__version__
        )
        label = method.name if version == "not installed" else f"{method.name} ({version})"
        row = Row(method, label)
        if any(s.lower() in method.name.lower() or s == method.package for s in skip):
            row.error = "skipped (--skip)"
        else:
            try:
                row.runner = method.make(ctx)
            except Skipped as reason:
                row.error = str(reason)
            except ImportError as error:
                row.error = f"not installed ({error})"
            except Exception as error:  # a peer that breaks must not stop the benchmark
                row.error = (
                    f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
                )
        rows.append(row)
    return rows


def run_rows(
    rows: list[Row], data: Dataset, device: torch.device, repeats: int, warm_up: bool
) -> None:
    active = [row for row in rows if row.runner is not None]
    if warm_up:
        log(f"{data.name}: warm-up on one image")
        for row in active:
            assert row.runner is not None
            try:
                row.runner(data.images[:1], data.labels[:1])
            except Exception as error:
                row.error = f"{type(error).__name__}: {error}"
                log(f"  {row.label}: failed: {row.error}")
    active = [row for row in active if row.error is None]
    for repeat in range(repeats):
        # Forward, then backward order: a load that drifts hits every row alike on average.
        for row in active if repeat % 2 == 0 else active[::-1]:
            assert row.runner is not None
            if row.error is not None:
                continue
            sync(device)
            start = time.perf_counter()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    outcome = row.runner(data.images, data.labels)
            except Exception as error:
                row.error = f"{type(error).__name__}: {error}"
                log(f"  {row.label}: failed: {row.error}")
                continue
            sync(device)
            row.seconds.append(time.perf_counter() - start)
            row.outcome = outcome
            log(f"  repeat {repeat + 1}/{repeats}  {row.label}: {row.seconds[-1]:.2f} s")
    for row in active:
        if row.outcome is not None and row.error is None:
            row.score = score(
                data.clf, data.images, data.labels, row.outcome.adversarial, row.method.norm
            )


# -- tables ---------------------------------------------------------------------------------------


def _number(value: float) -> str:
    if math.isinf(value):
        return "inf"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def table(rows: list[Row], markdown: bool) -> str:
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
        norm = "L2" if row.method.norm == "l2" else "L-inf"
        name = row.label + (f" [{row.method.note}]" if row.method.note else "")
        if row.score is None:
            reason = row.error or "no result"
            body.append([norm, name, *("-" for _ in header[2:-1]), reason])
            continue
        s = row.score
        n = len(s.success)
        finite = s.distances[torch.isfinite(s.distances)].numpy()
        grads = "-"
        if row.outcome is not None and row.outcome.result is not None:
            grads = f"{row.outcome.result.gradients.float().mean():.1f}"
        body.append(
            [
                norm,
                name,
                f"{int(s.success.sum())}/{n}",
                f"{int(s.float_success.sum())}/{n}",
                _number(float(np.median(s.distances.numpy()))),
                _number(float(np.median(finite))) if len(finite) else "-",
                f"{statistics.median(row.seconds):.2f}",
                grads,
            ]
        )
    return render(header, body, markdown, rule=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--digits", type=int, default=128, help="digits to attack (default 128)")
    parser.add_argument(
        "--photos", type=int, default=0, help="also attack this many photos with Lite0 (max 6)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per row (default 3)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on CPU; 0: default")
    parser.add_argument("--skip", nargs="*", default=[], help="rows or packages to leave out")
    parser.add_argument("--only", nargs="*", default=[], help="keep rows whose name has one of")
    parser.add_argument("--markdown", action="store_true", help="print markdown tables")
    parser.add_argument(
        "--no-warmup", action="store_true", help="no untimed warm-up run (saves time on photos)"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    methods = build_methods()
    if args.only:
        methods = [m for m in methods if any(o.lower() in m.name.lower() for o in args.only)]

    datasets = []
    if args.digits > 0:
        datasets.append(("digits", lambda: digits_dataset(args.digits, device)))
    if args.photos > 0:
        datasets.append(("photos", lambda: photos_dataset(args.photos, device)))
    print(
        f"trompe {trompe.__version__}, torch {torch.__version__}, {platform.machine()}, "
        f"device {device}, {torch.get_num_threads()} threads, repeats {args.repeats}"
    )
    for kind, load in datasets:
        data = load()
        ctx = Context(data.clf, device, len(data.images), photos=kind == "photos")
        rows = set_up(methods, ctx, args.skip)
        run_rows(rows, data, device, args.repeats, warm_up=not args.no_warmup)
        print()
        print(f"### {data.name}: untargeted, norms in 0-255 units after 8-bit rounding")
        for note in data.notes:
            print(f"note: {note}")
        print()
        print(table(rows, args.markdown))
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
