"""What trompe's attack engine costs per step, next to the leanest plain PGD loop.

Both sides attack the same ``trompe.Classifier`` (EfficientNet-Lite0) on the same batch of
photos at its 224 x 224 input, rounded to 8 bits, with targeted L-inf PGD: eps 10/255, step
eps/4, 40 fixed steps, the same uniform random start and the same loss (the summed
cross-entropy of the target, ascended as ``Targeted.loss`` does).

- ``plain loop``: per step, one forward through the classifier, the loss,
  ``torch.autograd.grad``, a sign step and one clamp to the eps-ball intersected with [0, 1]
  (bounds computed once). Nothing else: no bookkeeping, no 8-bit check, no evaluation before or
  after.
- ``trompe``: ``PGD(eps=10/255, steps=40, early_stop=False, random_start=True, seed=0)`` called
  as a user calls it; its time includes what every call does besides the steps (validation,
  the evaluation of the clean batch, the 8-bit rounding and the re-prediction of the result:
  two forward passes of the batch, about 2/3 of one step).

Two ways of measuring, because a shared machine's load comes and goes:

(a) interleaved: ``--pairs`` pairs of whole runs, plain loop and trompe back to back (the order
    alternates from pair to pair); the median of the per-pair ratios trompe / plain, wall clock
    and CPU time of this process.
(b) independent, as an outside reviewer would: each side run ``--repeats`` times in a row
    (plain loop first), the ratio of the medians, wall clock and CPU time.

The timed runs follow one short untimed warm-up of each side. The script also reports how many
of the two sides' 8-bit images differ: the plain loop projects with one clamp, trompe with
``images + clamp(x - images)``; the float iterates differ in the last bit and 40 sign steps
amplify that, so most values differ (with trompe's arithmetic a plain loop gives trompe's output
bit for bit: ``tests/test_engine_reference.py``). Same work, not the same bits.

Usage::

    python benchmarks/bench_engine_overhead.py                 # 8 photos, 40 steps (~15 min)
    python benchmarks/bench_engine_overhead.py --markdown
    python benchmarks/bench_engine_overhead.py --photos 2 --steps 4 --pairs 2 --repeats 1  # tiny

Photos: the two bundled with trompe and scikit-image's colour photos when it is installed; up to
``--photos`` more are made from them by mirroring and by taking another crop of the photo
(before the model's own centre crop and resize), so that the batch holds distinct images.
Progress goes to stderr, the tables to stdout.
"""

from __future__ import annotations

import os

# Passive OpenMP waiting, set before torch loads: spinning threads turn any other busy process
# on a small machine into a many-fold slowdown (see docs/benchmarks.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

import trompe
from trompe.attacks import PGD, Targeted
from trompe.images import quantize

MODEL = "efficientnet_lite0"
#: Photos, in order of use, with their targets (ImageNet classes).
PHOTOS: tuple[str, ...] = ("chelsea", "coffee", "astronaut", "rocket", "motorcycle_left")
TARGETS: tuple[int, ...] = (951, 144, 937, 742, 511, 963, 1, 954)  # lemon, pelican, ...


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _photo_path(name: str) -> Path | None:
    if name in ("chelsea", "coffee"):
        return Path(trompe.example_path(name))
    try:
        import skimage.data
    except ImportError:
        return None
    for suffix in (".png", ".jpg"):
        path = Path(skimage.data.data_dir) / f"{name}{suffix}"
        if path.is_file():
            return path
    return None


def load_batch(clf: trompe.Classifier, count: int) -> tuple[torch.Tensor, list[str]]:
    """``count`` distinct photos at the model's input size, on the 8-bit grid, and their names."""
    found = [(name, trompe.load_image(path)) for name in PHOTOS if (path := _photo_path(name))]
    variants: list[tuple[str, torch.Tensor]] = list(found)
    variants += [(f"{name} (mirrored)", photo.flip(-1)) for name, photo in found]
    for name, photo in found:  # the left and the right part of the photo
        height, width = photo.shape[-2:]
        side = min(height, width)
        variants.append((f"{name} (left)", photo[..., :side, :side]))
        variants.append((f"{name} (right)", photo[..., height - side :, width - side :]))
    images, names = [], []
    for name, photo in variants[:count]:
        with torch.no_grad():
            images.append(quantize(clf.preprocess(photo[None]).clamp(0, 1)))
        names.append(name)
    if len(images) < count:
        log(f"only {len(images)} distinct photos available, not {count}")
    return torch.cat(images), names


