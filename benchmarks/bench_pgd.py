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
Times are medians over ``--repeats`` runs after a short warm-up run of every row. The rows run
in turn within each repeat, in forward then backward order, so that a change of load on the
machine hits them all alike; "vs floor" is the median of the per-repeat ratios to the plain loop.
CPU time (all threads of this process) is reported next to wall-clock time.

Aim (a), trompe's cost per step within 5 % of the plain loop's, is also measured step by step,
interleaved: during one fixed-step trompe run (``--interleaved-steps`` steps), its ``progress``
callback runs one step of the plain loop on its own copy of the batch and times it; trompe's
step is the time between two callbacks less that plain step. Each pair of steps is taken within
a second, under the same load: on a shared machine the load of other processes comes and goes
within one 40-step run, and whole-run ratios scatter by +-10 % or more.

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

import os

# On a shared machine, OpenMP threads that spin while they wait turn any other busy process
# into a 10x slowdown of every step (measured here: 4.7 s instead of 0.45 s per step with two
# threads and one other process busy). Passive waiting keeps the timings meaningful. Set before
# torch is imported, where the OpenMP runtime reads it; an explicit setting is respected.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from statistics import median

# benchmarks/_harness.py and _peers.py: found because a script's own folder is first on sys.path.
import _harness as h
import torch
import torch.nn.functional as F
from _peers import art_pgd, foolbox_pgd, torchattacks_pgd

import trompe
from trompe.attacks import PGD, AttackResult, Targeted, measure

MODEL = "efficientnet_lite0"
CONFIDENCE = 0.99

#: (photo, target class): the photos of ``_harness.PHOTOS``, in its order (the first two ship
#: with trompe, the others are the colour photos of scikit-image's data folder).
PHOTOS: tuple[tuple[str, int], ...] = (
    ("chelsea", 951),  # cat -> lemon
    ("coffee", 144),  # cup of coffee -> pelican
    ("astronaut", 937),  # Eileen Collins -> broccoli
    ("rocket", 742),  # launch pad -> printer
    ("motorcycle_left", 511),  # motorcycle -> convertible
    ("camera", 963),  # cameraman (grayscale photo, read as RGB) -> pizza
)


