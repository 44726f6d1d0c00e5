"""``trompe patch``: learn a printable adversarial patch on a folder of photos and check it on
held-out ones (Brown et al. 2017, arXiv:1712.09665).

Everything the arguments can get wrong is refused before the model is loaded, and the output
folder is checked before any work: a bad input costs no wait and writes nothing.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import TYPE_CHECKING, Any

from trompe.cli import EXIT_OK, device, positive_int, seed
from trompe.cli._model_options import add_model_options, model_from_args
from trompe.errors import InvalidArgumentError

if TYPE_CHECKING:
    from pathlib import Path

    from trompe.cli import Parser, Verbs

_OUTPUT_NAMES = ("patch.png", "report.png", "result.json")
#: The largest --size: the library's MAX_SIZE (a test checks that they agree).
MAX_SIZE = 0.5


def patch_size(text: str) -> float:
    """``--size``: the patch's area as a fraction of the image, in (0, 0.5]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected the patch's area as a fraction of the image, e.g. 0.1, got {text!r}"
        ) from None
    if not (math.isfinite(value) and 0.0 < value <= MAX_SIZE):
        raise argparse.ArgumentTypeError(
            f"expected a size in (0, {MAX_SIZE}] (the patch's share of the image's area; 0.1 is "
            f"a tenth), got {text.strip()[:40]}"
        )
    return value


