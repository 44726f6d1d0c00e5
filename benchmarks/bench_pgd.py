"""Benchmark trompe's PGD against a plain PyTorch loop and the peer libraries.

One model (``efficientnet_lite0``), one batch of real photos brought to the model's 224 x 224
input and rounded to 8 bits, one target class per photo, an L-inf budget of 10/255, 40 steps of
the same size for everyone. Rows:

1. ``plain loop``: 40 x (forward + backward through the classifier, sign step, clamp to the
   ball and to [0, 1]) after a uniform random start. Nothing else: the floor.
2. ``trompe PGD, early_stop=False``: the same 40 steps through trompe's engine.
3. ``trompe PGD, early_stop=True``: each image stops once its 8-bit version has the target as
   top-1 with probability >= 0.99.
4. the peers with the same budget, step size, step count and random start: torchattacks
   ``PGD``, Foolbox 3 ``LinfPGD`` and ART ``ProjectedGradientDescentPyTorch``. A peer that is not
   installed, or fails, is listed with the reason.

Every row is scored the same way: the output is rounded to 8 bits with
:func:`trompe.images.quantize`, re-predicted by the classifier, and an image counts as a success
when its target is top-1 with probability >= 0.99 (``target top-1`` alone is reported too).
Times are medians over ``--repeats`` runs after a short warm-up run of every row; the rows take
turns within each repeat, so that a change of load on the machine hits them all alike.

A second table shows what early stopping buys on a batch whose images reach the goal at
different steps: the fixed 40-step run against early-stopped runs with the goal "target top-1"
(no confidence) and "target top-1 at >= 0.99", with the steps each image took.

Usage::

    python benchmarks/bench_pgd.py                       # CPU, 3 repeats, all peers found
    python benchmarks/bench_pgd.py --repeats 5 --markdown
    python benchmarks/bench_pgd.py --device cuda --threads 0

Progress goes to stderr, the tables to stdout. See docs/benchmarks.md for results.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import math
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import trompe
from trompe.attacks import PGD, AttackResult, Targeted, measure
from trompe.images import quantize

MODEL = "efficientnet_lite0"
CONFIDENCE = 0.99

#: (photo, target class). The first two ship with trompe; the others are the colour photos of
#: scikit-image's data folder (its drawings, textures, microscopy and telescope images are left
#: out). All are CC0 or public domain.
PHOTOS: tuple[tuple[str, int], ...] = (
    ("chelsea", 951),  # cat -> lemon
    ("coffee", 144),  # cup of coffee -> pelican
    ("astronaut", 937),  # Eileen Collins -> broccoli
    ("rocket", 742),  # launch pad -> printer
    ("motorcycle_left", 511),  # motorcycle -> convertible
    ("camera", 963),  # cameraman (grayscale photo, read as RGB) -> pizza
)
_BUNDLED = {"chelsea", "coffee"}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the batch ------------------------------------------------------------------------------------


def _photo_path(name: str) -> Path | None:
    if name in _BUNDLED:
        return Path(trompe.images.example_path(name))
    try:
        import skimage.data
    except ImportError:
        return None
    folder = Path(skimage.data.data_dir)
    for suffix in (".png", ".jpg"):
        if (folder / f"{name}{suffix}").is_file():
            return folder / f"{name}{suffix}"
    return None


def load_batch(
    clf: trompe.Classifier, device: torch.device, limit: int | None
) -> tuple[torch.Tensor, torch.Tensor, list[str], list[str]]:
    """The photos at the model's input size on the 8-bit grid, their targets, names, notes."""
    images, targets, names, notes = [], [], [], []
    missing = []
    for name, target in PHOTOS:
        path = _photo_path(name)
        if path is None:
            missing.append(name)
            continue
        image = trompe.load_image(path)[None]
        with torch.no_grad():
            image = quantize(clf.preprocess(image).clamp(0, 1))
        images.append(image)
        targets.append(target)
        names.append(name)
    if missing:
        notes.append(
            f"photos not found: {', '.join(missing)} (install scikit-image for its data folder)"
        )
    if limit is not None:
        images, targets, names = images[:limit], targets[:limit], names[:limit]
    return torch.cat(images).to(device), torch.tensor(targets, device=device), names, notes


