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
import logging
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
    sync,
    versions_line,
)

import trompe
from trompe.attacks import PGD, Attack, Untargeted, measure
from trompe.attacks.apgd import APGD, APGDDLR, APGDT
from trompe.attacks.base import FixedBudgetAttack, Norm
from trompe.images import quantize


@dataclass(frozen=True)
class Setting:
    norm: str  # "linf" | "l2"
    eps: float  # [0, 1] units
    steps: int
    restarts: int
    targets: int  # APGD-T target classes
    batch: int
    device: torch.device
    seed: int = 0


# A runner attacks (images, labels) with a number of iterations; returns the float output and,
# for trompe, the gradient count.
Runner = Callable[[torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, int | None]]


@dataclass
class Row:
    attack: str
    library: str
    runner: Runner | None
    note: str = ""
    seconds: list[float] = field(default_factory=list)
    output: torch.Tensor | None = None
    gradients: int | None = None
    error: str | None = None


# -- the rows -----------------------------------------------------------------------------------


def trompe_row(clf: trompe.Classifier, make: Callable[[int], Attack]) -> Runner:
    """``make(steps)`` builds the attack with that many iterations."""

    def run(images: torch.Tensor, labels: torch.Tensor, steps: int) -> tuple[torch.Tensor, int]:
        result = make(steps)(clf, images, Untargeted(labels))
        return result.adversarial, int(result.gradients.sum())

    return run


def torchattacks_row(clf: trompe.Classifier, setting: Setting, kind: str) -> Runner:
    import torchattacks

    norm = "Linf" if setting.norm == "linf" else "L2"

    def run(images: torch.Tensor, labels: torch.Tensor, steps: int) -> tuple[torch.Tensor, None]:
        common = {
            "norm": norm,
            "eps": setting.eps,
            "steps": steps,
            "n_restarts": setting.restarts,
            "seed": setting.seed,
        }
        if kind == "apgd-t":
            # torchattacks tries n_classes - 1 target classes
            attack = torchattacks.APGDT(clf, n_classes=setting.targets + 1, **common)
        else:
            attack = torchattacks.APGD(clf, loss=kind.removeprefix("apgd-"), **common)
        return attack(images, labels), None

    return run


def art_row(clf: trompe.Classifier, setting: Setting, kind: str) -> Runner:
    from art.attacks.evasion import AutoProjectedGradientDescent

    logging.getLogger("art").setLevel(logging.WARNING)
    shape = (3, *(clf.input_size or (8, 8)))
    estimator = art_classifier(clf, shape, clf.num_classes, setting.device)
    loss_type = "cross_entropy" if kind == "apgd-ce" else "difference_logits_ratio"

    def run(images: torch.Tensor, labels: torch.Tensor, steps: int) -> tuple[torch.Tensor, None]:
        attack = AutoProjectedGradientDescent(
            estimator,
            norm=np.inf if setting.norm == "linf" else 2,
            eps=setting.eps,
            eps_step=2 * setting.eps,  # ART's eps_step is APGD's initial step: 2 eps in the paper
            max_iter=steps,
            targeted=False,
            nb_random_init=setting.restarts,
            batch_size=setting.batch,
            loss_type=loss_type,
            verbose=False,
        )
        np.random.seed(setting.seed)  # ART draws its random start from NumPy's global state
        out = attack.generate(x=images.cpu().numpy(), y=labels.cpu().numpy())
        return torch.from_numpy(out).to(images.device), None

    return run


