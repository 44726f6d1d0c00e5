"""Benchmark transfer: adversarial photos made on EfficientNet-Lite0 (+ Lite1), shown to Lite2.

The photos available offline: the two bundled with trompe, scikit-image's colour photos and the
20 labelled ImageNet samples of the foolbox wheel. Each is centre-cropped to a square and
resized to ``--side`` px (256) and rounded to 8 bits, so that they make one batch; every model
then applies its own evaluation crop and resize (Lite0 224, Lite1 240, Lite2 260 px) to it.

Rows, all L-inf ``--eps`` 16/255, 10 steps without early stopping (the transfer papers'
setting), step ``eps / 10`` (PGD: its ``eps / 4`` with a random start):

- ``PGD (lite0)``, ``MI-FGSM (lite0)``: one source model.
- ``PGD``, ``MI-FGSM`` on the ensemble ``lite0+lite1`` (mean of logits, Dong et al. 2018).
- ``+ DI`` (diversity 0.5), ``+ DI + TI`` (kernel 7, as with DI in Dong et al. 2019),
  ``+ DI + TI + VT`` (``--vt-samples`` neighbours, radius 1.5 eps): trompe's gradient hook on
  MI-FGSM over the ensemble (MI-DI-TI-VT).
- torchattacks ``DIFGSM``, ``TIFGSM``, ``VMIFGSM`` (N = ``--vt-samples``) on the same
  ensemble, same budget, steps and step size, when torchattacks is installed.

Scores, on the 8-bit output: success on the source (the ensemble, or Lite0), and the rate on
each model: untargeted, its top-1 differs from its own top-1 of the clean photo; targeted (one
random target class per photo, seed 0), the target is its top-1. Lite2 is never attacked: its
column is the transfer rate (Lite1's too, for the Lite0-only rows). Seconds: the whole batch.

    OMP_NUM_THREADS=1 PYTHONPATH=src /tmp/benchvenv/bin/python benchmarks/bench_transfer.py \
        --markdown

``--skip`` leaves out the rows whose ``ATTACK on SOURCE`` contains a given text (``vt``,
``torchattacks``, ``"pgd on lite0+lite1"``); ``--limit N`` takes the first N photos.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import time
from collections.abc import Callable
from pathlib import Path

import _harness as h
import numpy as np
import torch
from PIL import Image

import trompe
from trompe.attacks import MIFGSM, PGD, Goal, Targeted, Untargeted
from trompe.attacks.gradient import GradientOptions
from trompe.images import quantize
from trompe.models.ensemble import Ensemble

MODELS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def square(path: Path, side: int) -> torch.Tensor:
    """A photo, centre-cropped to a square and resized to ``side`` px, on the 8-bit grid."""
    with Image.open(path) as image:
        rgb = image.convert("RGB")
        short = min(rgb.size)
        left, top = (rgb.width - short) // 2, (rgb.height - short) // 2
        rgb = rgb.crop((left, top, left + short, top + short)).resize(
            (side, side), Image.Resampling.BICUBIC
        )
        array = np.asarray(rgb, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255


def photo_files() -> list[Path]:
    paths = [p for p in (h.photo_path(name) for name in h.PHOTOS) if p is not None]
    try:
        import foolbox

        folder = Path(foolbox.__file__).parent / "data"
        paths += sorted(folder.glob("imagenet_*_*.*"), key=lambda p: int(p.stem.split("_")[1]))
    except ImportError:
        h.log("foolbox not installed: its 20 ImageNet samples are left out")
    return paths


def top1(model: trompe.Classifier, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(chunk).argmax(dim=1) for chunk in images.split(8)])


Runner = Callable[[torch.Tensor, Goal], torch.Tensor]


def ours(attack: trompe.attacks.Attack, source: trompe.Classifier) -> Runner:
    def run(images: torch.Tensor, goal: Goal) -> torch.Tensor:
        return attack(source, images, goal).adversarial

    return run


def peer(name: str, source: trompe.Classifier, eps: float, steps: int, vt: int) -> Runner:
    import torchattacks

    alpha = eps / steps
    if name == "DIFGSM":
        attack = torchattacks.DIFGSM(source, eps=eps, alpha=alpha, steps=steps, decay=1.0)
    elif name == "TIFGSM":
        attack = torchattacks.TIFGSM(source, eps=eps, alpha=alpha, steps=steps, decay=1.0)
    else:
        attack = torchattacks.VMIFGSM(source, eps=eps, alpha=alpha, steps=steps, N=vt, beta=1.5)

    def run(images: torch.Tensor, goal: Goal) -> torch.Tensor:
        torch.manual_seed(0)
        if goal.targeted:
            attack.set_mode_targeted_by_label(quiet=True)
        elif attack.targeted:
            attack.set_mode_default()  # prints a line: only when the mode changes
        out: torch.Tensor = attack(images, goal.classes)
        return quantize(out.detach())

    return run


def main(argv: list[str] | None = None) -> None:
    parser = h.arguments(__doc__ or "", repeats=1, threads=1)
    parser.add_argument("--eps", type=float, default=16, help="L-inf budget in levels (16)")
    parser.add_argument("--steps", type=int, default=10, help="steps (10)")
    parser.add_argument("--side", type=int, default=256, help="photo side in px (256)")
    parser.add_argument("--vt-samples", type=int, default=5, help="VT neighbours (5)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many photos")
    parser.add_argument(
        "--goals", default="untargeted,targeted", help="untargeted, targeted or both"
    )
    args = h.parse(parser, argv)
    started = time.perf_counter()
    eps, steps = args.eps / 255, args.steps
    paths = photo_files()[: args.limit]
    images = torch.stack([square(p, args.side) for p in paths])
    h.log(f"{len(images)} photos at {args.side} px")
    lite0, lite1, lite2 = (trompe.load_model(name) for name in MODELS)
    ensemble = Ensemble([lite0, lite1])
    judges = {"lite0": lite0, "lite1": lite1, "lite2": lite2, "lite0+lite1": ensemble}
    clean = {name: top1(model, images) for name, model in judges.items()}
    generator = torch.Generator().manual_seed(0)
    targets = torch.randint(0, 1000, (len(images),), generator=generator)
    targets = torch.where(targets == clean["lite0+lite1"], (targets + 1) % 1000, targets)

    step = eps / steps
    mi = {"eps": eps, "steps": steps, "step_size": step, "early_stop": False}
    pgd = {"eps": eps, "steps": steps, "early_stop": False}
    di = GradientOptions(diversity=0.5)
    diti = GradientOptions(diversity=0.5, translation=7)
    ditivt = GradientOptions(diversity=0.5, translation=7, variance=args.vt_samples)
    rows: list[tuple[str, str, Callable[[], Runner]]] = [
        ("PGD", "lite0", lambda: ours(PGD(**pgd), lite0)),
        ("MI-FGSM", "lite0", lambda: ours(MIFGSM(**mi), lite0)),
        ("PGD", "lite0+lite1", lambda: ours(PGD(**pgd), ensemble)),
        ("MI-FGSM", "lite0+lite1", lambda: ours(MIFGSM(**mi), ensemble)),
        ("MI-FGSM + DI", "lite0+lite1", lambda: ours(MIFGSM(**mi, gradient=di), ensemble)),
        (
            "MI-FGSM + DI + TI",
            "lite0+lite1",
            lambda: ours(MIFGSM(**mi, gradient=diti), ensemble),
        ),
        (
            f"MI-FGSM + DI + TI + VT (N={args.vt_samples})",
            "lite0+lite1",
            lambda: ours(MIFGSM(**mi, gradient=ditivt), ensemble),
        ),
    ]
    for name in ("DIFGSM", "TIFGSM", "VMIFGSM"):
        rows.append(
            (
                f"torchattacks {name}" + (f" (N={args.vt_samples})" if name == "VMIFGSM" else ""),
                "lite0+lite1",
                lambda name=name: peer(name, ensemble, eps, steps, args.vt_samples),  # type: ignore[misc]
            )
        )
    report = h.Report(args.markdown)
    report.heading("Transfer from EfficientNet-Lite0 (+ Lite1) to Lite2 (held out)")
    report.bullets(*h.environment(torch.device("cpu"), "torchattacks"))
    report.bullets(
        f"{len(images)} photos ({args.side} px squares), L-inf eps {args.eps:g}/255, "
        f"{steps} steps, no early stopping"
    )
    for kind in h.comma_list(args.goals, lower=True):
        body = []
        for label, source_name, make in rows:
            if h.skipped(f"{label} on {source_name}", args.skip):
                continue
            goal: Goal = (
                Untargeted(clean[source_name]) if kind == "untargeted" else Targeted(targets)
            )
            try:
                runner = make()
            except ImportError as error:
                body.append([label, source_name, f"not run: {h.failure(error)}", "", "", "", ""])
                continue
            h.log(f"{kind}: {label} on {source_name}")
            start = time.perf_counter()
            try:
                adversarial = runner(images, goal)
            except Exception as error:  # a peer that fails is listed with the reason
                body.append([label, source_name, f"failed: {h.failure(error)}", "", "", "", ""])
                continue
            seconds = time.perf_counter() - start
            cells = []
            for name in ("lite0+lite1" if source_name != "lite0" else "lite0", *judges):
                if name == "lite0+lite1" and source_name == "lite0":
                    continue
                predicted = top1(judges[name], adversarial)
                fooled = predicted == targets if kind == "targeted" else predicted != clean[name]
                cells.append(f"{float(fooled.float().mean()):.0%}")
            source_cell, rest = cells[0], cells[1:]
            body.append([label, source_name, source_cell, *rest[:3], f"{seconds:.0f}"])
            h.log(f"  {body[-1]}")
        report.heading(f"{kind}", level=2)
        report.table(
            ["attack", "source", "on source", "lite0", "lite1", "lite2 (held out)", "seconds"],
            body,
        )
    report.print(started)


if __name__ == "__main__":
    main()
