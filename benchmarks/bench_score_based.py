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
from typing import Any

import numpy as np
import torch

# benchmarks/_common.py: found because a script's own folder is first on sys.path.
from _common import (
    PHOTOS,
    Counting,
    art_classifier,
    digits_batch,
    lite0_photos,
    log,
    package_version,
    render,
)
from torch import nn

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


def _counted(clf: Classifier) -> tuple[Classifier, Counting]:
    counter = Counting(clf.model)
    counted = Classifier(
        counter,
        mean=tuple(clf.mean.flatten().tolist()),
        std=tuple(clf.std.flatten().tolist()),
        labels=clf.labels,
        input_size=clf.input_size,
        crop_fraction=clf.crop_fraction,
        interpolation=clf.interpolation,
        name=clf.name,
        access="scores",
    ).to(clf.device)
    return counted, counter


def digits_task(count: int, device: torch.device) -> Task:
    clf, images, labels = digits_batch(count, device)
    counted, counter = _counted(clf)
    return Task(f"digits CNN, {len(images)} test digits", counted, counter, images, labels)


def photo_task(count: int, device: torch.device) -> Task:
    """Photos at 224 x 224 on the 8-bit grid; the true class is the model's prediction."""
    clf, images, labels, _ = lite0_photos(device, PHOTOS, limit=count)
    counted, counter = _counted(clf)
    return Task(
        f"EfficientNet-Lite0, {len(images)} photos at 224", counted, counter, images, labels
    )


@dataclass
class Outcome:
    adversarial: torch.Tensor
    queries: torch.Tensor | None = None  # per image, as the tool reports it


@dataclass
class Row:
    name: str
    run: Callable[[], Outcome] | None
    note: str = ""
    seconds: list[float] = field(default_factory=list)
    per_image: float = math.nan  # model evaluations per image, counted
    outcome: Outcome | None = None
    error: str | None = None


# -- the rows -----------------------------------------------------------------------------------


def trompe_square(task: Task, norm: str, eps: float, queries: int) -> Callable[[], Outcome]:
    def run() -> Outcome:
        attack = Square(eps=eps, norm=norm, queries=queries, seed=0)  # type: ignore[arg-type]
        result = attack(task.clf, task.images, Untargeted(task.labels))
        return Outcome(result.adversarial, result.queries)

    return run


def trompe_simba(task: Task, eps: float, step: float, queries: int) -> Callable[[], Outcome]:
    def run() -> Outcome:
        attack = SimBA(eps=eps, step_size=step, queries=queries, seed=0)
        result = attack(task.clf, task.images, Untargeted(task.labels))
        return Outcome(result.adversarial, result.queries)

    return run


def torchattacks_square(task: Task, norm: str, eps: float, queries: int) -> Callable[[], Outcome]:
    import torchattacks

    def run() -> Outcome:
        attack = torchattacks.Square(
            task.clf,
            norm="Linf" if norm == "linf" else "L2",
            eps=eps,
            n_queries=queries,
            n_restarts=1,
            p_init=0.8,
            loss="margin",
            resc_schedule=True,
            seed=0,
        )
        reported: list[torch.Tensor] = []
        single_run = attack.attack_single_run

        def recorded(x: torch.Tensor, y: torch.Tensor) -> Any:
            counts, adversarial = single_run(x, y)
            reported.append(counts)
            return counts, adversarial

        attack.attack_single_run = recorded  # type: ignore[method-assign]
        adversarial = attack(task.images, task.labels)
        queries_each = reported[0].long().cpu() if len(reported) == 1 else None
        return Outcome(adversarial, queries_each)

    return run


def _art_estimator(task: Task, probabilities: bool = False) -> Any:
    model: nn.Module = task.clf
    if probabilities:  # ART's SimBA insists on probabilities
        model = nn.Sequential(task.clf, nn.Softmax(dim=1))
    return art_classifier(model, task.images.shape[1:], task.clf.num_classes, task.images.device)


def art_square(task: Task, norm: str, eps: float, queries: int) -> Callable[[], Outcome]:
    from art.attacks.evasion import SquareAttack

    estimator = _art_estimator(task)

    def run() -> Outcome:
        np.random.seed(0)
        attack = SquareAttack(
            estimator,
            norm=np.inf if norm == "linf" else 2,
            max_iter=queries,
            eps=eps,
            p_init=0.8,
            nb_restarts=1,
            batch_size=len(task.images),
            verbose=False,
        )
        adversarial = attack.generate(x=task.images.cpu().numpy(), y=task.labels.cpu().numpy())
        return Outcome(torch.from_numpy(adversarial).to(task.images.device))

    return run