# -- scoring --------------------------------------------------------------------------------------


@dataclass
class Score:
    success: torch.Tensor  # target top-1 with prob >= CONFIDENCE, on the 8-bit output
    top1: torch.Tensor  # target top-1, on the 8-bit output
    target_prob: torch.Tensor
    max_linf: float  # 0-255 units, on the 8-bit output


def score(
    clf: trompe.Classifier, images: torch.Tensor, adversarial: torch.Tensor, targets: torch.Tensor
) -> Score:
    """Round to 8 bits, re-predict, and measure: the same for every row."""
    rounded = quantize(adversarial.detach().to(images.device).clamp(0, 1))
    with torch.no_grad():
        probs = clf(rounded).softmax(dim=1)
    target_prob = probs.gather(1, targets[:, None]).squeeze(1)
    top1 = probs.argmax(dim=1) == targets
    return Score(
        success=(top1 & (target_prob >= CONFIDENCE)).cpu(),
        top1=top1.cpu(),
        target_prob=target_prob.cpu(),
        max_linf=float(measure(images, rounded).linf.max()),
    )


# -- the rows -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    eps: float  # [0, 1] units
    step_size: float  # [0, 1] units
    steps: int
    device: torch.device
    seed: int = 0


@dataclass
class Outcome:
    adversarial: torch.Tensor
    result: AttackResult | None = None  # trompe's own result, for its step counts


# A row runs the attack on (images, targets) with a number of steps (a short one to warm up).
Runner = Callable[[torch.Tensor, torch.Tensor, int], Outcome]


@dataclass
class Row:
    name: str
    runner: Runner | None
    fixed: bool = True  # every image takes every step
    note: str = ""
    group: str = "main"  # "main" table, or "early" (the early-stopping experiment only)
    seconds: list[float] = field(default_factory=list)
    outcome: Outcome | None = None
    score: Score | None = None
    error: str | None = None


def _seed_global(seed: int) -> None:
    # The peers draw their random start from the global generators; reseed them before each run
    # so that every repeat of a row does the same work. (trompe takes a seed instead.)
    torch.manual_seed(seed)
    np.random.seed(seed)


def plain_loop(clf: trompe.Classifier, setting: Setting) -> Runner:
    """The floor: the textbook loop and nothing else."""

    def run(images: torch.Tensor, targets: torch.Tensor, steps: int) -> Outcome:
        generator = torch.Generator(device=images.device).manual_seed(setting.seed)
        noise = torch.rand(images.shape, generator=generator, device=images.device)
        x = (images + (2 * noise - 1) * setting.eps).clamp(0, 1)
        low, high = images - setting.eps, images + setting.eps
        for _ in range(steps):
            x.requires_grad_(True)
            loss = F.cross_entropy(clf(x), targets)
            (grad,) = torch.autograd.grad(loss, x)
            x = x.detach() - setting.step_size * grad.sign()  # targeted: descend the CE
            x = torch.minimum(torch.maximum(x, low), high).clamp(0, 1)
        return Outcome(x.detach())

    return run


def trompe_pgd(
    clf: trompe.Classifier, setting: Setting, *, early_stop: bool, confidence: float | None
) -> Runner:
    def run(images: torch.Tensor, targets: torch.Tensor, steps: int) -> Outcome:
        attack = PGD(
            eps=setting.eps,
            norm="linf",
            steps=steps,
            step_size=setting.step_size,
            random_start=True,
            early_stop=early_stop,
            seed=setting.seed,
        )
        result = attack(clf, images, Targeted(targets, confidence=confidence))
        return Outcome(result.adversarial, result)

    return run