def load_batch(
    clf: trompe.Classifier, device: torch.device, limit: int | None
) -> tuple[torch.Tensor, torch.Tensor, list[str], list[str]]:
    """The photos at the model's input size on the 8-bit grid, their targets, names, notes."""
    images, names, missing = h.load_photos(clf, [name for name, _ in PHOTOS], device)
    notes = []
    if missing:
        notes.append(
            f"photos not found: {', '.join(missing)} (install scikit-image for its data folder)"
        )
    if limit is not None:
        images, names = images[:limit], names[:limit]
    target_of = dict(PHOTOS)
    targets = torch.tensor([target_of[name] for name in names], device=device)
    return images, targets, names, notes


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
    output = h.rounded(images, adversarial)
    with torch.no_grad():
        probs = clf(output).softmax(dim=1)
    target_prob = probs.gather(1, targets[:, None]).squeeze(1)
    top1 = probs.argmax(dim=1) == targets
    return Score(
        success=(top1 & (target_prob >= CONFIDENCE)).cpu(),
        top1=top1.cpu(),
        target_prob=target_prob.cpu(),
        max_linf=float(measure(images, output).linf.max()),
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
class PgdRow(h.Row):
    """A row; its outcome is trompe's AttackResult, or the peer's output."""

    fixed: bool = True  # every image takes every step
    score: Score | None = None

    @property
    def result(self) -> AttackResult | None:
        return self.outcome if isinstance(self.outcome, AttackResult) else None


def _random_start(images: torch.Tensor, setting: Setting) -> torch.Tensor:
    generator = torch.Generator(device=images.device).manual_seed(setting.seed)
    noise = torch.rand(images.shape, generator=generator, device=images.device)
    return (images + (2 * noise - 1) * setting.eps).clamp(0, 1)


def _plain_step(
    clf: trompe.Classifier,
    x: torch.Tensor,
    targets: torch.Tensor,
    low: torch.Tensor,
    high: torch.Tensor,
    step_size: float,
) -> torch.Tensor:
    """One textbook targeted L-inf PGD step: forward, backward, sign step, clamp."""
    x = x.detach().requires_grad_(True)
    loss = F.cross_entropy(clf(x), targets)
    (grad,) = torch.autograd.grad(loss, x)
    x = x.detach() - step_size * grad.sign()  # targeted: descend the cross-entropy
    return torch.minimum(torch.maximum(x, low), high).clamp(0, 1)


def plain_loop(clf: trompe.Classifier, setting: Setting) -> Callable[..., torch.Tensor]:
    """The floor: the textbook loop and nothing else."""

    def run(images: torch.Tensor, targets: torch.Tensor, steps: int) -> torch.Tensor:
        x = _random_start(images, setting)
        low, high = images - setting.eps, images + setting.eps
        for _ in range(steps):
            x = _plain_step(clf, x, targets, low, high, setting.step_size)
        return x

    return run


def trompe_pgd(
    clf: trompe.Classifier, setting: Setting, *, early_stop: bool, confidence: float | None
) -> Callable[..., AttackResult]:
    def run(images: torch.Tensor, targets: torch.Tensor, steps: int) -> AttackResult:
        attack = PGD(
            eps=setting.eps,
            norm="linf",
            steps=steps,
            step_size=setting.step_size,
            random_start=True,
            early_stop=early_stop,
            seed=setting.seed,
        )
        return attack(clf, images, Targeted(targets, confidence=confidence))

    return run


def build_rows(
    clf: trompe.Classifier, setting: Setting, batch: int, skip: Sequence[str]
) -> list[PgdRow]:
    s = setting
    rows = [
        PgdRow("plain loop (floor)", plain_loop(clf, s), group="main"),
        PgdRow(
            "trompe PGD, early_stop=False",
            trompe_pgd(clf, s, early_stop=False, confidence=CONFIDENCE),
            group="main",
        ),
        PgdRow(
            f"trompe PGD, early_stop=True, p>={CONFIDENCE}",
            trompe_pgd(clf, s, early_stop=True, confidence=CONFIDENCE),
            group="main",
            fixed=False,
        ),
    ]
    common = (clf, s.eps, s.step_size, s.seed)
    peers: list[tuple[str, str, Callable[..., Callable[..., torch.Tensor]], tuple[object, ...]]] = [
        ("torchattacks", "torchattacks PGD", torchattacks_pgd, common),
        ("foolbox", "Foolbox LinfPGD", foolbox_pgd, (*common, s.device)),
        ("art", "ART ProjectedGradientDescentPyTorch", art_pgd, (*common, batch, s.device)),
    ]
    for key, name, make, make_args in peers:
        version = h.package_version(key)
        label = f"{name} {version}" if version != "not installed" else name
        rows.append(
            h.setup_row(label, make, *make_args, skip=key in skip, cls=PgdRow, group="main")
        )
    rows.append(
        PgdRow(
            "trompe PGD, early_stop=True, top-1 only",
            trompe_pgd(clf, s, early_stop=True, confidence=None),
            fixed=False,
            group="early",
        )
    )
    return rows


# -- running --------------------------------------------------------------------------------------


@dataclass
class Interleaved:
    """Step times of trompe and of the plain loop, taken in turn within one run (seconds)."""

    trompe_wall: list[float] = field(default_factory=list)
    plain_wall: list[float] = field(default_factory=list)
    trompe_cpu: list[float] = field(default_factory=list)
    plain_cpu: list[float] = field(default_factory=list)

    def ratios(self, kind: str) -> list[float]:
        """trompe / plain, step by step."""
        if kind == "wall":
            pairs = zip(self.trompe_wall, self.plain_wall, strict=True)
        else:
            pairs = zip(self.trompe_cpu, self.plain_cpu, strict=True)
        return [t / p for t, p in pairs]


def interleaved_steps(
    clf: trompe.Classifier,
    setting: Setting,
    images: torch.Tensor,
    targets: torch.Tensor,
    steps: int,
) -> Interleaved | None:
    """Time trompe's steps and the plain loop's steps in turn, within one trompe run.

    trompe's ``progress`` callback, called at the end of each of its steps, runs one step of
    the plain loop (on its own iterate) and times it; trompe's step is the time between two
    callbacks less the plain step inside. The interval before the first callback (set-up,
    the evaluation of the clean images) is left out. CPU only: on a GPU the clocks would need a
    synchronisation per step.
    """
    if images.device.type != "cpu" or steps < 2:
        return None
    result = Interleaved()
    state = {"x": _random_start(images, setting)}
    low, high = images - setting.eps, images + setting.eps
    last: tuple[float, float] | None = None

    def callback(_: object) -> None:
        nonlocal last
        now = (time.perf_counter(), time.process_time())
        if last is not None:
            result.trompe_wall.append(now[0] - last[0])
            result.trompe_cpu.append(now[1] - last[1])
        start = (time.perf_counter(), time.process_time())
        state["x"] = _plain_step(clf, state["x"], targets, low, high, setting.step_size)
        end = (time.perf_counter(), time.process_time())
        if last is not None:
            result.plain_wall.append(end[0] - start[0])
            result.plain_cpu.append(end[1] - start[1])
        last = (time.perf_counter(), time.process_time())

    h.log(f"interleaved: one trompe run of {steps} steps, a plain-loop step after each")
    attack = PGD(
        eps=setting.eps,
        steps=steps,
        step_size=setting.step_size,
        random_start=True,
        early_stop=False,
        seed=setting.seed,
    )
    attack(clf, images, Targeted(targets, confidence=CONFIDENCE), progress=callback)
    return result


# -- tables ---------------------------------------------------------------------------------------


def _find(rows: list[PgdRow], prefix: str) -> PgdRow | None:
    return next((r for r in rows if r.name.startswith(prefix) and r.seconds), None)


def _passes(row: PgdRow, batch: int, steps: int) -> int:
    """Gradient passes (one image through forward + backward) the row spent."""
    if row.result is not None:
        return int(row.result.gradients.sum())
    return batch * steps


def _steps_text(row: PgdRow, steps: int) -> str:
    if row.fixed or row.result is None:
        return str(steps)
    taken = row.result.steps.tolist()
    return f"{statistics.mean(taken):.1f} ({min(taken)}-{max(taken)})"


def main_table(rows: list[PgdRow], batch: int, steps: int, on_cpu: bool, markdown: bool) -> str:
    floor = _find(rows, "plain loop")
    header = ["method", "steps / image", "s (median)", "min-max"]
    if on_cpu:
        header += ["CPU s (median)"]
    header += ["ms / step / image", "vs floor" + (" (wall / CPU)" if on_cpu else "")]
    header += [f"p>={CONFIDENCE}", "target top-1", "min p(target)", "max L-inf"]
    body = []
    for row in rows:
        if row.group != "main":
            continue
        if not row.seconds or row.score is None:
            reason = row.note or row.error or "no result"
            body.append([row.name, *("-" for _ in header[1:-1]), reason])
            continue
        wall = statistics.median(row.seconds)
        cpu = statistics.median(row.cpu_seconds)
        passes = _passes(row, batch, steps)
        n = len(row.score.success)
        cells = [row.name, _steps_text(row, steps), f"{wall:.2f}"]
        cells.append(f"{min(row.seconds):.2f}-{max(row.seconds):.2f}")
        if on_cpu:
            cells.append(f"{cpu:.2f}")
        cells.append(f"{1000 * wall / passes:.1f}" if passes else "-")
        ratios = paired_ratios(row, floor) if floor is not None else ([], [])
        if not ratios[0]:
            cells.append("-")
        elif on_cpu:
            cells.append(f"{statistics.median(ratios[0]):.3f} / {statistics.median(ratios[1]):.3f}")
        else:
            cells.append(f"{statistics.median(ratios[0]):.3f}")
        cells += [
            f"{int(row.score.success.sum())}/{n}",
            f"{int(row.score.top1.sum())}/{n}",
            f"{float(row.score.target_prob.min()):.3f}",
            f"{row.score.max_linf:.0f}",
        ]
        body.append(cells)
    return h.render(header, body, markdown, rule=True)


def early_table(
    rows: list[PgdRow], names: list[str], batch: int, steps: int, markdown: bool
) -> str:
    fixed = _find(rows, "trompe PGD, early_stop=False")
    early = [r for r in rows if r.name.startswith("trompe PGD, early_stop=True") and r.seconds]
    header = [
        "trompe PGD",
        "steps per image (" + ", ".join(names) + ")",
        "gradient passes",
        "forwards",
        "s (median)",
        "time vs fixed",
        "passes vs fixed",
        f"p>={CONFIDENCE}",
        "target top-1",
    ]
    body = []
    for row in ([fixed] if fixed else []) + early:
        if row.result is None or row.score is None:
            continue
        result = row.result
        passes = int(result.gradients.sum())
        n = len(row.score.success)
        body.append(
            [
                row.name.replace("trompe PGD, ", ""),
                ", ".join(str(s) for s in result.steps.tolist()),
                str(passes),
                str(int(result.forwards.sum())),
                f"{statistics.median(row.seconds):.2f}",
                f"{statistics.median(row.seconds) / statistics.median(fixed.seconds):.3f}"
                if fixed
                else "-",
                f"{passes / (batch * steps):.3f}",
                f"{int(row.score.success.sum())}/{n}",
                f"{int(row.score.top1.sum())}/{n}",
            ]
        )
    return h.render(header, body, markdown, rule=True)


def paired_ratios(row: PgdRow, base: PgdRow) -> tuple[list[float], list[float]]:
    """Per-repeat ratios row / base of wall and CPU seconds, over the repeats both ran."""
    wall, cpu = [], []
    for i, repeat in enumerate(row.repeats):
        if repeat in base.repeats:
            j = base.repeats.index(repeat)
            wall.append(row.seconds[i] / base.seconds[j])
            cpu.append(row.cpu_seconds[i] / base.cpu_seconds[j])
    return wall, cpu


def aims(rows: list[PgdRow], inter: Interleaved | None, steps: int, on_cpu: bool) -> list[str]:
    """The two aims, checked on the medians (and, on the CPU, on CPU time too)."""
    lines = []
    floor = _find(rows, "plain loop")
    fixed = _find(rows, "trompe PGD, early_stop=False")
    early = _find(rows, "trompe PGD, early_stop=True, p")
    if floor and fixed:
        wall, cpu = paired_ratios(fixed, floor)
        text = (
            f"(a) whole runs, trompe {steps} fixed steps / plain loop, median over the "
            f"{len(wall)} repeats: {median(wall):.3f} wall ({min(wall):.3f}-{max(wall):.3f})"
        )
        ok = statistics.median(wall) <= 1.05
        if on_cpu:
            text += f", {statistics.median(cpu):.3f} CPU ({min(cpu):.3f}-{max(cpu):.3f})"
            ok = ok and statistics.median(cpu) <= 1.05
        text += f"; ratio of the medians {fixed.median / floor.median:.3f} wall"
        lines.append(f"{text} (aim <= 1.05): {'met' if ok else 'MISSED'}")
    if inter is not None and inter.trompe_wall:
        wall, cpu = inter.ratios("wall"), inter.ratios("cpu")
        step_wall, step_cpu = statistics.median(wall), statistics.median(cpu)
        quartiles = statistics.quantiles(wall, n=4) if len(wall) > 1 else [wall[0]] * 3
        lines.append(
            f"(a) per step, interleaved ({len(wall)} pairs of steps): trompe "
            f"{1000 * statistics.median(inter.trompe_wall):.1f} ms, plain loop "
            f"{1000 * median(inter.plain_wall):.1f} ms per step of the batch; median of the "
            f"step-by-step ratios {step_wall:.3f} wall (quartiles {quartiles[0]:.3f}-"
            f"{quartiles[2]:.3f}), {step_cpu:.3f} CPU (aim <= 1.05): "
            f"{'met' if max(step_wall, step_cpu) <= 1.05 else 'MISSED'}"
        )
    peers = [
        r
        for r in rows
        if r.group == "main"
        and r.seconds
        and r.score is not None
        and not r.name.startswith(("plain loop", "trompe"))
    ]
    if early is None or early.score is None:
        return lines
    if not peers:
        lines.append("(b) no peer ran: nothing to compare with")
    won = int(early.score.success.sum())
    for peer in peers:
        assert peer.score is not None
        ratio = statistics.median(early.seconds) / statistics.median(peer.seconds)
        theirs = int(peer.score.success.sum())
        ok = ratio <= 1 / 3 and won >= theirs
        lines.append(
            f"(b) trompe early stop / {peer.name}: {ratio:.3f} of the time (aim <= 0.333), "
            f"p>={CONFIDENCE} on {won} vs {theirs} images: {'met' if ok else 'MISSED'}"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = h.arguments(__doc__, repeats=3, threads=2)
    parser.add_argument("--eps", type=float, default=10.0, help="L-inf budget, 0-255 units (10)")
    parser.add_argument(
        "--step-size",
        type=float,
        default=None,
        help="step size, 0-255 units (default eps/4, trompe's default: 2.5 for eps 10)",
    )
    parser.add_argument("--steps", type=int, default=40, help="steps (40)")
    parser.add_argument("--images", type=int, default=None, help="use only the first N photos")
    parser.add_argument(
        "--warmup-steps", type=int, default=2, help="steps of the untimed warm-up run (2)"
    )
    parser.add_argument(
        "--interleaved-steps",
        type=int,
        default=30,
        help="steps of the run that times trompe and the plain loop step by step, in turn "
        "(30; 0 to skip; CPU only)",
    )
    args = h.parse(parser, argv)
    started = time.perf_counter()
    device = torch.device(args.device)

    clf = trompe.load_model(MODEL).to(device)
    images, targets, names, notes = load_batch(clf, device, args.images)
    step_255 = args.step_size if args.step_size is not None else args.eps / 4
    setting = Setting(eps=args.eps / 255, step_size=step_255 / 255, steps=args.steps, device=device)
    batch = len(images)
    rows = build_rows(clf, setting, batch, args.skip)

    with torch.no_grad():
        before = clf(images).softmax(dim=1)
    h.log(
        f"{batch} photos: "
        + ", ".join(
            f"{n} ({clf.labels[int(p.argmax())]} {float(p.max()):.2f}) -> {clf.labels[int(t)]}"
            for n, p, t in zip(names, before, targets, strict=True)
        )
    )
    h.log(f"warm-up: {args.warmup_steps} steps per row")
    for row in rows:
        row.bind(images, targets, args.steps, warm=(images, targets, args.warmup_steps))
    # Forward, then backward order (A B C ... C B A): a load that drifts during the run hits
    # every row alike on average, and the floor and trompe's fixed-step run, neighbours in the
    # list, always run back to back, each first in turn: their per-repeat ratio is the figure
    # that the noise of a shared machine disturbs least.
    h.run_rows(rows, args.repeats, device)
    for row in rows:
        if row.done:
            output = row.result.adversarial if row.result is not None else row.outcome
            row.score = score(clf, images, output, targets)
    inter = interleaved_steps(clf, setting, images, targets, args.interleaved_steps)
    elapsed = time.perf_counter() - started

    report = h.Report(args.markdown)
    report.heading(
        f"PGD, {MODEL}, {batch} photos at 224x224 (8-bit), targeted, L-inf eps "
        f"{args.eps:g}/255, step {step_255:g}/255, {args.steps} steps, random start"
    )
    lines = h.environment(device, "torchattacks", "foolbox", "art")
    report.bullets(
        lines[0].replace(", ART", f" (eagerpy {h.package_version('eagerpy')}), ART"),
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}",
        *lines[1:],
        f"seconds: median of {args.repeats} runs after a {args.warmup_steps}-step warm-up; "
        "'vs floor': median over the repeats of (this row / the plain loop of the same repeat); "
        "success on the output rounded to 8 bits and re-predicted; L-inf in 0-255 units",
        "photos -> targets: "
        + ", ".join(
            f"{n} -> {clf.labels[int(t)]} ({int(t)})" for n, t in zip(names, targets, strict=True)
        ),
        *(f"note: {note}" for note in notes),
    )
    report.add("")
    on_cpu = device.type == "cpu"
    report.add(main_table(rows, batch, args.steps, on_cpu, args.markdown), "")
    report.heading("Early stopping on the same batch")
    report.add(early_table(rows, names, batch, args.steps, args.markdown), "")
    for row in rows:
        if row.run is None or row.error:
            report.bullets(f"{row.name}: {row.note or row.error}")
        if row.result is not None and row.score is not None:
            # trompe's own verdict must agree with the re-prediction (its goal: p > 0.99, or
            # top-1 alone without a confidence).
            own = row.result.success.cpu()
            expected = row.score.success if row.result.goal.confidence else row.score.top1
            if not torch.equal(own, expected):
                report.add(
                    f"WARNING: {row.name}: result.success {own.tolist()} differs from "
                    f"re-prediction {row.score.success.tolist()}"
                )
    report.bullets(*aims(rows, inter, args.steps, on_cpu), f"total wall time {elapsed:.0f} s")
    report.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
