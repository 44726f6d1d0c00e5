"""Benchmark trompe's evaluation (the ``standard`` and ``fast`` cascades) against the official
AutoAttack and torchattacks' AutoAttack: robust accuracy, time and model calls, side by side.

- **AutoAttack** (``fra31/auto-attack``, Croce & Hein 2020), ``version="standard"``: APGD-CE,
  APGD-T (9 target classes), FAB-T (9), Square (5000 queries), seed 0, one run per budget, the
  whole batch at once (``bs`` = the batch). Install it in the benchmark environment only
  (``pip install --no-deps <a checkout of fra31/auto-attack>``); it is not a dependency.
- **torchattacks** ``AutoAttack(version="standard", n_classes=<the model's>, seed=0)``, one run
  per budget.
- **trompe** ``standard`` and ``fast`` (``trompe.evaluation.CASCADES``) through
  :func:`trompe.evaluation.run_chunk`, chunks of ``--batch`` images, seed 0, the checks off;
  all budgets of a threat model in one sweep (ascending; an image broken at a budget is carried
  to the larger ones, as ``trompe evaluate`` does), so its time is one number per threat model.

Suites: ``digits``: trompe's ``digits_robust`` (8x8 digits CNN, PGD-trained at 32/255) on the
360 test digits of scikit-learn's digits (``trompe.models.digits.load_digits``), L-inf 24/255 and
32/255 and L2 1.0 and 1.5 ([0, 1] units); ``imagenet``: ``efficientnet_lite0`` on the 20
labelled ImageNet samples of the foolbox wheel (``foolbox/data/imagenet_XX_LABEL.jpg``,
read with Pillow and brought to 224 x 224 by the model's own preprocessing), L-inf 1/255
and 4/255.

Scoring, the same for every library: the output is rounded to 8 bits
(:func:`trompe.images.quantize`, what saving a PNG does) and re-predicted by the model; an image
is broken when that prediction is wrong *and* the rounded change is within the budget. So an
AutoAttack adversarial that the rounding undoes (or pushes past an L2 budget) counts as robust;
"own" is the robust accuracy the library reports on its own float output. Images the model gets
wrong to begin with count as broken for everyone. Model calls: images the network was given
(forwards, every query and gradient pass included) and images a backward pass went through
(gradients), counted by a wrapper around the network (:class:`_peers.CallCounting`), the same
for every library. Times: wall clock (and this process's CPU time) of one run of each.

Usage::

    /tmp/benchvenv/bin/python benchmarks/bench_evaluate.py                      # all suites
    /tmp/benchvenv/bin/python benchmarks/bench_evaluate.py --suites digits --norms linf
    /tmp/benchvenv/bin/python benchmarks/bench_evaluate.py --n 40 --skip torchattacks

Progress goes to stderr, the tables to stdout.
"""

from __future__ import annotations

import os

# Passive OpenMP waiting: spinning threads on a shared machine make every timing meaningless.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _harness as h
import numpy as np
import torch
from _peers import CallCounting, autoattack_standard, torchattacks_autoattack

import trompe
from trompe.attacks import measure
from trompe.evaluation import Chunk, EvalConfig, ImageRecord, resolve_cascade, run_chunk
from trompe.images import quantize

LIBRARIES = ("autoattack", "torchattacks", "trompe standard", "trompe fast")


@dataclass
class Suite:
    """A model, its images and labels, and the budgets per threat model."""

    name: str
    clf: trompe.Classifier
    images: torch.Tensor
    labels: torch.Tensor
    budgets: dict[str, list[float]]  # norm -> eps in [0, 1] units
    shown: Callable[[str, float], str]


@dataclass
class Outcome:
    """One library on one suite and threat model: per budget its output and counts."""

    library: str
    outputs: dict[float, torch.Tensor] = field(default_factory=dict)
    seconds: dict[float, float] = field(default_factory=dict)  # per budget; "sweep" below
    cpu: dict[float, float] = field(default_factory=dict)
    forwards: dict[float, int] = field(default_factory=dict)
    gradients: dict[float, int] = field(default_factory=dict)
    sweep: bool = False  # one run for all budgets (trompe)
    note: str = ""
    stages: dict[float, list[str | None]] = field(default_factory=dict)  # who broke each image
    log: str = ""


# -- data -----------------------------------------------------------------------------------------


def digits_suite(n: int | None, linf: list[float], l2: list[float]) -> Suite:
    from trompe.models.digits import load_digits

    data = load_digits()
    images, labels = data.test_images, data.test_labels
    if n is not None:
        images, labels = images[:n], labels[:n]
    budgets = {"linf": [e / 255 for e in linf], "l2": list(l2)}

    def shown(norm: str, eps: float) -> str:
        return f"{eps * 255:g}/255" if norm == "linf" else f"{eps:g}"

    clf = trompe.load_model("digits_robust")
    return Suite("digits_robust", clf, images, labels, budgets, shown)