def art_simba(
    task: Task, step: float, freq: int, stride: int, queries: int
) -> Callable[[], Outcome]:
    from art.attacks.evasion import SimBA as ArtSimBA

    estimator = _art_estimator(task, probabilities=True)
    classes = task.clf.num_classes

    def run() -> Outcome:
        np.random.seed(0)
        attack = ArtSimBA(
            estimator,
            attack="dct",
            max_iter=max(1, queries // 2),  # two queries per step, always
            order="random",  # not used by its DCT attack (always low frequencies first)
            epsilon=step,
            freq_dim=freq,
            stride=stride,
            targeted=False,
            verbose=False,
        )
        outputs, counts = [], []
        onehot = np.eye(classes, dtype=np.float32)[task.labels.cpu().numpy()]
        for i in range(len(task.images)):  # ART attacks one image at a time anyway
            before = task.counter.images
            out = attack.generate(x=task.images[i : i + 1].cpu().numpy(), y=onehot[i : i + 1])
            counts.append(task.counter.images - before)
            outputs.append(torch.from_numpy(out))
        adversarial = torch.cat(outputs).to(task.images.device)
        return Outcome(adversarial, torch.tensor(counts))

    return run


def _peer(
    rows: list[Row], package: str, label: str, make: Callable[[], Callable[[], Outcome]]
) -> None:
    version = package_version(package)
    name = f"{label} {version}" if version != "not installed" else label
    try:
        rows.append(Row(name, make()))
    except ImportError as error:
        rows.append(Row(name, None, note=f"not installed ({error})"))
    except Exception as error:  # a peer that breaks must not stop the benchmark
        rows.append(Row(name, None, note=f"failed to set up: {type(error).__name__}: {error}"))


def square_rows(task: Task, norm: str, eps: float, queries: int) -> list[Row]:
    rows = [Row("trompe square", trompe_square(task, norm, eps, queries))]
    _peer(
        rows,
        "torchattacks",
        "torchattacks Square",
        lambda: torchattacks_square(task, norm, eps, queries),
    )
    _peer(
        rows,
        "adversarial-robustness-toolbox",
        "ART SquareAttack",
        lambda: art_square(task, norm, eps, queries),
    )
    return rows


def simba_rows(task: Task, eps: float, queries: int) -> list[Row]:
    side = int(task.images.shape[-1])
    # trompe's defaults, given to both: the DCT step and the low-frequency block and bands.
    step = max(0.2, math.sqrt(side * side) / 255)
    freq = max(1, round(side / 8))
    stride = max(1, round(freq / 4))
    rows = [Row(f"trompe simba (dct, step {step:.2f})", trompe_simba(task, eps, step, queries))]
    _peer(
        rows,
        "adversarial-robustness-toolbox",
        f"ART SimBA (dct, step {step:.2f})",
        lambda: art_simba(task, step, freq, stride, queries),
    )
    return rows


# -- scoring and running ---------------------------------------------------------------------


@dataclass
class Score:
    success: torch.Tensor
    size: torch.Tensor  # in the norm, 0-255 units, on the 8-bit output


def score(task: Task, norm: str, eps: float, adversarial: torch.Tensor) -> Score:
    """Round within the budget, re-predict, measure: the same for every row."""
    images = task.images
    adversarial = adversarial.detach().to(images.device).float().clamp(0, 1)
    budget = Square(eps=eps, norm=norm)  # type: ignore[arg-type]
    size_float = (adversarial - images).flatten(1)
    size_float = size_float.abs().amax(1) if norm == "linf" else size_float.norm(dim=1)
    within = size_float <= eps * (1 + 1e-4) + 1e-6  # the attack's own output kept the budget
    rounded = budget.round_into_budget(adversarial, images)
    with torch.no_grad():
        predicted = task.clf(rounded).argmax(dim=1)
    delta = ((rounded - images) * 255).round().flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    return Score(((predicted != task.labels) & within).cpu(), size.cpu())


def run_rows(task: Task, rows: list[Row], repeats: int) -> None:
    for row in rows:
        if row.run is None:
            continue
        for repeat in range(repeats):
            log(f"  {row.name}: run {repeat + 1}/{repeats}")
            task.counter.images = 0
            start = time.perf_counter()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    outcome = row.run()
            except Exception as error:  # a peer that fails is reported, not fatal
                row.error = f"{type(error).__name__}: {error}"
                break
            row.seconds.append(time.perf_counter() - start)
            row.per_image = task.counter.images / len(task.images)
            row.outcome = outcome


def table(task: Task, title: str, norm: str, eps: float, rows: list[Row], markdown: bool) -> str:
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
        if row.outcome is None:
            body.append([row.name, row.error or row.note or "no run", "", "", "", ""])
            continue
        result = score(task, norm, eps, row.outcome.adversarial)
        won = result.success
        rate = f"{int(won.sum())}/{len(won)} ({float(won.float().mean()):.0%})"
        reported = row.outcome.queries
        if reported is not None and bool(won.any()):
            median_q = f"{float(np.median(reported.cpu()[won].numpy())):.0f}"
        else:
            median_q = "n/a" if reported is None else "-"
        size = f"{float(np.median(result.size[won].numpy())):.1f}" if bool(won.any()) else "-"
        seconds = f"{statistics.median(row.seconds):.2f}"
        body.append([row.name, rate, median_q, f"{row.per_image:.0f}", size, seconds])
    heading = f"{title}: {task.name}"
    return (("### " if markdown else "") + heading) + "\n\n" + render(header, body, markdown)


def environment(device: torch.device) -> list[str]:
    versions = ", ".join(
        f"{p} {package_version(p)}"
        for p in ("torch", "torchattacks", "adversarial-robustness-toolbox")
    )
    return [
        f"trompe {package_version('trompe')}, {versions}",
        f"Python {platform.python_version()}, {platform.machine()}, device {device}, "
        f"{torch.get_num_threads()} torch threads",
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per row (1)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--markdown", action="store_true", help="print GitHub markdown tables")
    parser.add_argument("--digits", type=int, default=64, help="digits to attack (64; 0 skips)")
    parser.add_argument("--queries", type=int, default=1000, help="queries per digit (1000)")
    parser.add_argument("--linf", type=float, default=30.0, help="digits L-inf eps, 0-255 (30)")
    parser.add_argument("--l2", type=float, default=1.5, help="digits L2 eps, [0, 1] units (1.5)")
    parser.add_argument("--photos", type=int, default=4, help="photos for Lite0 (4; 0 skips)")
    parser.add_argument("--photo-queries", type=int, default=1000, help="queries per photo")
    parser.add_argument("--photo-linf", type=float, default=4.0, help="photos L-inf eps, 0-255 (4)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("art").setLevel(logging.WARNING)
    device = torch.device(args.device)
    out = []
    if args.digits:
        task = digits_task(args.digits, device)
        settings = [("Square L-inf", "linf", args.linf / 255), ("Square L2", "l2", args.l2)]
        for title, norm, eps in settings:
            log(f"{title} on {task.name}")
            rows = square_rows(task, norm, eps, args.queries)
            run_rows(task, rows, args.repeats)
            budget = f"eps {eps * 255:g}/255" if norm == "linf" else f"eps {eps:g}"
            out.append(
                table(
                    task,
                    f"{title}, {budget}, {args.queries} queries",
                    norm,
                    eps,
                    rows,
                    args.markdown,
                )
            )
        log(f"SimBA on {task.name}")
        rows = simba_rows(task, args.l2, args.queries)
        run_rows(task, rows, args.repeats)
        out.append(
            table(
                task,
                f"SimBA L2, eps {args.l2:g}, {args.queries} queries",
                "l2",
                args.l2,
                rows,
                args.markdown,
            )
        )
    if args.photos:
        task = photo_task(args.photos, device)
        eps = args.photo_linf / 255
        log(f"Square L-inf on {task.name}")
        rows = square_rows(task, "linf", eps, args.photo_queries)
        run_rows(task, rows, args.repeats)
        title = f"Square L-inf, eps {args.photo_linf:g}/255, {args.photo_queries} queries"
        out.append(table(task, title, "linf", eps, rows, args.markdown))
    print("\n\n".join(out))
    print()
    print("\n".join(("- " if args.markdown else "") + line for line in environment(device)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
