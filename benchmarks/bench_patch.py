"""A printable adversarial patch (Brown et al. 2017): trompe vs ART's AdversarialPatchPyTorch.

EfficientNet-Lite0, target toaster, a square patch of 10 % of the image the model sees. Both
learn on the same photos (the first ten ImageNet samples of the foolbox wheel and three colour
photos of scikit-image), with the same EOT ranges (side sqrt(0.07)..sqrt(0.13) of the image,
+/-20 degrees), the same Adam learning rate on the [0, 1] patch and the same number of draws
(ART's ``max_iter`` counts passes over the photos, trompe's ``steps`` batches of random draws).
Both patches are then checked in one way: pasted as 8-bit PNGs, upright, at ``--placements``
random places on the 8-bit model-size crop of each held-out photo (the other ten foolbox
samples and trompe's two bundled photos), next to a uniform-noise patch of the same size at
the same places; success is the model's top-1 being toaster.

ART's patch needs torchvision; on machines whose torchvision does not match torch, run with
``PYTHONPATH=tests/shims`` (the test suite's shim) on the path, as the command in
docs/benchmarks.md does.

    OMP_NUM_THREADS=1 PYTHONPATH=src:tests/shims /tmp/benchvenv/bin/python \\
        benchmarks/bench_patch.py --steps 200
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _harness import arguments, log, parse, photo_path, versions_line

import trompe
from trompe.evaluation.patch import evaluate_patch
from trompe.images import quantize

TARGET = "toaster"
SIZE = 0.1
LEARNING_RATE = 0.03
SKIMAGE_TRAIN = ("astronaut", "rocket", "motorcycle_left")
HELD_BUNDLED = ("chelsea", "coffee")


def _foolbox_samples() -> list[Path]:
    try:
        import foolbox
    except ImportError:
        return []
    folder = Path(foolbox.__file__).parent / "data"
    return sorted(folder.glob("imagenet_*.jpg"))


def _photos() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    samples = _foolbox_samples()
    train: dict[str, torch.Tensor] = {}
    held: dict[str, torch.Tensor] = {}
    for path in samples[:10]:
        train[path.name] = trompe.load_image(path)
    for name in SKIMAGE_TRAIN:
        found = photo_path(name)
        if found is not None:
            train[found.name] = trompe.load_image(found)
    for path in samples[10:]:
        held[path.name] = trompe.load_image(path)
    for name in HELD_BUNDLED:
        found = photo_path(name)
        if found is not None:
            held[found.name] = trompe.load_image(found)
    return train, held


def _crops(clf: trompe.Classifier, photos: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return torch.stack(
            [quantize(clf.preprocess(p[None])[0].clamp(0, 1)) for p in photos.values()]
        )


def _art_own_paste(
    attack: object, clf: trompe.Classifier, held: torch.Tensor, target: int, placements: int
) -> float:
    """Success with ART's own pasting (``apply_patch``: its random place and rotation, its
    resize without antialiasing), rounded to 8 bits: what ART's training saw."""
    hits = 0
    np.random.seed(1)
    for _ in range(placements):
        pasted = attack.apply_patch(held.numpy(), scale=math.sqrt(SIZE))  # type: ignore[attr-defined]
        images = quantize(torch.from_numpy(np.asarray(pasted, dtype=np.float32)).clamp(0, 1))
        with torch.no_grad():
            hits += int((clf(images).argmax(-1) == target).sum())
    return hits / (placements * held.shape[0])