def fraction(text: str) -> float:
    """``--holdout-fraction``: a share strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a fraction such as 0.25, got {text!r}"
        ) from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(
            f"expected a fraction strictly between 0 and 1 (e.g. 0.25), got {text.strip()[:40]}"
        )
    return value


def add_patch(verbs: Verbs, common: Parser) -> None:
    """Add ``patch`` to the sub-commands."""
    parser = verbs.add_parser(
        "patch",
        parents=[common],
        help="learn a printable adversarial patch",
        description="Learn a square patch that makes the model see --target wherever it is "
        "pasted (Brown et al. 2017): expectation over where it lands, how large, how turned and "
        "how lit, on the photos of FOLDER. Then it is checked as saved (8 bits) at random places "
        "on held-out photos, next to a noise patch of the same size. Writes patch.png "
        "(printable), report.png and result.json into --out.",
        epilog="examples:\n"
        "  trompe patch photos/ --target toaster              a patch covering 10% of the view\n"
        "  trompe patch photos/ -t toaster --size 0.2 --steps 1000 --holdout held/\n"
        "  trompe apply trompe-patch/patch.png photo.jpg --where 0.5,0.5,0.3\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("folder", metavar="FOLDER", help="a folder of photos to learn on")
    parser.add_argument(
        "--target", "-t", help="the class to make the model see (required): name or index"
    )
    parser.add_argument(
        "--size",
        type=patch_size,
        default=0.1,
        help="the patch's area as a fraction of the image the model sees (default 0.1)",
    )
    parser.add_argument("--steps", type=positive_int, help="optimisation steps (default 500)")
    parser.add_argument(
        "--batch-size", type=positive_int, help="random placements per step (default 8)"
    )
    parser.add_argument(
        "--placements",
        type=positive_int,
        help="random places per held-out photo in the check (default 20)",
    )
    held = parser.add_mutually_exclusive_group()
    held.add_argument("--holdout", metavar="FOLDER", help="photos to check the patch on")
    held.add_argument(
        "--holdout-fraction",
        type=fraction,
        help="hold out this share of FOLDER instead (default 0.25)",
    )
    parser.add_argument("--seed", type=seed, default=0, help="random seed (default 0)")
    parser.add_argument("--out", "-o", default="trompe-patch", help="output folder (trompe-patch)")
    parser.add_argument("--force", action="store_true", help="overwrite files in the folder")
    parser.add_argument("--json", action="store_true", help="print the result JSON on stdout")
    parser.add_argument("--device", type=device, help="torch device, e.g. cuda (default cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_model_options(parser)
    parser.set_defaults(run=run_patch)


def run_patch(args: argparse.Namespace) -> int:
    """Learn, check, save, print."""
    import json
    from pathlib import Path

    if not args.target:
        raise InvalidArgumentError(
            "a patch is targeted: give --target, the class it makes the model see "
            "(e.g. --target toaster)"
        )
    out = _check_out(args.out, args.force)

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from trompe.api import patch as learn
    from trompe.cli._console import console, print_json, shown
    from trompe.images import load_photos

    # Read the folders first: a bad folder is one line before the model loads.
    photos = load_photos(args.folder, what="photo folder")
    holdout: Any = args.holdout_fraction
    if args.holdout is not None:
        holdout = dict(load_photos(args.holdout, what="--holdout folder"))
    clf = model_from_args(args, device=args.device)
    target = clf.labels.index(args.target)  # unknown names fail here, with suggestions

    kwargs: dict[str, Any] = {}
    for flag in ("steps", "batch_size", "placements"):
        if getattr(args, flag, None) is not None:
            kwargs[flag] = getattr(args, flag)
    err = console(stderr=True)
    show = not args.json and not args.no_progress and err.is_terminal
    with Progress(
        TextColumn("[bold]patch"),
        BarColumn(),
        TextColumn("step {task.completed:.0f}/{task.total:.0f}"),
        TextColumn("{task.fields[prob]}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not show,
    ) as bar:
        task = bar.add_task("patch", total=None, prob="")
        label = shown(clf.labels[target])

        def progress(p: Any) -> None:
            bar.update(task, completed=p.step, total=p.steps, prob=f"{label}: {p.target_prob:.1%}")

        result = learn(
            dict(photos),
            target,
            model=clf,
            size=args.size,
            holdout=holdout,
            seed=args.seed,
            progress=progress,
            **kwargs,
        )
    paths = result.save(out, force=args.force)
    summary = json.loads(Path(paths["result"]).read_text())
    summary["command"] = "trompe " + " ".join(sys.argv[1:]) if sys.argv else ""
    if args.json:
        print_json(summary)
        return EXIT_OK
    evaluation = result.evaluation
    stdout = console()
    table = Table(
        title=f"patch for {shown(result.target_label)} on {shown(result.model)}, "
        f"{result.size:.0%} of the image, {evaluation.placements} random places per photo",
        title_justify="left",
    )
    table.add_column("held-out photo")
    table.add_column("clean top-1")
    table.add_column("patch", justify="right")
    table.add_column("noise patch", justify="right")
    for score in evaluation.photos:
        table.add_row(
            shown(score.name),
            shown(score.clean_label),
            f"{score.hits / score.placements:.0%}",
            f"{score.noise_hits / score.placements:.0%}",
        )
    table.add_row("all", "", f"[bold]{result.success_rate:.0%}", f"{result.noise_success_rate:.0%}")
    stdout.print(table)
    stdout.print(
        f"learnt on {len(result.train)} photo{'' if len(result.train) == 1 else 's'} in "
        f"{result.seconds:.0f} s; "
        f"files in {shown(str(out))}/: patch.png (print it), report.png, result.json"
    )
    return EXIT_OK


def _check_out(text: str, force: bool) -> Path:
    """Refuse, before any work, an --out that is empty, a file, or holds the outputs already
    (without --force)."""
    from pathlib import Path

    from trompe.cli._console import printable
    from trompe.errors import OutputExistsError, TrompeError

    if not text.strip() or "\x00" in text:
        raise InvalidArgumentError("--out is empty or not a path; give a folder, e.g. --out patch")
    out = Path(text)
    for part in (out, *out.parents):
        if part.exists():
            if not part.is_dir():
                raise TrompeError(
                    f"--out {printable(repr(text))} goes through a file, "
                    f"{printable(repr(str(part)))}; choose another --out"
                )
            break
    for name in _OUTPUT_NAMES:
        target = out / name
        if target.is_dir():
            raise TrompeError(
                f"{printable(repr(str(target)))} is a folder; remove it or choose another --out"
            )
        if not force and (target.exists() or target.is_symlink()):
            raise OutputExistsError(
                f"{printable(repr(str(target)))} exists already; pass --force to overwrite it, "
                "or choose another --out"
            )
    return out