def foolbox_imagenet(clf: trompe.Classifier) -> tuple[torch.Tensor, torch.Tensor]:
    """The 20 ImageNet samples of the foolbox wheel (JPEGs of several sizes), read with Pillow
    and brought to the model's input by its own preprocessing (centre crop, resize), on the
    8-bit grid; their labels come from the file names (``imagenet_XX_LABEL.jpg``)."""
    import foolbox
    from PIL import Image

    folder = Path(foolbox.__file__).parent / "data"
    files = sorted(folder.glob("imagenet_*_*.*"), key=lambda p: int(p.stem.split("_")[1]))
    images, labels = [], []
    for path in files:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"), dtype=np.uint8)
        batch = torch.from_numpy(array.copy()).permute(2, 0, 1).float()[None] / 255
        with torch.no_grad():
            images.append(quantize(clf.preprocess(batch).clamp(0, 1)))
        labels.append(int(path.stem.split("_")[2]))
    return torch.cat(images), torch.tensor(labels)


def imagenet_suite(n: int | None, linf: list[float]) -> Suite:
    clf = trompe.load_model("efficientnet_lite0")
    images, labels = foolbox_imagenet(clf)
    if n is not None:
        images, labels = images[:n], labels[:n]

    def shown(norm: str, eps: float) -> str:
        return f"{eps * 255:g}/255"

    return Suite(
        "efficientnet_lite0", clf, images, labels, {"linf": [e / 255 for e in linf]}, shown
    )


# -- runs -----------------------------------------------------------------------------------------


def counted(clf: trompe.Classifier) -> tuple[trompe.Classifier, CallCounting]:
    """``clf`` with its network behind a :class:`CallCounting` (the original is untouched)."""
    other = clf.with_access("gradients")
    other._modules = dict(other._modules)
    counter = CallCounting(clf.model)
    other.model = counter
    return other, counter


def timed(run: Callable[[], Any]) -> tuple[Any, float, float]:
    start, start_cpu = time.perf_counter(), time.process_time()
    out = run()
    return out, time.perf_counter() - start, time.process_time() - start_cpu


def run_autoattack(suite: Suite, norm: str, batch: int, device: torch.device) -> Outcome:
    outcome = Outcome("autoattack")
    for eps in suite.budgets[norm]:
        net = CallCounting(suite.clf)
        run = autoattack_standard(net, norm, eps, batch, device)
        h.log(f"  autoattack {norm} {suite.shown(norm, eps)}")
        (out, calls, log), wall, cpu = timed(lambda: run(suite.images, suite.labels))  # noqa: B023
        outcome.outputs[eps], outcome.seconds[eps], outcome.cpu[eps] = out, wall, cpu
        outcome.forwards[eps], outcome.gradients[eps] = net.reset()
        outcome.stages[eps] = autoattack_breakers(suite, out, calls)
        outcome.log += "".join(
            f"    {norm} {suite.shown(norm, eps)}: {line}\n"
            for line in log.splitlines()
            if "robust accuracy" in line or "initial accuracy" in line
        )
        h.log(f"    {wall:.1f} s")
    return outcome


def autoattack_breakers(
    suite: Suite, out: torch.Tensor, calls: list[tuple[str, Any, Any]]
) -> list[str | None]:
    """Per image, the AutoAttack stage whose output for it the model misclassifies (the first
    such stage), from what each stage was given and returned."""
    keys = {suite.images[i].numpy().tobytes(): i for i in range(len(suite.images))}
    found: list[str | None] = [None] * len(suite.images)
    for stage, x, adv in calls:
        with torch.no_grad():
            wrong = h.predict(suite.clf, adv.to(suite.images.device)).cpu()
        for row in range(len(x)):
            i = keys.get(x[row].numpy().tobytes())
            if i is not None and found[i] is None and int(wrong[row]) != int(suite.labels[i]):
                found[i] = stage
    return found


def run_torchattacks(suite: Suite, norm: str) -> Outcome:
    outcome = Outcome("torchattacks")
    for eps in suite.budgets[norm]:
        net = CallCounting(suite.clf)
        run = torchattacks_autoattack(net, norm, eps, suite.clf.num_classes)
        h.log(f"  torchattacks {norm} {suite.shown(norm, eps)}")
        out, wall, cpu = timed(lambda: run(suite.images, suite.labels))  # noqa: B023
        outcome.outputs[eps], outcome.seconds[eps], outcome.cpu[eps] = out, wall, cpu
        outcome.forwards[eps], outcome.gradients[eps] = net.reset()
        h.log(f"    {wall:.1f} s")
    return outcome