# -- the two sides --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    eps: float
    step_size: float
    steps: int
    seed: int = 0


def plain_loop(
    clf: trompe.Classifier, images: torch.Tensor, targets: torch.Tensor, setting: Setting
) -> torch.Tensor:
    """The leanest loop: forward, loss, gradient, sign step, one clamp. Returns 8 bits."""
    eps, step = setting.eps, setting.step_size
    # The random start, drawn and projected exactly as trompe draws it (not timed apart).
    generator = torch.Generator(device=images.device).manual_seed(setting.seed)
    noise = torch.rand(images.shape, generator=generator, device=images.device)
    start = images + (2 * noise - 1) * eps
    x = (images + (start - images).clamp(-eps, eps)).clamp(0.0, 1.0)
    low = (images - eps).clamp_min(0.0)
    high = (images + eps).clamp_max(1.0)
    for _ in range(setting.steps):
        x.requires_grad_(True)
        loss = -F.cross_entropy(clf(x), targets, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
        with torch.no_grad():
            x = torch.clamp(x.detach() + step * grad.sign(), low, high)
    return quantize(x)


def trompe_pgd(
    clf: trompe.Classifier, images: torch.Tensor, targets: torch.Tensor, setting: Setting
) -> torch.Tensor:
    attack = PGD(
        eps=setting.eps,
        steps=setting.steps,
        step_size=setting.step_size,
        random_start=True,
        early_stop=False,
        seed=setting.seed,
    )
    return attack(clf, images, Targeted(targets)).adversarial


Side = Callable[[trompe.Classifier, torch.Tensor, torch.Tensor, Setting], torch.Tensor]
SIDES: dict[str, Side] = {"plain": plain_loop, "trompe": trompe_pgd}


@dataclass
class Timings:
    wall: dict[str, list[float]] = field(default_factory=lambda: {name: [] for name in SIDES})
    cpu: dict[str, list[float]] = field(default_factory=lambda: {name: [] for name in SIDES})
    output: dict[str, torch.Tensor] = field(default_factory=dict)  # the last run's, per side


def timed(
    side: str,
    clf: trompe.Classifier,
    images: torch.Tensor,
    targets: torch.Tensor,
    setting: Setting,
    into: Timings,
) -> torch.Tensor:
    wall, cpu = time.perf_counter(), time.process_time()
    out = SIDES[side](clf, images, targets, setting)
    if images.device.type == "cuda":
        torch.cuda.synchronize(images.device)
    into.wall[side].append(time.perf_counter() - wall)
    into.cpu[side].append(time.process_time() - cpu)
    into.output[side] = out
    log(
        f"  {side}: {into.wall[side][-1]:.2f} s wall, {into.cpu[side][-1]:.2f} s CPU, "
        f"load {os.getloadavg()[0]:.2f}"
    )
    return out


def interleaved(
    clf: trompe.Classifier,
    images: torch.Tensor,
    targets: torch.Tensor,
    setting: Setting,
    pairs: int,
) -> Timings:
    times = Timings()
    for pair in range(pairs):
        log(f"pair {pair + 1}/{pairs}")
        order = ("plain", "trompe") if pair % 2 == 0 else ("trompe", "plain")
        for side in order:
            timed(side, clf, images, targets, setting, times)
    return times


def independent(
    clf: trompe.Classifier,
    images: torch.Tensor,
    targets: torch.Tensor,
    setting: Setting,
    repeats: int,
) -> Timings:
    times = Timings()
    for side in SIDES:
        log(f"{side}: {repeats} runs in a row")
        for _ in range(repeats):
            timed(side, clf, images, targets, setting, times)
    return times


# -- reporting ------------------------------------------------------------------------------------


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    low, mid, high = statistics.quantiles(values, n=4, method="inclusive")
    return low, mid, high


def interleaved_lines(times: Timings) -> list[str]:
    lines = []
    for kind, table in (("wall", times.wall), ("CPU", times.cpu)):
        ratios = [t / p for t, p in zip(table["trompe"], table["plain"], strict=True)]
        low, mid, high = quartiles(ratios)
        lines.append(
            f"(a) interleaved, {kind}: median of {len(ratios)} per-pair ratios trompe / plain "
            f"{mid:.3f} (quartiles {low:.3f}-{high:.3f}; all: "
            + ", ".join(f"{r:.3f}" for r in ratios)
            + f"); plain {statistics.median(table['plain']):.2f} s, trompe "
            f"{statistics.median(table['trompe']):.2f} s (medians)"
        )
    return lines


def independent_lines(times: Timings) -> list[str]:
    lines = []
    for kind, table in (("wall", times.wall), ("CPU", times.cpu)):
        plain, ours = statistics.median(table["plain"]), statistics.median(table["trompe"])
        runs = {side: ", ".join(f"{v:.2f}" for v in table[side]) for side in SIDES}
        lines.append(
            f"(b) independent, {kind}: trompe / plain = {ours / plain:.3f} (medians of "
            f"{len(table['plain'])}: plain {plain:.2f} s [{runs['plain']}], "
            f"trompe {ours:.2f} s [{runs['trompe']}])"
        )
    return lines


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=8, help="images in the batch (8)")
    parser.add_argument("--steps", type=int, default=40, help="PGD steps (40)")
    parser.add_argument("--eps", type=float, default=10.0, help="L-inf budget, 0-255 units (10)")
    parser.add_argument("--pairs", type=int, default=5, help="(a): interleaved pairs (5; 0 skips)")
    parser.add_argument("--repeats", type=int, default=3, help="(b): runs per side (3; 0 skips)")
    parser.add_argument("--warmup-steps", type=int, default=2, help="untimed warm-up steps (2)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch.set_num_threads on the CPU (1; 0 leaves torch's default)",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--markdown", action="store_true", help="print markdown")
    args = parser.parse_args(argv)
    if args.photos < 1 or args.steps < 1 or args.pairs < 0 or args.repeats < 0:
        parser.error("--photos and --steps must be at least 1, --pairs and --repeats at least 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cpu" and args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    started = time.perf_counter()
    load_start = os.getloadavg()
    clf = trompe.load_model(MODEL, device=device)
    images, names = load_batch(clf, args.photos)
    images = images.to(device)
    targets = torch.tensor([TARGETS[i % len(TARGETS)] for i in range(len(images))], device=device)
    setting = Setting(eps=args.eps / 255, step_size=args.eps / 4 / 255, steps=args.steps)

    warm = Setting(setting.eps, setting.step_size, args.warmup_steps)
    log(f"warm-up: {args.warmup_steps} steps of each side")
    plain_loop(clf, images, targets, warm)
    trompe_pgd(clf, images, targets, warm)
    inter = interleaved(clf, images, targets, setting, args.pairs) if args.pairs else None
    indep = independent(clf, images, targets, setting, args.repeats) if args.repeats else None
    last = (indep or inter or Timings()).output
    # The outputs of the last timed runs (a run of each when nothing was timed).
    plain_out = last["plain"] if last else plain_loop(clf, images, targets, setting)
    trompe_out = last["trompe"] if last else trompe_pgd(clf, images, targets, setting)
    differ = int((plain_out != trompe_out).flatten(1).any(dim=1).sum())

    bullet = "- " if args.markdown else ""
    lines = [
        ("## " if args.markdown else "")
        + f"Engine overhead: {MODEL}, {len(images)} photos at 224x224 (8-bit), targeted L-inf "
        f"PGD {args.eps:g}/255, step {args.eps / 4:g}/255, {args.steps} fixed steps, "
        "early_stop=False, random start",
        "",
        bullet + f"python {platform.python_version()}, torch {torch.__version__}, "
        f"trompe {trompe.__version__}; device {device}"
        + (f", torch threads {torch.get_num_threads()}" if device.type == "cpu" else ""),
        bullet
        + f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}; load average at start "
        + ", ".join(f"{v:.2f}" for v in load_start)
        + "; at end "
        + ", ".join(f"{v:.2f}" for v in os.getloadavg()),
        bullet + "photos: " + ", ".join(names),
        bullet + f"8-bit outputs, plain vs trompe: {differ} of {len(images)} images differ "
        f"(pixels differing: {int((plain_out != trompe_out).sum())})",
    ]
    if inter is not None:
        lines += [bullet + line for line in interleaved_lines(inter)]
    if indep is not None:
        lines += [bullet + line for line in independent_lines(indep)]
    lines.append(bullet + f"total wall time {time.perf_counter() - started:.0f} s")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
