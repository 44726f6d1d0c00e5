"""``trompe transfer``: transfer rates over a folder of photos, from source models to held-out
ones.

Each photo is attacked on the source (``-m a,b`` is an ensemble), and the saved 8-bit image is
shown to the source, its members and the held-out models (``--to``): the rates go to the
terminal, ``transfer.png`` (the transfer matrix) and ``result.json``. :func:`trompe.api.transfer`
does the work; only what the parser needs is imported at the top.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from trompe.cli import EXIT_OK, budgets, device, levels, positive_int, probability, seed
from trompe.cli._model_options import add_model_options, model_from_args
from trompe.cli.attack import add_gradient_flags, gradient_kwargs
from trompe.errors import InvalidArgumentError

if TYPE_CHECKING:
    from trompe.cli import Parser, Verbs

__all__ = ["add_transfer", "run_transfer"]

#: The output folder when --out is not given.
DEFAULT_OUT = "trompe-transfer"

_EPILOG = """examples:
  trompe transfer photos/                          MI-FGSM on lite0+lite1, held out: lite2
  trompe transfer photos/ -m efficientnet_lite0 --to efficientnet_lite1,efficientnet_lite2
  trompe transfer photos/ --diversity 0.5 --translation 7 --variance 20   MI-DI-TI-VT
  trompe transfer photos/ --target toaster --eps 16 --steps 20            targeted
  trompe transfer photos/ --save-adversarial --out runs/transfer          keep the images