def torchattacks_pgd(clf: trompe.Classifier, setting: Setting) -> Runner:
    import torchattacks

    def run(images: torch.Tensor, targets: torch.Tensor, steps: int) -> Outcome:
        _seed_global(setting.seed)
        attack = torchattacks.PGD(
            clf, eps=setting.eps, alpha=setting.step_size, steps=steps, random_start=True
        )
        attack.set_mode_targeted_by_label(quiet=True)
        return Outcome(attack(images, targets))

    return run


def foolbox_pgd(clf: trompe.Classifier, setting: Setting) -> Runner:
    import foolbox as fb

    # The Classifier normalises inside: no preprocessing argument.
    model = fb.PyTorchModel(clf, bounds=(0, 1), device=setting.device)

    def run(images: torch.Tensor, targets: torch.Tensor, steps: int) -> Outcome:
        _seed_global(setting.seed)
        attack = fb.attacks.LinfPGD(abs_stepsize=setting.step_size, steps=steps, random_start=True)
        criterion = fb.criteria.TargetedMisclassification(targets)
        _, clipped, _ = attack(model, images, criterion, epsilons=setting.eps)
        return Outcome(clipped)

    return run


def art_pgd(clf: trompe.Classifier, setting: Setting, batch: int) -> Runner:
    import logging

    from art.attacks.evasion import ProjectedGradientDescentPyTorch
    from art.estimators.classification import PyTorchClassifier

    logging.getLogger("art").setLevel(logging.WARNING)
    estimator = PyTorchClassifier(
        model=clf,
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=(3, *(clf.input_size or (224, 224))),
        nb_classes=clf.num_classes,
        clip_values=(0.0, 1.0),
        device_type="gpu" if setting.device.type == "cuda" else "cpu",
    )

    def run(images: torch.Tensor, targets: torch.Tensor, steps: int) -> Outcome:
        _seed_global(setting.seed)
        attack = ProjectedGradientDescentPyTorch(
            estimator,
            norm=np.inf,
            eps=setting.eps,
            eps_step=setting.step_size,
            max_iter=steps,
            targeted=True,
            num_random_init=1,  # one uniform random start, as the other rows
            batch_size=batch,
            verbose=False,
        )
        # ART works on NumPy arrays: the conversions are part of its cost.
        adversarial = attack.generate(x=images.cpu().numpy(), y=targets.cpu().numpy())
        return Outcome(torch.from_numpy(adversarial).to(images.device))

    return run


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def build_rows(
    clf: trompe.Classifier, setting: Setting, batch: int, skip: Sequence[str]
) -> list[Row]:
    rows = [
        Row("plain loop (floor)", plain_loop(clf, setting)),
        Row(
            "trompe PGD, early_stop=False",
            trompe_pgd(clf, setting, early_stop=False, confidence=CONFIDENCE),
        ),
        Row(
            f"trompe PGD, early_stop=True, p>={CONFIDENCE}",
            trompe_pgd(clf, setting, early_stop=True, confidence=CONFIDENCE),
            fixed=False,
        ),
    ]
    peers: list[tuple[str, str, Callable[[], Runner]]] = [
        ("torchattacks", "torchattacks PGD", lambda: torchattacks_pgd(clf, setting)),
        ("foolbox", "Foolbox LinfPGD", lambda: foolbox_pgd(clf, setting)),
        (
            "adversarial-robustness-toolbox",
            "ART ProjectedGradientDescentPyTorch",
            lambda: art_pgd(clf, setting, batch),
        ),
    ]
    short = {"torchattacks": "torchattacks", "foolbox": "foolbox", "art": "adversarial-robustness-toolbox"}
    skipped = {short.get(s, s) for s in skip}
    for package, name, make in peers:
        label = f"{name} {_version(package)}" if _version(package) != "not installed" else name
        if package in skipped:
            rows.append(Row(label, None, note="skipped (--skip)"))
            continue
        try:
            runner = make()
        except ImportError as error:
            rows.append(Row(label, None, note=f"not installed ({error})"))
            continue
        except Exception as error:  # a peer that breaks must not stop the benchmark
            rows.append(Row(label, None, note=f"failed to set up: {type(error).__name__}: {error}"))
            continue
        rows.append(Row(label, runner))
    rows.append(
        Row(
            "trompe PGD, early_stop=True, top-1 only",
            trompe_pgd(clf, setting, early_stop=True, confidence=None),
            fixed=False,
            group="early",
        )
    )
    return rows


