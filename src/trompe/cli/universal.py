"""``trompe universal``: one perturbation that fools the model on many photos.

Learns a universal adversarial perturbation on a folder of photos
(:func:`trompe.api.universal`), prints its fooling rate on the training and the held-out photos
against random noise of the same budget, and writes perturbation.png, perturbation.pt,
report.png and result.json into ``--out``, all or nothing.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import TYPE_CHECKING, Any

from trompe.cli import EXIT_OK, device, levels, positive_int, seed
from trompe.cli._console import printable
from trompe.cli._model_options import add_model_options, model_from_args
from trompe.errors import InvalidArgumentError

if TYPE_CHECKING:
    from pathlib import Path

    from trompe.cli import Parser, Verbs

OUTPUT_NAMES = ("perturbation.png", "perturbation.pt", "report.png", "result.json")
#: trompe.attacks.universal.MAX_EPS_255 (a test checks they agree), without importing torch.
MAX_EPS_255 = 127


def add_universal(verbs: Verbs, common: Parser) -> None:
    """Add ``universal`` to the sub-commands."""
    parser = verbs.add_parser(
        "universal",
        parents=[common],
        help="one perturbation that fools the model on many photos",
        description="Learn one small change (a universal adversarial perturbation, L-inf) that "
        "fools the model on most photos of a folder, and measure it on photos it never saw, "
        "against random noise of the same size. The budget is in 0-255 levels. Writes "
        "perturbation.png (apply it with `trompe apply`), perturbation.pt, report.png and "
        "result.json into --out.",
        epilog="examples:\n"
        "  trompe universal photos/                      untargeted, 10 levels, 1/4 held out\n"
        "  trompe universal photos/ --target toaster     every photo towards 'toaster'\n"
        "  trompe universal photos/ --holdout more/      held-out photos from another folder\n"
        "  trompe apply trompe-universal/perturbation.png photo.jpg    use it on any photo\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("folder", metavar="FOLDER", help="a folder of photos to learn on")
    parser.add_argument(
        "--target", "-t", help="a class for every photo: name, synonym or index (default: none)"
    )
    parser.add_argument(
        "--eps", type=levels, help="L-inf budget in 0-255 levels, 1 to 127 (default 10)"
    )
    held = parser.add_mutually_exclusive_group()
    held.add_argument("--holdout", metavar="FOLDER", help="a folder of held-out photos")
    held.add_argument(
        "--holdout-fraction",
        type=_fraction,
        metavar="F",
        help="the share of FOLDER held out (default 0.25, at least one photo)",
    )
    parser.add_argument("--epochs", type=positive_int, help="most passes over the photos (20)")
    parser.add_argument("--batch-size", type=positive_int, help="photos per step (8)")
    parser.add_argument("--step-size", type=levels, help="step in 0-255 levels (eps / 8)")
    parser.add_argument("--seed", type=seed, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--out", "-o", default="trompe-universal", help="output folder (trompe-universal)"
    )
    parser.add_argument("--force", action="store_true", help="overwrite files in the folder")
    parser.add_argument("--json", action="store_true", help="print the result JSON on stdout")
    parser.add_argument("--device", type=device, help="torch device, e.g. cuda (default cpu)")
    parser.add_argument(
        "--max-pixels", type=positive_int, help="refuse larger photos (default 64,000,000)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_model_options(parser)
    parser.set_defaults(run=run_universal)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a fraction such as 0.25, got {printable(repr(text))}"
        ) from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {text}")
    return value


def check_output(out_text: str, force: bool, names: tuple[str, ...]) -> Path:
    """Refuse, before any work, an output folder that is a file or holds the files already
    (without ``--force``)."""
    from pathlib import Path

    from trompe.errors import OutputExistsError, TrompeError

    if not out_text.strip() or "\x00" in out_text:
        raise InvalidArgumentError("--out is empty or holds a NUL character; give a folder")
    out = Path(out_text)
    shown = printable(repr(str(out)))
    for part in (out, *out.parents):
        if part.exists():
            if not part.is_dir():
                raise TrompeError(f"--out {shown} goes through a file; choose another --out")
            break
    for name in names:
        target = out / name
        if target.is_dir():
            raise TrompeError(f"{printable(repr(str(target)))} is a folder; choose another --out")
        if not force and (target.exists() or target.is_symlink()):
            raise OutputExistsError(
                f"{printable(repr(str(target)))} exists already; pass --force to overwrite it, "
                "or choose another --out"
            )
    return out


def run_universal(args: argparse.Namespace) -> int:
    """Learn, print the fooling rates, write the files."""
    import json
    from pathlib import Path

    from trompe.units import to_unit

    given = 10.0 if args.eps is None else args.eps
    # As trompe.attacks.universal.check_universal_eps, before torch loads: a typo costs no wait.
    if not 1 <= math.floor(given + 1e-6) <= MAX_EPS_255:
        raise InvalidArgumentError(
            f"eps must be from 1 to {MAX_EPS_255} levels (1/255 to {MAX_EPS_255}/255), got "
            f"{given:g} levels"
        )
    eps = to_unit(given)
    out = check_output(args.out, args.force, OUTPUT_NAMES)

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from trompe.api import universal
    from trompe.cli._console import console, print_json, shown

    clf = model_from_args(args, device=args.device)
    if args.target is not None:
        clf.labels.index(args.target)  # an unknown name fails here, before the photos load
    holdout: Any = args.holdout if args.holdout is not None else args.holdout_fraction
    options: dict[str, Any] = {}
    for key in ("epochs", "batch_size", "max_pixels"):
        if getattr(args, key, None) is not None:
            options[key] = getattr(args, key)
    if args.step_size is not None:
        options["step_size"] = to_unit(args.step_size)

    err = console(stderr=True)
    show = not args.json and not args.no_progress and err.is_terminal
    with Progress(
        TextColumn("[bold]universal"),
        BarColumn(),
        TextColumn("epoch {task.completed:.0f}/{task.total:.0f}"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not show,
    ) as bar:
        task = bar.add_task("universal", total=None, rate="")

        def progress(p: Any) -> None:
            bar.update(
                task, completed=p.epoch, total=p.epochs, rate=f"training photos fooled {p.best:.0%}"
            )

        result = universal(
            args.folder,
            args.target,
            model=clf,
            eps=eps,
            holdout=holdout,
            seed=args.seed,
            progress=progress,
            **options,
        )
    result.params["command"] = "trompe " + " ".join(sys.argv[1:]) if sys.argv else ""
    paths = result.save(out, force=args.force)
    summary = json.loads(Path(paths["result.json"]).read_text())
    if args.json:
        print_json(summary)
        return EXIT_OK
    rates = summary["fooling_rate"]
    goal = (
        f"top-1 becomes {shown(result.target_label)}"
        if result.target is not None
        else "top-1 changes"
    )
    table = Table(
        title=f"one perturbation, L-inf {result.eps_255}/255, on {shown(result.model)} "
        f"(fooled: {goal}, on the 8-bit photos)",
        title_justify="left",
    )
    table.add_column("photos")
    table.add_column("count", justify="right")
    table.add_column("perturbation", justify="right")
    table.add_column(f"random noise \u00b1{result.eps_255}", justify="right")
    table.add_row(
        "training",
        str(summary["photos"]["train"]),
        f"{rates['train']:.0%}",
        f"{rates['noise_train']:.0%}",
    )
    table.add_row(
        "held out",
        str(summary["photos"]["holdout"]),
        f"{rates['holdout']:.0%}",
        f"{rates['noise_holdout']:.0%}",
    )
    stdout = console()
    stdout.print(table)
    run = summary["run"]
    stdout.print(
        f"{run['epochs_run']} epochs, {run['steps']} steps, {run['seconds']:.1f} s; "
        f"files in {shown(str(out))}: " + ", ".join(OUTPUT_NAMES)
    )
    stdout.print(f"apply it: trompe apply {shown(str(out / 'perturbation.png'))} PHOTO")
    return EXIT_OK
