"""``trompe apply``: put a universal perturbation or a patch on a photo.

Reads the artifact (perturbation.png / .pt of ``trompe universal``, patch.png / .pt of
``trompe patch``) by its ``trompe`` metadata, applies it (:func:`trompe.api.apply`), writes the
changed photo as a lossless PNG (never over the input or the artifact; over another file only
with ``--force``), and prints the model's top-1 before and after, the latter read back from the
saved file.
"""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING, Any

from trompe.cli import EXIT_OK, device, positive_int
from trompe.cli._model_options import add_model_options, model_from_args
from trompe.errors import InvalidArgumentError

if TYPE_CHECKING:
    from trompe.cli import Parser, Verbs


def add_apply(verbs: Verbs, common: Parser) -> None:
    """Add ``apply`` to the sub-commands."""
    parser = verbs.add_parser(
        "apply",
        parents=[common],
        help="apply a universal perturbation or a patch to a photo",
        description="Apply a perturbation made by `trompe universal` (resized to the photo) or "
        "a patch made by `trompe patch` (pasted at --where) to a photo; write the result as a "
        "PNG and print the model's top-1 before and after, measured on the saved file.",
        epilog="examples:\n"
        "  trompe apply trompe-universal/perturbation.png photo.jpg\n"
        "  trompe apply trompe-patch/patch.png photo.jpg --where 0.3,0.7,0.25\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "artifact", metavar="ARTIFACT", help="perturbation.png/.pt or patch.png/.pt"
    )
    parser.add_argument("photo", metavar="PHOTO", help="the photo to change")
    parser.add_argument(
        "--where",
        type=where,
        metavar="X,Y,SCALE",
        help="patches only: centre (fractions of width and height) and side (fraction of the "
        "shorter side), e.g. 0.5,0.5,0.2",
    )
    parser.add_argument(
        "--out", "-o", default="adversarial.png", help="the PNG to write (adversarial.png)"
    )
    parser.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    parser.add_argument("--json", action="store_true", help="print JSON on stdout")
    parser.add_argument("--device", type=device, help="torch device, e.g. cuda (default cpu)")
    parser.add_argument(
        "--max-pixels", type=positive_int, help="refuse larger photos (default 64,000,000)"
    )
    add_model_options(parser)
    parser.set_defaults(run=run_apply)


def where(text: str) -> tuple[float, float, float]:
    """``--where X,Y,SCALE``: three numbers in [0, 1] (the scale above 0)."""
    parts = text.split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected X,Y,SCALE such as 0.5,0.5,0.2, got {text!r}")
    x, y, scale = values
    if not (0 <= x <= 1 and 0 <= y <= 1 and 0 < scale <= 1):
        raise argparse.ArgumentTypeError(
            f"X and Y are fractions of the photo in [0, 1] and SCALE in (0, 1], got {text}"
        )
    return x, y, scale


def run_apply(args: argparse.Namespace) -> int:
    """Apply, save, re-classify the saved file, print."""
    from pathlib import Path

    from trompe.cli._console import printable

    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise InvalidArgumentError(
            "--out must end in .png (a lossless file keeps the change), got "
            f"{printable(repr(args.out))}"
        )
    for name, given in (("photo", args.photo), ("perturbation", args.artifact)):
        source = Path(given)
        if source.exists() and ((out.exists() and out.samefile(source)) or out == source):
            raise InvalidArgumentError(
                f"--out {printable(repr(args.out))} is the {name}; an input is never "
                "overwritten: choose another --out"
            )
    if out.is_dir():
        raise InvalidArgumentError(f"--out {printable(repr(args.out))} is a folder; name a .png")
    if out.exists() and not args.force:
        from trompe.errors import OutputExistsError

        raise OutputExistsError(
            f"{printable(repr(args.out))} exists already; pass --force to overwrite it, or "
            "choose another --out"
        )

    from rich.table import Table

    from trompe.api import apply, read_artifact
    from trompe.cli._console import console, print_json, shown
    from trompe.images import DEFAULT_MAX_PIXELS, load_image, save_png

    kind, _, meta = read_artifact(args.artifact)  # not one: one line, before the model loads
    photo = load_image(args.photo, max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS)
    model_id = getattr(args, "model", None) or meta.get("model")
    clf = model_from_args(args, model_id, device=args.device)
    changed = apply(args.artifact, photo, where=args.where)
    save_png(changed, out, force=args.force)
    saved = load_image(out, max_pixels=max(DEFAULT_MAX_PIXELS, photo.shape[-1] * photo.shape[-2]))
    before, after = clf.predict([photo, saved], k=1)
    record: dict[str, Any] = {
        "kind": kind,
        "artifact": str(args.artifact),
        "photo": str(args.photo),
        "out": str(out),
        "model": clf.name,
        "made_for": meta.get("model"),
        "target": meta.get("target_label", meta.get("target")),
        "before": {"index": before[0].index, "label": before[0].label, "prob": before[0].prob},
        "after": {"index": after[0].index, "label": after[0].label, "prob": after[0].prob},
        "changed": before[0].index != after[0].index,
        "linf_255": round(float((saved - photo).abs().max()) * 255, 2),
    }
    if args.json:
        print_json(record)
        return EXIT_OK
    table = Table(
        title=f"{shown(Path(args.photo).name)} + {kind} on {shown(clf.name)} -> {shown(str(out))}",
        title_justify="left",
    )
    table.add_column("")
    table.add_column("top-1", justify="right")
    table.add_row("before", f"{shown(before[0].label)} {before[0].prob:.1%}")
    table.add_row("after (saved PNG)", f"{shown(after[0].label)} {after[0].prob:.1%}")
    console().print(table)
    return EXIT_OK