# -- running --------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(runner: Runner, images: torch.Tensor, targets: torch.Tensor, steps: int) -> tuple[float, Outcome]:
    _sync(images.device)
    start = time.perf_counter()
    outcome = runner(images, targets, steps)
    _sync(images.device)
    return time.perf_counter() - start, outcome


def run_all(
    clf: trompe.Classifier,
    rows: list[Row],
    images: torch.Tensor,
    targets: torch.Tensor,
    setting: Setting,
    repeats: int,
    warmup_steps: int,
) -> None:
    active = [row for row in rows if row.runner is not None]
    log(f"warm-up: {warmup_steps} steps per row")
    for row in active:
        assert row.runner is not None
        try:
            timed(row.runner, images, targets, warmup_steps)
        except Exception as error:  # noqa: BLE001 - report and go on with the other rows
            row.error = f"{type(error).__name__}: {error}"
            log(f"  {row.name}: failed: {row.error}")
    active = [row for row in active if row.error is None]
    for repeat in range(repeats):
        # Rotate the order so that no row always runs first or right after another.
        shift = repeat % len(active) if active else 0
        for row in active[shift:] + active[:shift]:
            assert row.runner is not None
            if row.error is not None:
                continue
            try:
                seconds, outcome = timed(row.runner, images, targets, setting.steps)
            except Exception as error:  # noqa: BLE001
                row.error = f"{type(error).__name__}: {error}"
                log(f"  {row.name}: failed: {row.error}")
                continue
            row.seconds.append(seconds)
            row.outcome = outcome
            log(f"  repeat {repeat + 1}/{repeats}  {row.name}: {seconds:.2f} s")
    for row in active:
        if row.outcome is not None:
            row.score = score(clf, images, row.outcome.adversarial, targets)


# -- tables ---------------------------------------------------------------------------------------


def _median(row: Row) -> float:
    return statistics.median(row.seconds)


def _passes(row: Row, batch: int, steps: int) -> int:
    """Gradient passes (one image, one forward + backward) the row spent."""
    if row.outcome is not None and row.outcome.result is not None:
        return int(row.outcome.result.gradients.sum())
    return batch * steps


def _steps_text(row: Row, steps: int) -> str:
    if row.fixed or row.outcome is None or row.outcome.result is None:
        return str(steps)
    taken = row.outcome.result.steps.tolist()
    return f"{statistics.mean(taken):.1f} ({min(taken)}-{max(taken)})"


def render(header: list[str], body: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*cells) for cells in body]
    return "\n".join(lines)


def main_table(rows: list[Row], batch: int, steps: int, markdown: bool) -> str:
    floor = next((r for r in rows if r.name.startswith("plain loop") and r.seconds), None)
    header = [
        "method",
        "steps / image",
        "seconds (median)",
        "min-max",
        "ms / step / image",
        "vs floor",
        f"p>={CONFIDENCE}",
        "target top-1",
        "max L-inf",
    ]
    body = []
    for row in rows:
        if row.group != "main":
            continue
        if not row.seconds or row.score is None:
            body.append([row.name, "-", "-", "-", "-", "-", "-", "-", row.note or row.error or "-"])
            continue
        med = _median(row)
        passes = _passes(row, batch, steps)
        n = len(row.score.success)
        body.append(
            [
                row.name,
                _steps_text(row, steps),
                f"{med:.2f}",
                f"{min(row.seconds):.2f}-{max(row.seconds):.2f}",
                f"{1000 * med / passes:.1f}" if passes else "-",
                f"{med / _median(floor):.3f}" if floor is not None else "-",
                f"{int(row.score.success.sum())}/{n}",
                f"{int(row.score.top1.sum())}/{n}",
                f"{row.score.max_linf:.0f}",
            ]
        )
    return render(header, body, markdown)