def run_trompe(suite: Suite, norm: str, cascade: str, batch: int) -> Outcome:
    outcome = Outcome(f"trompe {cascade}", sweep=True)
    clf, counter = counted(suite.clf)
    name, stages = resolve_cascade(cascade, norm)
    budgets = suite.budgets[norm]
    config = EvalConfig(
        model=suite.clf.describe(),
        data={"name": suite.name, "n": len(suite.images)},
        norm=norm,
        eps=tuple(budgets),
        stages=stages,
        cascade=name,
        batch_size=batch,
        seed=0,
        checks=False,
    )

    def sweep() -> tuple[list[ImageRecord], dict[int, list[torch.Tensor]], dict[str, float]]:
        records: list[ImageRecord] = []
        adversarial: dict[int, list[torch.Tensor]] = {k: [] for k in range(len(budgets))}
        seconds: dict[str, float] = {}
        for index, start in enumerate(range(0, len(suite.images), batch)):
            stop = min(start + batch, len(suite.images))
            chunk = Chunk(
                index=index,
                positions=tuple(range(start, stop)),
                ids=tuple(f"#{p}" for p in range(start, stop)),
                images=suite.images[start:stop],
                labels=suite.labels[start:stop],
            )
            done = run_chunk(clf, chunk, config, keep_adversarial=True)
            records += done.records
            for k in adversarial:
                adversarial[k].append(done.adversarial[k].cpu())
            for stage, s in done.seconds.items():
                seconds[stage] = seconds.get(stage, 0.0) + s
        return records, adversarial, seconds

    h.log(f"  trompe {cascade} {norm} sweep")
    (records, adversarial, seconds), wall, cpu = timed(sweep)
    h.log(f"    {wall:.1f} s")
    forwards, gradients = counter.reset()
    for k, eps in enumerate(budgets):
        outcome.outputs[eps] = torch.cat(adversarial[k])
        outcome.stages[eps] = [r.budgets[k].broken_by for r in records]
    first = budgets[0]
    outcome.seconds[first], outcome.cpu[first] = wall, cpu
    outcome.forwards[first], outcome.gradients[first] = forwards, gradients
    outcome.note = ", ".join(f"{s} {t:.1f} s" for s, t in seconds.items())
    return outcome


# -- scoring --------------------------------------------------------------------------------------


