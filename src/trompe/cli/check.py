"""``trompe check``: does an (adversarial) image survive JPEG, resizing, cropping...?

Puts the 8-bit image through the real transforms (Pillow's JPEG encoder at each quality of a
grid, Pillow resizes, crops...) and classifies it after each: exit 0 when the goal is met on the
image and on every transform, 1 when not, 2 for bad input.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from trompe.cli import EXIT_FAILURE, EXIT_OK, device, positive_int
from trompe.cli._model_options import add_model_options, model_from_args
from trompe.errors import InvalidArgumentError

if TYPE_CHECKING:
    from pathlib import Path

    from trompe.cli import Parser, Verbs


def add_check(verbs: Verbs, common: Parser) -> None:
    """Add ``check`` to the sub-commands."""
    parser = verbs.add_parser(
        "check",
        parents=[common],
        help="check that an image survives JPEG, resizing, cropping...",
        description="Put an image through real transforms (Pillow's JPEG encoder at each "
        "quality of a grid, resizes, crops, blur, lighting...) and classify it after each. "
        "Exit 0 when the target stays top-1 on the image and after every transform, 1 when "
        "not, 2 for bad input.",
        epilog="examples:\n"
        "  trompe check adversarial.png --target pelican             JPEG 50 to 95\n"
        "  trompe check adv.png -t pelican --survive jpeg:50-95,resize:0.5-1,crop:0.9\n"
        "  trompe check adv.png --original photo.jpg                 untargeted: not the "
        "photo's class\n"
        "transforms: jpeg[:Q or Q1-Q2] resize[:S] crop[:F] blur[:SIGMA] light[:F] rotate[:DEG] "
        "perspective[:F] noise[:STD]\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("image", metavar="IMAGE", help="the image to check (e.g. adversarial.png)")
    parser.add_argument("--target", "-t", help="the class that should stay top-1")
    parser.add_argument(
        "--original",
        metavar="PHOTO",
        help="without --target: the photo the image was made from; its class should stay away",
    )
    parser.add_argument(
        "--survive",
        metavar="SPECS",
        default="jpeg:50-95",
        help="the transforms, e.g. jpeg:50-95,resize:0.5-1.0,crop:0.9,blur,light (jpeg:50-95)",
    )
    parser.add_argument("--json", action="store_true", help="print the check as JSON on stdout")
    parser.add_argument(
        "--out",
        "-o",
        metavar="FOLDER",
        help="also write survival.png (the image after each transform) and check.json there",
    )
    parser.add_argument("--force", action="store_true", help="overwrite those files")
    parser.add_argument("--device", type=device, help="torch device, e.g. cuda (default cpu)")
    parser.add_argument(
        "--max-pixels", type=positive_int, help="refuse larger images (default 64,000,000)"
    )
    add_model_options(parser)
    parser.set_defaults(run=run_check)


def run_check(args: argparse.Namespace) -> int:
    """Check the image of the command line under the transforms of ``--survive``."""
    from pathlib import Path

    from trompe.api import check
    from trompe.cli._console import console, print_json, shown
    from trompe.cli._tables import survival_table, survival_verdict
    from trompe.images import DEFAULT_MAX_PIXELS, load_image
    from trompe.transforms import parse_transforms

    chain = parse_transforms(args.survive)  # a bad spec fails before anything is loaded
    if args.out is not None:
        _check_out(Path(args.out), args.force)
    if args.target is None and args.original is None:
        raise InvalidArgumentError(
            "give --target CLASS (the class that should survive) or --original PHOTO (the "
            "photo it was made from, for an untargeted check)"
        )
    if args.target is not None and args.original is not None:
        raise InvalidArgumentError("give either --target or --original, not both")
    max_pixels = args.max_pixels or DEFAULT_MAX_PIXELS
    image = load_image(Path(args.image), max_pixels=max_pixels)
    original = (
        None if args.original is None else load_image(Path(args.original), max_pixels=max_pixels)
    )
    clf = model_from_args(args, device=args.device)
    target = None if args.target is None else clf.labels.index(args.target)
    survival = check(image, target, model=clf, survive=chain, original=original)
    record = survival.to_json(0)
    code = EXIT_OK if record["survived"] else EXIT_FAILURE
    summary = {"image": str(args.image), "model": clf.name, **record}
    if args.out is not None:
        _write(Path(args.out), image, summary, args.force)
    if args.json:
        print_json(summary)
        return code
    out = console()
    out.print(survival_table(record, f"{shown(Path(args.image).name)} on {shown(clf.name)}"))
    out.print(survival_verdict(record))
    return code


_FILES = ("survival.png", "check.json")


def _check_out(out: Path, force: bool) -> None:
    """Refuse, before any work, an --out that is a file or holds the files without --force."""
    from trompe.cli._console import printable
    from trompe.errors import OutputExistsError

    if out.exists() and not out.is_dir():
        raise InvalidArgumentError(
            f"--out {printable(repr(str(out)))} is a file, not a folder; choose another --out"
        )
    for name in _FILES:
        if (out / name).exists() and not force:
            raise OutputExistsError(
                f"{printable(repr(str(out / name)))} exists already; pass --force to overwrite "
                "it, or choose another --out"
            )


def _write(out: Path, image: Any, summary: dict[str, Any], force: bool) -> None:
    """survival.png and check.json, all or nothing."""
    import json

    from trompe._files import (
        all_or_nothing,
        move_into_place,
        prepare_directory,
        remove_stale_temporaries,
        stage,
    )
    from trompe.report.survival import survival_png_bytes

    figure = survival_png_bytes(image, summary)
    text = json.dumps(summary, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    created: list[Path] = []
    with all_or_nothing(created) as (staged, placed):
        prepare_directory(out, into=created)
        remove_stale_temporaries(out)
        moves = [
            (stage(out, out / "survival.png", figure, staged), out / "survival.png"),
            (stage(out, out / "check.json", text.encode("utf-8"), staged), out / "check.json"),
        ]
        for temporary, target in moves:
            move_into_place(temporary, target, force, placed)