def early_table(rows: list[Row], names: list[str], batch: int, steps: int, markdown: bool) -> str:
    fixed = next((r for r in rows if r.name.startswith("trompe PGD, early_stop=False")), None)
    early = [r for r in rows if r.name.startswith("trompe PGD, early_stop=True")]
    header = ["run", "steps per image (" + ", ".join(names) + ")", "gradient passes", "forwards",
              "seconds (median)", "time vs fixed", "passes vs fixed", f"p>={CONFIDENCE}", "top-1"]
    body = []
    for row in ([fixed] if fixed else []) + early:
        if not row.seconds or row.outcome is None or row.outcome.result is None or row.score is None:
            continue
        result = row.outcome.result
        passes = int(result.gradients.sum())
        fixed_passes = batch * steps
        n = len(row.score.success)
        body.append(
            [
                row.name.replace("trompe PGD, ", ""),
                ", ".join(str(s) for s in result.steps.tolist()),
                str(passes),
                str(int(result.forwards.sum())),
                f"{_median(row):.2f}",
                f"{_median(row) / _median(fixed):.3f}" if fixed and fixed.seconds else "-",
                f"{passes / fixed_passes:.3f}",
                f"{int(row.score.success.sum())}/{n}",
                f"{int(row.score.top1.sum())}/{n}",
            ]
        )
    return render(header, body, markdown)


def aims(rows: list[Row]) -> list[str]:
    lines = []
    floor = next((r for r in rows if r.name.startswith("plain loop") and r.seconds), None)
    fixed = next((r for r in rows if r.name.startswith("trompe PGD, early_stop=False") and r.seconds), None)
    early = next(
        (r for r in rows if r.name.startswith("trompe PGD, early_stop=True, p") and r.seconds), None
    )
    if floor and fixed:
        ratio = _median(fixed) / _median(floor)
        verdict = "met" if ratio <= 1.05 else "MISSED"
        lines.append(
            f"(a) trompe fixed 40 steps / plain loop = {ratio:.3f} (aim <= 1.05): {verdict}"
        )
    peers = [
        r for r in rows
        if r.group == "main" and r.seconds and r.score is not None
        and not r.name.startswith(("plain loop", "trompe"))
    ]
    if early and early.score is not None:
        for peer in peers:
            assert peer.score is not None
            ratio = _median(early) / _median(peer)
            ok_time = ratio <= 1 / 3
            ok_rate = int(early.score.success.sum()) >= int(peer.score.success.sum())
            verdict = "met" if ok_time and ok_rate else "MISSED"
            lines.append(
                f"(b) trompe early stop / {peer.name} = {ratio:.3f} of the time (aim <= 0.333), "
                f"success {int(early.score.success.sum())} vs {int(peer.score.success.sum())}: "
                f"{verdict}"
            )
        if not peers:
            lines.append("(b) no peer ran: nothing to compare with")
    return lines


