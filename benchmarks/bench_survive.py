"""Benchmark adversarial images that survive JPEG: plain PGD vs EOT-PGD vs torchattacks' EOTPGD.

One model (``efficientnet_lite0``), the photos of the harness (the two bundled with trompe and
the colour photos of scikit-image's data folder) and the first labelled ImageNet samples of the
``foolbox`` wheel, each brought to the model's 224 x 224 input and rounded to 8 bits; one or more
target classes per photo from a fixed list of distinct classes; targeted, L-inf eps 16/255.
Rows:

1. ``trompe PGD``: plain PGD (100 steps at most, early stop at p(target) >= 0.99 on the PNG).
2. ``trompe PGD --survive jpeg:50-95``: the same with EOT (Athalye et al. 2018) over kornia's
   differentiable JPEG at a random quality in 50-95 per image and view, ``--samples`` views per
   step; early stop once the 8-bit image meets the goal on the clean view and at quality 50.
3. ``torchattacks EOTPGD``: the peer's EOT-PGD (fixed steps, ``eot_iter`` views per step, its
   default step 2/255 and random start) on the model behind the same differentiable JPEG at a
   random quality in 50-95: the peer has no JPEG, so it gets trompe's stand-in.

Every row is scored the same way, on real files: the output is rounded to 8 bits, then put
through Pillow's JPEG encoder at each quality of the grid and decoded
(:func:`trompe.evaluation.survival.check_survival`), and a pair counts when the target is the
top-1 (``PNG``: the lossless image, target top-1). Time is per pair, one pair at a time, the
rows taking turns on each pair; wall clock and CPU time of this process (one torch thread),
"CPU x PGD" is the total CPU time over the plain PGD's.

Usage::

    python benchmarks/bench_survive.py --markdown            # every photo, 2 targets each
    python benchmarks/bench_survive.py --photos 4 --targets 1 --skip torchattacks

Progress goes to stderr, the table to stdout. See docs/benchmarks.md for results.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_pgd.py

import time
from pathlib import Path

import _harness as h
import torch
from torch import nn

import trompe
from trompe.attacks import Targeted
from trompe.evaluation.survival import check_survival
from trompe.images import quantize

MODEL = "efficientnet_lite0"
EPS = 16 / 255
#: Distinct targets, taken in turn: lemon, pelican, broccoli, printer, convertible, pizza, bee,
#: balloon, toaster, banana, goldfish, tennis ball.
TARGETS = (951, 144, 937, 742, 511, 963, 309, 417, 859, 954, 1, 852)
QUALITIES = (95, 90, 75, 50)
FOOLBOX_SAMPLES = 4


def photo_paths(limit: int | None) -> list[tuple[str, Path]]:
    """The harness photos, then foolbox's first ImageNet samples."""
    paths = [(name, h.photo_path(name)) for name in h.PHOTOS]
    found = [(name, path) for name, path in paths if path is not None]
    try:
        import foolbox

        folder = Path(foolbox.__file__).parent / "data"
        for path in sorted(folder.glob("imagenet_*.jpg"))[:FOOLBOX_SAMPLES]:
            found.append((path.stem, path))
    except ImportError:
        h.log("foolbox not installed: no ImageNet samples")
    return found[:limit] if limit else found


class JpegThen(nn.Module):
    """The classifier behind kornia's differentiable JPEG at a random quality in [low, high]
    per image and call: the model torchattacks' EOTPGD attacks."""

    def __init__(self, clf: trompe.Classifier, low: float, high: float) -> None:
        super().__init__()
        self.clf = clf
        self.low, self.high = low, high

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import kornia

        quality = self.low + (self.high - self.low) * torch.rand(len(x), device=x.device)
        out: torch.Tensor = self.clf(kornia.enhance.jpeg_codec_differentiable(x, quality))
        return out