def broken(suite: Suite, norm: str, eps: float, out: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """Per image: broken on the 8-bit output within the budget; the images whose rounded
    output left the budget; and the library's own count of robust images (float output)."""
    x = suite.images
    out = out.to(x.device).float()
    rounded = quantize(out.clamp(0, 1))
    size = measure(x, rounded).of(norm)
    inside = size <= eps * 255 + 1e-3
    wrong = h.predict(suite.clf, rounded) != suite.labels
    clean_wrong = h.predict(suite.clf, x) != suite.labels
    own_robust = int((h.predict(suite.clf, out) == suite.labels).sum())
    return (wrong & inside) | clean_wrong, int((~inside).sum()), own_robust


def table(
    report: h.Report, suite: Suite, norm: str, outcomes: list[Outcome]
) -> dict[str, dict[float, torch.Tensor]]:
    n = len(suite.images)
    budgets = suite.budgets[norm]
    clean = int((h.predict(suite.clf, suite.images) == suite.labels).sum())
    header = ["library", "clean"]
    for eps in budgets:
        header += [f"robust {suite.shown(norm, eps)} (8-bit)", "own"]
    header += ["seconds", "CPU s", "forwards", "gradients"]
    body = []
    flags: dict[str, dict[float, torch.Tensor]] = {}
    for outcome in outcomes:
        if not outcome.outputs:
            body.append([outcome.library, outcome.note[:60]] + [""] * (len(header) - 2))
            continue
        cells = [outcome.library, f"{clean / n:.1%}"]
        flags[outcome.library] = {}
        for eps in budgets:
            hit, over, own = broken(suite, norm, eps, outcome.outputs[eps])
            flags[outcome.library][eps] = hit
            robust = n - int(hit.sum())
            cell = f"{robust / n:.1%} ({robust})"
            cells += [cell + (f", {over} over budget" if over else ""), f"{own / n:.1%}"]
        if outcome.sweep:
            cells += [
                f"{sum(outcome.seconds.values()):.1f} (sweep)",
                f"{sum(outcome.cpu.values()):.1f}",
            ]
        else:
            cells += [
                " + ".join(f"{outcome.seconds[e]:.1f}" for e in budgets)
                + f" = {sum(outcome.seconds.values()):.1f}",
                f"{sum(outcome.cpu.values()):.1f}",
            ]
        cells += [str(sum(outcome.forwards.values())), str(sum(outcome.gradients.values()))]
        body.append(cells)
    report.table(header, body)
    reference = next((o for o in outcomes if o.library == "autoattack" and o.outputs), None)
    for outcome in outcomes:
        if outcome.outputs and outcome.sweep:
            report.bullets(f"{outcome.library}: time per stage: {outcome.note}")
        if outcome.outputs and reference is not None and outcome is not reference:
            total_ref = sum(reference.seconds.values())
            report.bullets(
                f"{outcome.library} / autoattack time: "
                f"{sum(outcome.seconds.values()) / total_ref:.2f}x"
            )
    if reference is not None and reference.log:
        report.bullets("autoattack's own log: ")
        report.add(reference.log.rstrip())
    for outcome in outcomes:
        if reference is None or not outcome.outputs or outcome is reference:
            continue
        for eps in budgets:
            mine, theirs = flags[outcome.library][eps], flags["autoattack"][eps]
            missed = (theirs & ~mine).nonzero().squeeze(1).tolist()
            extra = int((mine & ~theirs).sum())
            if missed:
                stages = reference.stages.get(eps, [None] * n)
                report.bullets(
                    f"{outcome.library} at {suite.shown(norm, eps)}: robust where AutoAttack broke "
                    f"{len(missed)} image(s) (it broke {extra} that AutoAttack did not): "
                    + ", ".join(f"#{i} (AutoAttack's {stages[i]})" for i in missed[:20])
                )
    return flags


# -- main -----------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = h.arguments(__doc__, repeats=1, threads=2)
    parser.add_argument("--suites", default="digits,imagenet", help="digits,imagenet")
    parser.add_argument("--norms", default="linf,l2", help="threat models (digits: linf,l2)")
    parser.add_argument("--n", type=int, default=None, help="first N images of each suite (all)")
    parser.add_argument("--digits-linf", default="24,32", help="digits L-inf budgets, 0-255")
    parser.add_argument("--digits-l2", default="1.0,1.5", help="digits L2 budgets, [0, 1] units")
    parser.add_argument("--imagenet-linf", default="1,4", help="ImageNet L-inf budgets, 0-255")
    parser.add_argument("--batch", type=int, default=500, help="images per batch/chunk (500)")
    parser.add_argument(
        "--libraries", default=",".join(LIBRARIES), help="the rows, in order (all four)"
    )
    args = h.parse(parser, argv)
    started = time.perf_counter()
    device = torch.device(args.device)
    floats = [float(v) for v in h.comma_list(args.digits_linf)]
    suites: list[Suite] = []
    names = h.comma_list(args.suites, lower=True)
    if "digits" in names:
        l2 = [float(v) for v in h.comma_list(args.digits_l2)]
        suites.append(digits_suite(args.n, floats, l2))
    if "imagenet" in names:
        linf = [float(v) for v in h.comma_list(args.imagenet_linf)]
        suites.append(imagenet_suite(args.n, linf))

    report = h.Report(args.markdown)
    report.heading("Evaluation: trompe's cascades vs AutoAttack and torchattacks' AutoAttack")
    lines = h.environment(device, "torchattacks", "autoattack")
    report.bullets(*lines)
    libraries = [
        name for name in h.comma_list(args.libraries, lower=True) if not h.skipped(name, args.skip)
    ]
    for suite in suites:
        suite.clf = suite.clf.to(device)
        suite.images, suite.labels = suite.images.to(device), suite.labels.to(device)
        for norm in h.comma_list(args.norms, lower=True):
            if norm not in suite.budgets:
                continue
            title = f"{suite.name}, {len(suite.images)} images, {norm}, eps " + ", ".join(
                suite.shown(norm, e) for e in suite.budgets[norm]
            )
            h.log(title)
            outcomes = []
            for library in libraries:
                try:
                    if library == "autoattack":
                        outcomes.append(run_autoattack(suite, norm, args.batch, device))
                    elif library == "torchattacks":
                        outcomes.append(run_torchattacks(suite, norm))
                    else:
                        cascade = library.split()[-1]
                        outcomes.append(run_trompe(suite, norm, cascade, args.batch))
                except ImportError as error:
                    outcomes.append(Outcome(library, note=f"not installed ({error.name})"))
                except Exception as error:  # a peer that breaks must not stop the benchmark
                    outcomes.append(Outcome(library, note=h.failure(error)))
                    h.log(f"  {library}: failed: {h.failure(error)}")
            report.heading(title, 2)
            table(report, suite, norm, outcomes)
            print("\n".join(report.lines), file=sys.stderr, flush=True)
    report.print(started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