def _art_patch(
    clf: trompe.Classifier, train: torch.Tensor, target: int, steps: int, batch: int, seed: int
) -> tuple[torch.Tensor, object]:
    from _peers import art_classifier
    from art.attacks.evasion import AdversarialPatchPyTorch

    np.random.seed(seed)
    torch.manual_seed(seed)
    estimator = art_classifier(clf, (3, 224, 224), 1000, torch.device("cpu"))
    epochs = max(1, round(steps * batch / train.shape[0]))
    attack = AdversarialPatchPyTorch(
        estimator,
        rotation_max=20.0,
        scale_min=math.sqrt(SIZE * 0.7),
        scale_max=math.sqrt(SIZE * 1.3),
        learning_rate=LEARNING_RATE,
        max_iter=epochs,
        batch_size=batch,
        patch_shape=(3, 224, 224),
        patch_type="square",
        targeted=True,
        verbose=False,
    )
    onehot = np.zeros((train.shape[0], 1000), dtype=np.float32)
    onehot[:, target] = 1
    patch, _ = attack.generate(x=train.numpy().astype(np.float32), y=onehot)
    return quantize(torch.from_numpy(np.asarray(patch, dtype=np.float32)).clamp(0, 1)), attack


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__ or "", repeats=1, threads=1)
    parser.add_argument(
        "--steps", type=int, default=200, help="trompe's steps (ART: as many draws)"
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--placements", type=int, default=20, help="random places per photo")
    parser.add_argument("--save", help="write trompe's patch files into this folder")
    args = parse(parser, argv)
    torch.manual_seed(0)
    clf = trompe.load_model("efficientnet_lite0")
    target = clf.labels.index(TARGET)
    train, held = _photos()
    log(f"{len(train)} training photos, {len(held)} held out")
    train_crops, held_crops = _crops(clf, train), _crops(clf, held)
    names = list(held)
    rows: list[tuple[str, str, str, str, str]] = []

    if "trompe" in args.skip:
        return _finish(args, rows, train, held, clf, target, train_crops, held_crops, names)
    result = trompe.patch(
        train,
        target,
        model=clf,
        size=SIZE,
        holdout=held,
        steps=args.steps,
        batch_size=args.batch_size,
        step_size=LEARNING_RATE,
        placements=args.placements,
        seed=0,
        progress=lambda p: p.step % 25 == 0 and log(f"trompe step {p.step}: {p.target_prob:.2f}"),
    )
    seconds = result.seconds  # the learning only, as for ART
    if args.save:
        result.save(args.save, force=True)
    ours = result.evaluation
    draws = args.steps * args.batch_size
    rows.append(
        (
            "trompe `patch`",
            f"{ours.success_rate:.0%}",
            f"{ours.noise_success_rate:.0%}",
            f"{draws}",
            f"{seconds:.0f}",
        )
    )
    log(f"trompe: {ours.success_rate:.1%} vs noise {ours.noise_success_rate:.1%}, {seconds:.0f} s")
    return _finish(args, rows, train, held, clf, target, train_crops, held_crops, names)


def _finish(
    args: Any,
    rows: list[tuple[str, str, str, str, str]],
    train: dict[str, torch.Tensor],
    held: dict[str, torch.Tensor],
    clf: trompe.Classifier,
    target: int,
    train_crops: torch.Tensor,
    held_crops: torch.Tensor,
    names: list[str],
) -> int:
    draws = args.steps * args.batch_size
    if "art" not in args.skip:
        try:
            start = time.perf_counter()
            art_patch, attack = _art_patch(clf, train_crops, target, args.steps, args.batch_size, 0)
            seconds = time.perf_counter() - start
            own = _art_own_paste(attack, clf, held_crops, target, args.placements)
            log(f"ART's patch through ART's own paste: {own:.1%}")
            theirs = evaluate_patch(
                clf, art_patch, held_crops, names, target, size=SIZE, placements=args.placements
            )
            epochs = max(1, round(draws / train_crops.shape[0]))
            rows.append(
                (
                    f"ART `AdversarialPatchPyTorch` (square); through ART's own paste: {own:.0%}",
                    f"{theirs.success_rate:.0%}",
                    f"{theirs.noise_success_rate:.0%}",
                    f"{epochs * train_crops.shape[0]}",
                    f"{seconds:.0f}",
                )
            )
            log(f"ART: {theirs.success_rate:.1%}, {seconds:.0f} s")
        except Exception as error:  # the peer's failure is a row, not a crash
            rows.append(("ART `AdversarialPatchPyTorch`", f"failed: {error}"[:80], "", "", ""))

    print(
        f"efficientnet_lite0, target {TARGET}, patch {SIZE:.0%} of the image; learnt on "
        f"{len(train)} photos, held-out success over {args.placements} random places on each "
        f"of {len(held)} other photos (8-bit), vs a noise patch at the same places"
    )
    print()
    print("| patch | held-out success | noise patch | draws | time (s) |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()
    print(versions_line("art") + f"; {torch.get_num_threads()} thread(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