def main(argv: list[str] | None = None) -> int:
    parser = h.arguments(__doc__ or "", repeats=1, threads=1)
    parser.add_argument("--photos", type=int, default=None, help="at most this many photos")
    parser.add_argument("--targets", type=int, default=2, help="targets per photo (2)")
    parser.add_argument("--steps", type=int, default=100, help="trompe's most steps (100)")
    parser.add_argument("--samples", type=int, default=4, help="EOT views per step (4)")
    parser.add_argument("--survive", default="jpeg:50-95", help="trompe's EOT spec (jpeg:50-95)")
    parser.add_argument("--peer-steps", type=int, default=40, help="EOTPGD steps (40)")
    parser.add_argument("--seed", type=int, default=0)
    args = h.parse(parser, argv)
    device = torch.device(args.device)
    clf = trompe.load_model(MODEL, device=device)
    pairs: list[tuple[str, torch.Tensor, int]] = []
    for number, (name, path) in enumerate(photo_paths(args.photos)):
        image = trompe.load_image(path)[None].to(device)
        with torch.no_grad():
            image = quantize(clf.preprocess(image).clamp(0, 1))
        top = int(clf(image).argmax())
        for k in range(args.targets):
            target = TARGETS[(number + 5 * k) % len(TARGETS)]
            if target != top:
                pairs.append((name, image, target))
    h.log(f"{len(pairs)} photo/target pairs")

    grid = "jpeg:" + ",jpeg:".join(str(q) for q in QUALITIES)

    def plain(image: torch.Tensor, target: int) -> torch.Tensor:
        result = trompe.attack(image[0], target, model=clf, eps=EPS, steps=args.steps, seed=0)
        return result.adversarial

    def eot(image: torch.Tensor, target: int) -> torch.Tensor:
        result = trompe.attack(
            image[0],
            target,
            model=clf,
            eps=EPS,
            steps=args.steps,
            seed=0,
            survive=args.survive,
            samples=args.samples,
        )
        return result.adversarial

    def peer(image: torch.Tensor, target: int) -> torch.Tensor:
        import torchattacks

        torch.manual_seed(args.seed)
        attack = torchattacks.EOTPGD(
            JpegThen(clf, 50, 95),
            eps=EPS,
            alpha=2 / 255,
            steps=args.peer_steps,
            eot_iter=args.samples,
            random_start=True,
        )
        attack.set_mode_targeted_by_label(quiet=True)
        out: torch.Tensor = attack(image, torch.tensor([target], device=device))
        return out

    rows = [
        ("trompe PGD", plain),
        (f"trompe PGD --survive {args.survive} --samples {args.samples}", eot),
        (f"torchattacks EOTPGD ({args.peer_steps} steps, eot_iter {args.samples})", peer),
    ]
    rows = [row for row in rows if not h.skipped(row[0].split()[0], args.skip)]
    # Rows take turns on each pair, so that a change of load on a shared machine hits them
    # alike; CPU time (this process, one thread) is reported next to wall-clock time.
    seconds = {label: 0.0 for label, _ in rows}
    cpu = {label: 0.0 for label, _ in rows}
    met = {label: {q: 0 for q in ("png", *QUALITIES)} for label, _ in rows}
    failed: dict[str, str] = {}
    for name, image, target in pairs:
        for label, run in rows:
            if label in failed:
                continue
            h.log(f"{label}: {name} -> {clf.labels[target]}")
            try:
                start, start_cpu = time.perf_counter(), time.process_time()
                adversarial = h.rounded(image, run(image, target))
                seconds[label] += time.perf_counter() - start
                cpu[label] += time.process_time() - start_cpu
            except Exception as error:  # a peer that fails is listed with the reason
                failed[label] = h.failure(error)
                continue
            check = check_survival(clf, adversarial, Targeted([target]), grid)
            for row in check.to_json()["rows"]:
                key = "png" if row["name"] == "png" else int(row["setting"].split()[-1])
                met[label][key] += bool(row["met"])
    body = []
    base = rows[0][0]
    n = len(pairs)
    for label, _ in rows:
        if label in failed:
            body.append([label, failed[label]] + [""] * (len(QUALITIES) + 3))
            continue
        body.append(
            [label, f"{met[label]['png']}/{n}"]
            + [f"{met[label][q]}/{n} ({100 * met[label][q] / n:.0f} %)" for q in QUALITIES]
            + [
                f"{seconds[label] / n:.1f}",
                f"{cpu[label] / n:.1f}",
                f"{cpu[label] / cpu[base]:.1f}x",
            ]
        )
    report = h.Report(args.markdown)
    report.heading("Surviving JPEG: target top-1 after Pillow's JPEG encoder")
    report.bullets(
        *h.environment(device, "torchattacks", "kornia"),
        f"{MODEL}, {len(pairs)} photo/target pairs at 224 x 224, targeted, L-inf eps 16/255",
    )
    header = ["attack", "PNG"] + [f"JPEG {q}" for q in QUALITIES]
    report.table([*header, "wall s / pair", "CPU s / pair", "CPU x PGD"], body)
    print("\n".join(report.lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
