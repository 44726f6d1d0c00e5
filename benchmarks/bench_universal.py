"""One perturbation for many photos: trompe's universal perturbation against ART's.

Photos: the 20 ImageNet samples of the foolbox wheel, the colour photos of scikit-image's data
folder and the two bundled with trompe (duplicates by content are dropped), split with a seed
into training and held-out photos. For each model (EfficientNet-Lite0 by default):

- trompe, model-size crops: :func:`trompe.attacks.universal.learn_universal` on the 8-bit
  model-size crops of the training photos (the same inputs ART gets);
- trompe, full-size photos: the same, on the photos at their own sizes, as ``trompe universal``
  runs (the perturbation is resized to each photo, and the model crops and resizes);
- ART's ``UniversalPerturbation`` (Moosavi-Dezfooli et al. 2017, DeepFool inside) on the
  model-size crops, same eps;
- random signs of eps: the noise baseline.

Every fooling rate is measured the same way, on the 8-bit photos (photo + perturbation,
clamped, rounded; :func:`~trompe.attacks.universal.fooling_rate`): the share of photos whose
top-1 differs from the clean top-1. Time is the wall time of learning on the CPU.

    PYTHONPATH=src:benchmarks OMP_NUM_THREADS=1 /tmp/benchvenv/bin/python \\
        benchmarks/bench_universal.py --markdown
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import hashlib
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from _harness import Report, arguments, comma_list, environment, log, package_version, parse

import trompe
from trompe.attacks.universal import (
    clean_top1,
    delta_size,
    fooling_rate,
    learn_universal,
    noise_perturbation,
)
from trompe.images import quantize

#: scikit-image's colour photos (its drawings, textures, microscopy and telescope images are
#: left out), then the bundled two.
SKIMAGE = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "motorcycle_right")


def photo_paths() -> list[Path]:
    """The photos, without duplicates by content, in a fixed order."""
    paths: list[Path] = []
    try:
        import foolbox

        folder = Path(foolbox.__file__).parent / "data"
        paths += sorted(folder.glob("imagenet_*.jpg"))
    except ImportError:
        log("foolbox is not installed: no ImageNet samples")
    try:
        import skimage.data

        folder = Path(skimage.data.data_dir)
        for name in SKIMAGE:
            for suffix in (".png", ".jpg"):
                if (folder / f"{name}{suffix}").is_file():
                    paths.append(folder / f"{name}{suffix}")
    except ImportError:
        log("scikit-image is not installed: no scikit-image photos")
    paths += [trompe.example_path(n) for n in ("chelsea", "coffee")]
    seen: set[str] = set()
    unique = []
    for path in paths:
        digest = hashlib.sha256(trompe.load_image(path).numpy().tobytes()).hexdigest()
        if digest not in seen:
            seen.add(digest)
            unique.append(path)
    return unique


def split(count: int, held: int, seed: int) -> tuple[list[int], list[int]]:
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[held:]), sorted(order[:held])


def art_universal(
    clf: trompe.Classifier, crops: Sequence[torch.Tensor], eps: float, max_iter: int, seed: int
) -> torch.Tensor:
    """ART's UniversalPerturbation (DeepFool) on the crops; returns its noise (3, h, w)."""
    from _peers import art_estimator
    from art.attacks.evasion import UniversalPerturbation

    batch = torch.stack(list(crops))
    estimator = art_estimator(clf, batch, clf.num_classes)
    attack = UniversalPerturbation(
        estimator, attacker="deepfool", eps=eps, norm=np.inf, max_iter=max_iter, verbose=False
    )
    random.seed(seed)  # ART visits the photos in the order of Python's global generator
    np.random.seed(seed)
    attack.generate(x=batch.numpy())
    return torch.from_numpy(np.asarray(attack.noise, dtype=np.float32)[0])