def build_rows(clf: trompe.Classifier, setting: Setting, skip: list[str]) -> list[Row]:
    norm: Norm = "linf" if setting.norm == "linf" else "l2"
    eps, restarts, seed = setting.eps, setting.restarts, setting.seed

    def pgd(steps: int) -> Attack:
        return PGD(eps=eps, norm=norm, steps=steps, seed=seed)

    def apgd_ce(steps: int) -> Attack:
        return APGD(eps=eps, norm=norm, steps=steps, restarts=restarts, seed=seed)

    def apgd_dlr(steps: int) -> Attack:
        return APGDDLR(eps=eps, norm=norm, steps=steps, restarts=restarts, seed=seed)

    def apgd_t(steps: int) -> Attack:
        return APGDT(
            eps=eps, norm=norm, steps=steps, restarts=restarts, targets=setting.targets, seed=seed
        )

    rows = [Row("pgd (step eps/4)", "trompe", trompe_row(clf, pgd))]
    makers: list[tuple[str, Callable[[int], Attack]]] = [
        ("apgd-ce", apgd_ce),
        ("apgd-dlr", apgd_dlr),
        ("apgd-t", apgd_t),
    ]
    for kind, make in makers:
        rows.append(Row(kind, "trompe", trompe_row(clf, make)))
        for library, maker in (("torchattacks", torchattacks_row), ("ART", art_row)):
            if library.lower() in skip:
                rows.append(Row(kind, library, None, "skipped (--skip)"))
                continue
            if library == "ART" and kind == "apgd-t":
                rows.append(Row(kind, library, None, "no top-k APGD-T in ART"))
                continue
            try:
                rows.append(Row(kind, library, maker(clf, setting, kind)))
            except Exception as error:  # a peer missing or broken: say so, go on
                rows.append(Row(kind, library, None, f"{type(error).__name__}: {error}"))
    return rows


# -- running and scoring ------------------------------------------------------------------------


def run_rows(
    rows: list[Row], images: torch.Tensor, labels: torch.Tensor, steps: int, repeats: int
) -> None:
    active = [r for r in rows if r.runner is not None]
    for row in active:
        assert row.runner is not None
        try:
            row.runner(images, labels, 2)  # warm-up
        except Exception as error:
            row.error = f"{type(error).__name__}: {error}"
            log(f"  {row.library} {row.attack}: failed: {row.error}")
    active = [r for r in active if r.error is None]
    for repeat in range(repeats):
        # A B C ... then ... C B A: a load that drifts hits every row alike on average.
        for row in active if repeat % 2 == 0 else active[::-1]:
            assert row.runner is not None
            sync(images.device)
            start = time.perf_counter()
            output, gradients = row.runner(images, labels, steps)
            sync(images.device)
            row.seconds.append(time.perf_counter() - start)
            row.output, row.gradients = output.detach(), gradients
            log(f"  {repeat + 1}/{repeats} {row.library} {row.attack}: {row.seconds[-1]:.2f} s")


@dataclass
class Score:
    robust: int  # images whose true label survives, on the 8-bit output
    robust_in_budget: int  # the same, the output rounded to 8 bits within the budget
    max_norm: float  # 0-255 units, after rounding
    over_budget: int  # images whose rounded change exceeds eps


def score(
    clf: trompe.Classifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    out: torch.Tensor,
    s: Setting,
) -> Score:
    out = out.to(images.device).clamp(0, 1)
    rounded = quantize(out)
    # What the output would give if rounded as trompe rounds: never out of the ball.
    norm: Norm = "linf" if s.norm == "linf" else "l2"
    inside = FixedBudgetAttack.round_into_budget(APGD(eps=s.eps, norm=norm), out, images)
    with torch.no_grad():
        robust = clf(rounded).argmax(dim=1) == labels
        robust_inside = clf(inside).argmax(dim=1) == labels
    norms = measure(images, rounded)
    size = norms.linf if s.norm == "linf" else norms.l2
    over = size > s.eps * 255 + 1e-3
    return Score(int(robust.sum()), int(robust_inside.sum()), float(size.max()), int(over.sum()))


