"""``trompe classify``: the top classes of images."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from trompe.cli import EXIT_OK, device, positive_int
from trompe.cli._model_options import add_model_options, model_from_args
from trompe.errors import InvalidArgumentError

if TYPE_CHECKING:
    from trompe.cli import Parser, Verbs


def add_classify(verbs: Verbs, common: Parser) -> None:
    """Add ``classify`` to the sub-commands."""
    classify = verbs.add_parser(
        "classify",
        parents=[common],
        help="print the top classes of images",
        description="Print the most probable classes of each image, as the model sees it. "
        "With no image, classify the bundled cat photo.",
    )
    classify.add_argument(
        "images", nargs="*", metavar="IMAGE", help="image files (JPEG, PNG, WebP, GIF, TIFF, BMP)"
    )
    classify.add_argument(
        "--top",
        "-k",
        type=positive_int,
        default=None,
        help="how many classes (default 5), or every class of a model with fewer",
    )
    classify.add_argument(
        "--json", action="store_true", help="print JSON on stdout instead of tables"
    )
    classify.add_argument(
        "--max-pixels",
        type=positive_int,
        help="refuse images with more pixels than this (default 64,000,000)",
    )
    classify.add_argument("--device", type=device, help="torch device, e.g. cuda (default cpu)")
    add_model_options(classify)
    classify.set_defaults(run=run_classify)


def run_classify(args: argparse.Namespace) -> int:
    """Classify the images of the command line (the bundled cat without any)."""
    from pathlib import Path

    from rich.table import Table

    from trompe.cli._console import console, print_json, shown
    from trompe.images import DEFAULT_MAX_PIXELS, example_path, load_image

    paths = [Path(p) for p in args.images] or [example_path("chelsea")]
    max_pixels = args.max_pixels or DEFAULT_MAX_PIXELS
    # Read every image before any output, so a bad file fails the run before it prints.
    images = [load_image(p, max_pixels=max_pixels) for p in paths]
    clf = model_from_args(args, device=args.device)
    if args.top is None:
        args.top = min(5, clf.num_classes)
    if args.top > clf.num_classes:
        raise InvalidArgumentError(
            f"--top must be at most {clf.num_classes} (the number of classes), got {args.top}"
        )
    chunk = 16
    predictions = []
    for start in range(0, len(images), chunk):
        predictions += clf.predict(images[start : start + chunk], k=args.top)

    if args.json:
        print_json(
            [
                {
                    "image": str(path),
                    "model": clf.name,
                    "size": [int(img.shape[-1]), int(img.shape[-2])],
                    "top": [{"index": p.index, "label": p.label, "prob": p.prob} for p in preds],
                }
                for path, img, preds in zip(paths, images, predictions, strict=True)
            ]
        )
        return EXIT_OK

    out = console()
    for path, img, preds in zip(paths, images, predictions, strict=True):
        table = Table(
            title=f"{shown(path.name)}  ({img.shape[-1]} x {img.shape[-2]})  "
            f"model: {shown(clf.name)}",
            title_justify="left",
        )
        table.add_column("#", justify="right")
        table.add_column("class")
        table.add_column("index", justify="right")
        table.add_column("probability", justify="right")
        table.add_column("")
        for rank, p in enumerate(preds, 1):
            bar = "█" * round(p.prob * 20)
            table.add_row(str(rank), shown(p.label), str(p.index), f"{p.prob:.2%}", bar)
        out.print(table)
    return EXIT_OK