def main(argv: Sequence[str] | None = None) -> int:
    parser = arguments(__doc__ or "", repeats=1, threads=2)
    parser.add_argument("--models", default="efficientnet_lite0", help="comma-separated models")
    parser.add_argument("--eps", type=float, default=10.0, help="L-inf budget in levels (10)")
    parser.add_argument("--held", type=int, default=8, help="photos held out (8)")
    parser.add_argument("--epochs", type=int, default=20, help="trompe's most epochs (20)")
    parser.add_argument("--art-iter", type=int, default=5, help="ART's max_iter passes (5)")
    parser.add_argument("--seed", type=int, default=0)
    args = parse(parser, argv)
    eps = args.eps / 255
    eps_255 = round(args.eps)
    started = time.perf_counter()
    device = torch.device(args.device)
    paths = photo_paths()
    train_index, held_index = split(len(paths), args.held, args.seed)
    log(f"{len(paths)} photos: {len(train_index)} to learn on, {len(held_index)} held out")

    report = Report(args.markdown)
    report.heading("One perturbation for many photos (universal adversarial perturbation)")
    report.bullets(*environment(device, "art"))
    report.bullets(
        f"{len(paths)} photos (foolbox's ImageNet samples, scikit-image's colour photos, the "
        f"bundled two): {len(train_index)} to learn on, {len(held_index)} held out (seed "
        f"{args.seed}); L-inf {args.eps:g}/255, untargeted; fooled = top-1 differs from the "
        "clean top-1, on the 8-bit photos",
        f"trompe: SGD UAP, {args.epochs} epochs at most (early stop after 5 without progress), "
        f"batch 8, step eps/8; ART {package_version('art')}: UniversalPerturbation (DeepFool), "
        f"max_iter {args.art_iter}, delta 0.2",
    )
    header = ["model", "method", "photos", "train fooled", "held-out fooled", "seconds"]
    body: list[list[str]] = []
    for name in comma_list(args.models):
        clf = trompe.load_model(name, device=device)
        full = [trompe.load_image(p).to(device) for p in paths]
        crops = [quantize(clf.preprocess(p[None]).clamp(0, 1))[0] for p in full]

        def measured(
            method: str,
            kind: str,
            photos: list[torch.Tensor],
            delta: torch.Tensor,
            seconds: float,
            _clf: trompe.Classifier = clf,
            _name: str = name,
        ) -> None:
            train = [photos[i] for i in train_index]
            held = [photos[i] for i in held_index]
            rate_train = fooling_rate(_clf, train, delta, clean_top1(_clf, train)).rate
            rate_held = fooling_rate(_clf, held, delta, clean_top1(_clf, held)).rate
            body.append(
                [
                    _name,
                    method,
                    kind,
                    f"{rate_train:.0%}",
                    f"{rate_held:.0%}",
                    "-" if seconds != seconds else f"{seconds:.0f}",
                ]
            )
            log(f"{_name} {method} {kind}: {rate_train:.0%} / {rate_held:.0%}, {seconds:.0f} s")

        noise = noise_perturbation(eps_255, delta_size(clf), seed=args.seed)
        measured("random signs \u00b1eps", "crops", crops, noise, float("nan"))
        measured("random signs \u00b1eps", "full size", full, noise, float("nan"))
        for kind, photos in (("crops", crops), ("full size", full)):
            log(f"{name}: trompe on the {kind}")
            run = learn_universal(
                clf, [photos[i] for i in train_index], eps=eps, epochs=args.epochs, seed=args.seed
            )
            measured("trompe universal", kind, photos, run.delta, run.seconds)
        if "art" not in args.skip:
            log(f"{name}: ART on the crops")
            begun = time.perf_counter()
            try:
                delta = art_universal(
                    clf, [crops[i].cpu() for i in train_index], eps, args.art_iter, args.seed
                )
                measured(
                    "ART UniversalPerturbation",
                    "crops",
                    crops,
                    delta.to(device),
                    time.perf_counter() - begun,
                )
            except Exception as error:  # a peer's failure is a row, not the end of the run
                body.append([name, "ART UniversalPerturbation", "crops", "-", "-", str(error)])
    report.table(header, body)
    report.print(started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