def table(
    clf: trompe.Classifier,
    rows: list[Row],
    images: torch.Tensor,
    labels: torch.Tensor,
    setting: Setting,
    markdown: bool,
) -> str:
    with torch.no_grad():
        clean = int((clf(images).argmax(dim=1) == labels).sum())
    n = len(images)
    header = [
        "attack",
        "library",
        "robust acc. (8-bit)",
        "in budget",
        "max norm (0-255)",
        "over budget",
        "seconds",
        "gradients",
    ]
    body = [["none (clean)", "-", f"{clean / n:.1%} ({clean}/{n})", "-", "0", "0", "-", "-"]]
    for row in rows:
        if row.output is None:
            body.append([row.attack, row.library, row.note or row.error or "-"] + [""] * 5)
            continue
        s = score(clf, images, labels, row.output, setting)
        body.append(
            [
                row.attack,
                row.library,
                f"{s.robust / n:.1%} ({s.robust}/{n})",
                f"{s.robust_in_budget / n:.1%}",
                f"{s.max_norm:.2f}",
                str(s.over_budget),
                f"{statistics.median(row.seconds):.2f}",
                "-" if row.gradients is None else str(row.gradients),
            ]
        )
    return render(header, body, markdown)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per row (3)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--markdown", action="store_true", help="print GitHub markdown tables")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on the CPU (2)")
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
    parser.add_argument("--skip", default="", help="peers to leave out: torchattacks,art")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    require_device(parser, args.device)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    cpu_threads(args.device, args.threads)
    device = torch.device(args.device)
    warnings.filterwarnings("ignore")
    skip = comma_list(args.skip, lower=True)
    norms = comma_list(args.norms)
    md = "- " if args.markdown else ""
    title = "#" if args.markdown else ""

    out = [
        f"{title}# Auto-PGD: trompe vs torchattacks and ART ({args.steps} iterations, "
        f"{args.restarts} restart(s), untargeted)",
        "",
        f"{md}{versions_line()}, torchattacks {package_version('torchattacks')}, ART "
        f"{package_version('adversarial-robustness-toolbox')}",
        f"{md}{device_line(device)}",
        f"{md}robust accuracy on the output rounded to 8 bits and re-predicted; seconds: median of "
        f"{args.repeats} run(s); gradients: per-image gradient passes (trompe; the peers run "
        f"every iteration on every image: {args.steps} per image and run, times the targets "
        "for APGD-T)",
    ]
    out += [md + line for line in load_lines()]

    log("training the digits CNN (seed 0)")
    # The first test digits, wrong ones too (they count as not robust for everyone).
    digits_clf, images, labels = digits_batch(args.digits, device, correct_only=False)
    suites: list[tuple[str, trompe.Classifier, torch.Tensor, torch.Tensor, Setting]] = []
    for norm in norms:
        eps = args.linf / 255 if norm == "linf" else args.l2
        shown = f"{args.linf:g}/255" if norm == "linf" else f"{args.l2:g} ({args.l2 * 255:g}/255)"
        setting = Setting(norm, eps, args.steps, args.restarts, args.targets, len(images), device)
        name = f"digits CNN, {len(images)} test digits (8x8), {norm} eps {shown}"
        suites.append((name, digits_clf, images, labels, setting))
    if args.photos > 0:
        # Labels: the model's own top-1 (attacked).
        lite, photos, photo_labels, _ = lite0_photos(device, PHOTOS, limit=args.photos)
        eps = args.photo_linf / 255
        setting = Setting("linf", eps, args.steps, args.restarts, args.targets, len(photos), device)
        name = (
            f"EfficientNet-Lite0, {len(photos)} photos at 224x224, linf eps {args.photo_linf:g}"
            "/255, label = the model's clean top-1"
        )
        suites.append((name, lite, photos, photo_labels, setting))

    for name, clf, x, y, setting in suites:
        log(name)
        rows = build_rows(clf, setting, skip)
        run_rows(rows, x, y, setting.steps, args.repeats)
        out += ["", f"{title}## {name}", "", table(clf, rows, x, y, setting, args.markdown)]
        notes = [r for r in rows if r.error]
        out += [f"{md}{r.library} {r.attack}: {r.error}" for r in notes]
    out += ["", f"{md}total wall time {time.perf_counter() - started:.0f} s"]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