untargeted, a model is fooled when its top-1 differs from its own top-1 of the clean photo;
targeted, when the target is its top-1; judged on the saved 8-bit PNG. Exit code 0 whatever
the rates.
"""


def add_transfer(verbs: Verbs, common: Parser) -> None:
    """Add ``transfer`` to the sub-commands."""
    parser = verbs.add_parser(
        "transfer",
        parents=[common],
        help="transfer rates to models the attack never saw",
        description="Attack every photo of a folder on the source model(s) and show the saved "
        "8-bit images to held-out models: how often does the attack fool a model it never "
        "saw? Budgets are in 0-255 pixel levels. Writes transfer.png (the transfer matrix) "
        "and result.json (per photo and model) into --out, and adversarial/NAME.png with "
        "--save-adversarial.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("folder", metavar="FOLDER", help="a folder of photos (read flat)")
    parser.add_argument(
        "--to",
        metavar="MODELS",
        help="held-out models, comma-separated (default efficientnet_lite2)",
    )
    parser.add_argument(
        "--attack", "-a", default="mifgsm", help="fgsm, pgd, mifgsm (default), difgsm, pgd-l0"
    )
    parser.add_argument("--target", "-t", help="the class to reach (default: untargeted)")
    parser.add_argument(
        "--confidence", type=probability, help="probability the source must give the target"
    )
    parser.add_argument("--eps", type=budgets, help="budget in 0-255 levels (default 16)")
    parser.add_argument("--norm", choices=["linf", "l2", "l1", "l0"], help="threat model")
    parser.add_argument("--steps", type=positive_int, help="steps (the attack's default)")
    parser.add_argument("--step-size", type=levels, help="step size in 0-255 levels")
    parser.add_argument(
        "--option",
        "-O",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an attack option, as the Python API takes it (repeatable)",
    )
    add_gradient_flags(
        parser, "transfer methods", "the gradient hook of fgsm, pgd, mifgsm and pgd-l0"
    )
    parser.add_argument("--limit", type=positive_int, help="attack only the first N photos")
    parser.add_argument(
        "--max-pixels", type=positive_int, help="refuse larger images (default 64,000,000)"
    )
    parser.add_argument("--seed", type=seed, default=0, help="random seed (default 0)")
    parser.add_argument("--out", "-o", default=DEFAULT_OUT, help=f"output folder ({DEFAULT_OUT})")
    parser.add_argument("--force", action="store_true", help="overwrite files in the folder")
    parser.add_argument(
        "--save-adversarial", action="store_true", help="also write adversarial/NAME.png"
    )
    parser.add_argument("--json", action="store_true", help="print result.json on stdout")
    parser.add_argument("--device", type=device, help="torch device, e.g. cuda (default cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_model_options(parser)
    parser.set_defaults(run=run_transfer)


def run_transfer(args: argparse.Namespace) -> int:
    """Run ``trompe transfer``."""
    import json
    from pathlib import Path

    if not args.out.strip():
        raise InvalidArgumentError("--out is empty; give a folder, e.g. --out trompe-transfer")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InvalidArgumentError(f"--out '{out}' is a file, not a folder; choose another --out")
    eps_levels = args.eps or [16.0]
    if len(eps_levels) != 1:
        raise InvalidArgumentError("--eps takes one budget here (no sweep)")

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.table import Table

    from trompe.api import (
        DEFAULT_TRANSFER_SOURCE,
        DEFAULT_TRANSFER_TARGET,
        budget_from_levels,
        transfer,
    )
    from trompe.attacks import get_attack
    from trompe.cli._console import console, print_json, shown
    from trompe.cli.attack import _collect_options
    from trompe.evaluation.transfer import TransferProgress, check_outputs
    from trompe.images import DEFAULT_MAX_PIXELS, load_photos

    info = get_attack(args.attack)
    budget = budget_from_levels(info.name, eps_levels, norm=args.norm, eps_name="--eps")
    options = _collect_options(args, info.cls)
    options.pop("seed", None)
    kwargs: dict[str, Any] = gradient_kwargs(args)
    photos = load_photos(
        args.folder, max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS, limit=args.limit
    )
    check_outputs(  # before the models load: a second run without --force fails at once
        out,
        [name for name, _ in photos] if args.save_adversarial else [],
        force=args.force,
        inputs=[Path(args.folder) / name for name, _ in photos],
    )
    source = model_from_args(args, args.model or DEFAULT_TRANSFER_SOURCE, device=args.device)
    held_out = [name.strip() for name in (args.to or DEFAULT_TRANSFER_TARGET).split(",")]
    err = console(stderr=True)
    show = not args.json and not args.no_progress and err.is_terminal
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[name]}"),
        console=err,
        transient=True,
        disable=not show,
    ) as bar:
        task = bar.add_task(f"{info.name} on {source.name}", total=len(photos), name="")

        def progress(p: TransferProgress) -> None:
            bar.update(task, completed=p.done, name=shown(p.name))

        report = transfer(
            args.folder,
            args.target,
            model=source,
            to=held_out,
            attack=info.name,
            eps=budget.eps if budget.eps is not None else 16 / 255,
            norm=budget.norm,
            confidence=args.confidence,
            limit=args.limit,
            max_pixels=args.max_pixels,
            device=args.device,
            progress=progress,
            seed=args.seed,
            out=out,
            force=args.force,
            save_adversarial=args.save_adversarial,
            **kwargs,
            **options,
        )
    record = json.loads((out / "result.json").read_text())
    if args.json:
        print_json(record)
        return EXIT_OK
    stdout = console()
    goal = f"target {shown(report.target['label'])}" if report.target else "untargeted"
    table = Table(
        title=f"{info.name} on {shown(report.source)}, {goal}, {len(report.photos)} photos",
        title_justify="left",
    )
    table.add_column("model")
    table.add_column("")
    table.add_column("fooled", justify="right")
    for model, rate in report.rates.items():
        kind = "held out" if model in report.held_out else "attacked"
        table.add_row(shown(model), kind, f"{rate:.0%}")
    stdout.print(table)
    written = "transfer.png, result.json" + (", adversarial/" if args.save_adversarial else "")
    stdout.print(f"checked on the saved 8-bit PNGs; files in {shown(out)}/: {written}")
    sys.stdout.flush()
    return EXIT_OK