def environment(device: torch.device) -> list[str]:
    lines = [
        f"python {platform.python_version()}, torch {torch.__version__}, trompe {trompe.__version__}",
        f"peers: torchattacks {_version('torchattacks')}, foolbox {_version('foolbox')} "
        f"(eagerpy {_version('eagerpy')}), ART {_version('adversarial-robustness-toolbox')}",
        f"device: {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
           f" ({os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()})"),
    ]
    if hasattr(os, "getloadavg"):
        lines.append("load average at start: " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
    return lines


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per row (default 3)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--markdown", action="store_true", help="print GitHub markdown tables")
    parser.add_argument(
        "--threads", type=int, default=2,
        help="torch.set_num_threads on the CPU (default 2; 0 leaves torch's default)",
    )
    parser.add_argument("--eps", type=float, default=10.0, help="L-inf budget, 0-255 units (10)")
    parser.add_argument(
        "--step-size", type=float, default=None,
        help="step size, 0-255 units (default eps/4, trompe's default: 2.5 for eps 10)",
    )
    parser.add_argument("--steps", type=int, default=40, help="steps (40)")
    parser.add_argument("--images", type=int, default=None, help="use only the first N photos")
    parser.add_argument(
        "--warmup-steps", type=int, default=2, help="steps of the untimed warm-up run (2)"
    )
    parser.add_argument(
        "--skip", default="", help="comma-separated peers to leave out: torchattacks,foolbox,art"
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    if args.device == "cpu" and args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    warnings.filterwarnings("ignore", category=UserWarning, module="foolbox")

    clf = trompe.load_model(MODEL).to(device)
    images, targets, names, notes = load_batch(clf, device, args.images)
    step_255 = args.step_size if args.step_size is not None else args.eps / 4
    setting = Setting(
        eps=args.eps / 255, step_size=step_255 / 255, steps=args.steps, device=device
    )
    batch = len(images)
    skip = [s.strip().lower() for s in args.skip.split(",") if s.strip()]
    rows = build_rows(clf, setting, batch, skip)

    with torch.no_grad():
        before = clf(images).softmax(dim=1)
    log(f"{batch} photos: " + ", ".join(
        f"{n} ({clf.labels[int(p.argmax())]} {float(p.max()):.2f}) -> {clf.labels[int(t)]}"
        for n, p, t in zip(names, before, targets, strict=True)
    ))
    run_all(clf, rows, images, targets, setting, args.repeats, args.warmup_steps)
    elapsed = time.perf_counter() - started

    title = "#" if args.markdown else ""
    out = []
    out.append(
        f"{title}# PGD, {MODEL}, {batch} photos at 224x224 (8-bit), targeted, L-inf eps "
        f"{args.eps:g}/255, step {step_255:g}/255, {args.steps} steps, random start"
    )
    out.append("")
    out += [("- " if args.markdown else "") + line for line in environment(device)]
    out.append(
        ("- " if args.markdown else "")
        + f"seconds: median of {args.repeats} runs after a {args.warmup_steps}-step warm-up; "
        f"success on the output rounded to 8 bits and re-predicted; L-inf in 0-255 units"
    )
    out.append(("- " if args.markdown else "") + "photos -> targets: " + ", ".join(
        f"{n} -> {clf.labels[int(t)]} ({int(t)})" for n, t in zip(names, targets, strict=True)
    ))
    for note in notes:
        out.append(("- " if args.markdown else "") + "note: " + note)
    out.append("")
    out.append(main_table(rows, batch, args.steps, args.markdown))
    out.append("")
    out.append(f"{title}# Early stopping on the same batch")
    out.append("")
    out.append(early_table(rows, names, batch, args.steps, args.markdown))
    out.append("")
    for row in rows:
        if row.runner is None or row.error:
            out.append(("- " if args.markdown else "") + f"{row.name}: {row.note or row.error}")
        if row.outcome is not None and row.outcome.result is not None and row.score is not None:
            own = row.outcome.result.success.cpu()
            if not torch.equal(own, row.score.success) and row.outcome.result.goal.confidence:
                out.append(f"WARNING: {row.name}: result.success {own.tolist()} differs from "
                           f"re-prediction {row.score.success.tolist()}")
    out += [("- " if args.markdown else "") + line for line in aims(rows)]
    out.append(("- " if args.markdown else "") + f"total wall time {elapsed:.0f} s")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
