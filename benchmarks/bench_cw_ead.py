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
import logging
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

# benchmarks/_common.py: found because a script's own folder is first on sys.path.
from _common import (
    BUNDLED,
    art_classifier,
    digits_batch,
    lite0_photos,
    log,
    package_version,
    render,
    sync,
)

import trompe
from trompe.attacks import CarliniWagnerL2, Goal, Targeted, Untargeted, measure
from trompe.attacks.ead import EAD
from trompe.images import quantize

# One attack run: (images, classes) -> adversarial images (any float values; scored after).
Runner = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Setting:
    steps: int  # per run
    runs: int  # binary-search runs
    targeted: bool
    device: torch.device
    batch: int


@dataclass
class Row:
    family: str  # "L2" or "L1"
    name: str
    make: Callable[[], Runner] | None
    note: str = ""
    seconds: list[float] = field(default_factory=list)
    success: torch.Tensor | None = None
    norms: torch.Tensor | None = None
    error: str | None = None


def goal_of(setting: Setting, classes: torch.Tensor) -> Goal:
    return Targeted(classes) if setting.targeted else Untargeted(classes)


# -- trompe ---------------------------------------------------------------------------------------


def trompe_cw(clf: trompe.Classifier, setting: Setting, runs: int) -> Runner:
    def run(images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        attack = CarliniWagnerL2(steps=setting.steps, binary_search_steps=runs)
        return attack(clf, images, goal_of(setting, classes)).adversarial

    return run


def trompe_ead(clf: trompe.Classifier, setting: Setting) -> Runner:
    def run(images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        attack = EAD(steps=setting.steps, binary_search_steps=setting.runs)
        return attack(clf, images, goal_of(setting, classes)).adversarial

    return run


# -- torchattacks ---------------------------------------------------------------------------------


def torchattacks_cw(clf: trompe.Classifier, setting: Setting, steps: int) -> Runner:
    import torchattacks

    def run(images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        attack = torchattacks.CW(clf, c=1, kappa=0, steps=steps, lr=0.01)
        if setting.targeted:
            attack.set_mode_targeted_by_label(quiet=True)
        out: torch.Tensor = attack(images, classes)
        return out

    return run


def torchattacks_ead(clf: trompe.Classifier, setting: Setting) -> Runner:
    import torchattacks

    def run(images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        attack = torchattacks.EADL1(
            clf,
            kappa=0,
            lr=0.01,
            binary_search_steps=setting.runs,
            max_iterations=setting.steps,
            abort_early=True,
            initial_const=1e-3,
            beta=1e-3,
        )
        if setting.targeted:
            attack.set_mode_targeted_by_label(quiet=True)
        out: torch.Tensor = attack(images, classes)
        return out

    return run


# -- Foolbox --------------------------------------------------------------------------------------


def _foolbox(clf: trompe.Classifier, setting: Setting, attack: object) -> Runner:
    import foolbox as fb

    model = fb.PyTorchModel(clf, bounds=(0, 1), device=setting.device)

    def run(images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        criterion = (
            fb.criteria.TargetedMisclassification(classes)
            if setting.targeted
            else fb.criteria.Misclassification(classes)
        )
        raw, _, _ = attack(model, images, criterion, epsilons=None)  # type: ignore[operator]
        # Where Foolbox's CW and EAD find nothing they return their all-zero placeholder: not
        # an attack result (a black image that the model happens to misclassify would score
        # as a success), so it goes back to the original image and scores as a failure.
        empty = (raw.flatten(1) == 0).all(dim=1) & (images.flatten(1) != 0).any(dim=1)
        out: torch.Tensor = torch.where(empty.view(-1, 1, 1, 1), images, raw)
        return out

    return run


def foolbox_cw(clf: trompe.Classifier, setting: Setting) -> Runner:
    import foolbox as fb

    attack = fb.attacks.L2CarliniWagnerAttack(
        binary_search_steps=setting.runs,
        steps=setting.steps,
        stepsize=0.01,
        confidence=0,
        initial_const=1e-3,
        abort_early=True,
    )
    return _foolbox(clf, setting, attack)


def foolbox_ead(clf: trompe.Classifier, setting: Setting) -> Runner:
    import foolbox as fb

    attack = fb.attacks.EADAttack(
        binary_search_steps=setting.runs,
        steps=setting.steps,
        initial_stepsize=0.01,
        confidence=0,
        initial_const=1e-3,
        regularization=1e-3,
        decision_rule="L1",
        abort_early=True,
    )
    return _foolbox(clf, setting, attack)


# -- ART ------------------------------------------------------------------------------------------


def _art_estimator(clf: trompe.Classifier, setting: Setting, shape: tuple[int, ...]) -> object:
    logging.getLogger("art").setLevel(logging.WARNING)
    return art_classifier(clf, shape, clf.num_classes, setting.device)


def _art(
    make_attack: Callable[[object], object], clf: trompe.Classifier, setting: Setting
) -> Runner:
    def run(images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        estimator = _art_estimator(clf, setting, tuple(images.shape[1:]))
        attack = make_attack(estimator)
        # ART works on NumPy arrays: the conversions are part of its cost.
        out = attack.generate(  # type: ignore[attr-defined]
            x=images.cpu().numpy(), y=classes.cpu().numpy()
        )
        return torch.from_numpy(out).to(images.device)

    return run


def art_cw(clf: trompe.Classifier, setting: Setting) -> Runner:
    from art.attacks.evasion import CarliniL2Method

    def make(estimator: object) -> object:
        return CarliniL2Method(
            estimator,  # type: ignore[arg-type]
            confidence=0.0,
            targeted=setting.targeted,
            learning_rate=0.01,
            binary_search_steps=setting.runs,
            max_iter=setting.steps,
            initial_const=1e-2,
            batch_size=setting.batch,
            verbose=False,
        )

    return _art(make, clf, setting)


def art_ead(clf: trompe.Classifier, setting: Setting) -> Runner:
    from art.attacks.evasion import ElasticNet

    def make(estimator: object) -> object:
        return ElasticNet(
            estimator,  # type: ignore[arg-type]
            confidence=0.0,
            targeted=setting.targeted,
            learning_rate=0.01,
            binary_search_steps=setting.runs,
            max_iter=setting.steps,
            beta=1e-3,
            initial_const=1e-3,
            batch_size=setting.batch,
            decision_rule="L1",
            verbose=False,
        )

    return _art(make, clf, setting)


# -- the table ------------------------------------------------------------------------------------


def build_rows(clf: trompe.Classifier, setting: Setting, skip: set[str]) -> list[Row]:
    s = setting
    total = s.steps * s.runs
    peers: list[tuple[str, str, str, Callable[[], Runner]]] = [
        ("L2", "torchattacks", f"torchattacks CW, c=1, {s.steps} steps",
         lambda: torchattacks_cw(clf, s, s.steps)),
        ("L2", "torchattacks", f"torchattacks CW, c=1, {total} steps",
         lambda: torchattacks_cw(clf, s, total)),
        ("L2", "foolbox", f"Foolbox L2CarliniWagnerAttack, {s.runs} x {s.steps}",
         lambda: foolbox_cw(clf, s)),
        ("L2", "adversarial-robustness-toolbox", f"ART CarliniL2Method, {s.runs} x {s.steps}",
         lambda: art_cw(clf, s)),
        ("L1", "torchattacks", f"torchattacks EADL1, {s.runs} x {s.steps}",
         lambda: torchattacks_ead(clf, s)),
        ("L1", "foolbox", f"Foolbox EADAttack, {s.runs} x {s.steps}",
         lambda: foolbox_ead(clf, s)),
        ("L1", "adversarial-robustness-toolbox", f"ART ElasticNet, {s.runs} x {s.steps}",
         lambda: art_ead(clf, s)),
    ]  # fmt: skip
    rows = [
        Row("L2", f"trompe cw, {s.runs} x {s.steps}", lambda: trompe_cw(clf, s, s.runs)),
        Row("L2", f"trompe cw, 1 x {s.steps}", lambda: trompe_cw(clf, s, 1)),
        Row("L1", f"trompe ead, {s.runs} x {s.steps}", lambda: trompe_ead(clf, s)),
    ]
    short = {"art": "adversarial-robustness-toolbox"}
    skipped = {short.get(name, name) for name in skip}
    for family, package, name, make in peers:
        version = package_version(package)
        label = f"{name} ({package} {version})"
        if package in skipped:
            rows.append(Row(family, label, None, note="skipped (--skip)"))
        elif version == "not installed":
            rows.append(Row(family, label, None, note="not installed"))
        else:
            rows.append(Row(family, label, make))
    return sorted(rows, key=lambda row: row.family, reverse=True)


def score(
    clf: trompe.Classifier,
    images: torch.Tensor,
    adversarial: torch.Tensor,
    goal: Goal,
    family: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Success after 8-bit rounding, and the norm (0-255) of the rounded change."""
    rounded = quantize(adversarial.detach().to(images.device).float().clamp(0, 1))
    with torch.no_grad():
        success = goal.met(clf(rounded)).cpu()
    norms = measure(images, rounded)
    return success, (norms.l2 if family == "L2" else norms.l1)


def median_with_failures(success: torch.Tensor, norms: torch.Tensor) -> float:
    """The median norm with failures counted as infinite (torch's lower median)."""
    values = torch.where(success, norms, torch.full_like(norms, float("inf")))
    return float(values.median())


def run_rows(
    rows: list[Row],
    clf: trompe.Classifier,
    images: torch.Tensor,
    classes: torch.Tensor,
    setting: Setting,
    repeats: int,
) -> None:
    goal = goal_of(setting, classes)
    for repeat in range(repeats):
        for row in rows:
            if row.make is None or row.error is not None:
                continue
            log(f"[{repeat + 1}/{repeats}] {row.name}")
            try:
                runner = row.make()
                sync(setting.device)
                start = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    adversarial = runner(images, classes)
                sync(setting.device)
                row.seconds.append(time.perf_counter() - start)
            except Exception as error:  # a peer that breaks must not stop the benchmark
                row.error = f"{type(error).__name__}: {error}"[:200]
                log(f"    failed: {row.error}")
                continue
            if row.success is None:
                row.success, row.norms = score(clf, images, adversarial, goal, row.family)


def print_table(title: str, rows: list[Row], markdown: bool) -> None:
    header = [
        "attack",
        "norm",
        "success",
        "median (failures = inf)",
        "median of successes",
        "vs trompe, same images",
        "time (s)",
    ]
    lines = []
    reference: dict[str, Row] = {}
    for row in rows:  # the first trompe row of each family is the reference
        if row.name.startswith("trompe") and row.success is not None:
            reference.setdefault(row.family, row)
    for row in rows:
        if row.make is None or row.error is not None or row.success is None:
            lines.append([row.name, row.family, "-", "-", "-", "-", row.error or row.note])
            continue
        assert row.norms is not None
        ok = row.success
        rate = f"{ok.float().mean():.0%}"
        median = median_with_failures(ok, row.norms)
        of_successes = float(row.norms[ok].median()) if ok.any() else float("nan")
        ratio = "-"
        ref = reference.get(row.family)
        if ref is not None and ref is not row and ref.norms is not None:
            assert ref.success is not None
            both = ok & ref.success & (ref.norms > 0)
            if both.any():
                ratio = (
                    f"{float((row.norms[both] / ref.norms[both]).median()):.2f} ({int(both.sum())})"
                )
        seconds = statistics.median(row.seconds)
        lines.append(
            [
                row.name,
                row.family,
                rate,
                f"{median:.1f}",
                f"{of_successes:.1f}",
                ratio,
                f"{seconds:.2f}",
            ]
        )
    print(f"\n{title}\n")
    print(render(header, lines, markdown))
    print(
        "\n'vs trompe, same images': the median over the images that both this row and the "
        "first trompe row of its norm turn adversarial of (this row's norm / trompe's norm), "
        "and how many images that is; above 1: trompe's changes are smaller."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per row (median)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        help="a peer to leave out: torchattacks, foolbox, art",
    )
    parser.add_argument("--markdown", action="store_true", help="print markdown tables")
    args = parser.parse_args(argv)  # fmt: skip
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}; "
        f"torchattacks {package_version('torchattacks')}, foolbox {package_version('foolbox')}, "
        f"ART {package_version('adversarial-robustness-toolbox')}; numpy {np.__version__}"
    )
    batches = [("digits CNN", *digits_batch(args.images, device))]
    if args.photos:
        clf, images, labels, _ = lite0_photos(device, BUNDLED[: args.photos])
        batches.append(("EfficientNet-Lite0, 224 x 224", clf, images, labels))
    for title, clf, images, labels in batches:
        classes = (labels + 1) % clf.num_classes if args.targeted else labels
        setting = Setting(args.steps, args.runs, args.targeted, device, len(images))
        rows = build_rows(clf, setting, set(args.skip))
        run_rows(rows, clf, images, classes, setting, args.repeats)
        kind = "targeted (label + 1)" if args.targeted else "untargeted"
        print_table(
            f"{title}: {len(images)} images, {kind}; norms in 0-255 units after 8-bit rounding",
            rows,
            args.markdown,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
