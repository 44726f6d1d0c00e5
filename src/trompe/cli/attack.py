"""``trompe attack`` and ``trompe demo``: make an adversarial image and write its files.

The budget flags are in 0-255 pixel levels; :func:`trompe.api.budget_from_levels` checks them and
converts them to the library's units, and :func:`trompe.api.attack` runs the attack. Only what
the parser needs is imported at the top: ``trompe --help`` builds every sub-parser.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from trompe.cli import (
    EXIT_FAILURE,
    EXIT_OK,
    MAX_SEED,
    budgets,
    device,
    levels,
    positive_int,
    probability,
    seed,
)
from trompe.cli._model_options import add_model_options, model_from_args
from trompe.errors import InvalidArgumentError, TrompeError

if TYPE_CHECKING:
    from pathlib import Path

    from trompe.cli import Parser, Verbs

_OUTPUT_NAMES = ("adversarial.png", "perturbation.png", "report.png", "result.json")


def add_attack(verbs: Verbs, common: Parser) -> None:
    """Add ``attack`` to the sub-commands."""
    attack = verbs.add_parser(
        "attack",
        parents=[common],
        help="make an adversarial image",
        description="Change a photo so that the model sees another class. Budgets (--eps, "
        "--step-size) are in 0-255 pixel levels. Writes adversarial.png, perturbation.png (the "
        "change x10 around grey), report.png and result.json into --out.",
        epilog="examples:\n"
        "  trompe attack --target lemon                    the bundled cat becomes a lemon\n"
        "  trompe attack dog.jpg --target pelican --eps 10 PGD, 10 levels per pixel at most\n"
        "  trompe attack photo.png --attack cw --target broccoli   smallest change, Adam\n"
        "  trompe attack photo.png                         untargeted: any other class\n"
        "  trompe attack photo.png --attack apgd-t -O steps=50    attack options: NAME=VALUE\n"
        "  trompe attack photo.png --attack square --queries 2000  black box, scores only\n"
        "  trompe attack photo.png --eps 1,2,4,8           a sweep: success at each budget\n"
        "  trompe attack dog.jpg -m timm:resnet50 -t pelican   any model (see `trompe models`)\n"
        "see `trompe attacks` for every attack and `trompe attacks NAME` for its options\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    attack.add_argument(
        "image", nargs="?", metavar="IMAGE", help="the photo (default: the bundled cat)"
    )
    _attack_options(attack, out_default="trompe-out")
    attack.set_defaults(run=run_attack)


def add_demo(verbs: Verbs, common: Parser) -> None:
    """Add ``demo`` to the sub-commands."""
    demo = verbs.add_parser(
        "demo",
        parents=[common],
        help="turn the bundled cat into a lemon",
        description="The classic demo: the optimisation attack turns the bundled cat photo "
        "into a 'lemon' for the model, with a change no person sees. Writes the files into "
        "./trompe-demo/.",
    )
    demo.add_argument(
        "--attack", "-a", default="cw", help="the attack (default cw; try pgd, the 2nd demo)"
    )
    demo.add_argument("--target", "-t", default="lemon", help="target class (default lemon)")
    demo.add_argument("--out", "-o", default="trompe-demo", help="output folder")
    demo.add_argument("--force", action="store_true", help="overwrite files in the folder")
    demo.add_argument("--device", type=device, help="torch device, e.g. cuda (default cpu)")
    demo.add_argument("--json", action="store_true", help="print the result JSON on stdout")
    add_model_options(demo)
    demo.set_defaults(run=run_demo)


def _attack_options(parser: argparse.ArgumentParser, *, out_default: str) -> None:
    parser.add_argument(
        "--target", "-t", help="the class to reach: name, synonym or index (default: untargeted)"
    )
    parser.add_argument(
        "--attack", "-a", default="pgd", help="an attack name (default pgd; see `trompe attacks`)"
    )
    parser.add_argument(
        "--eps",
        type=budgets,
        help="budget in 0-255 pixel levels (L0: pixels; default 10 for linf); the largest "
        "tried with --min-eps; a list (1,2,4,8) runs a sweep",
    )
    parser.add_argument(
        "--norm",
        choices=["linf", "l2", "l1", "l0"],
        help="threat model (default: the attack's first, see `trompe attacks`)",
    )
    parser.add_argument(
        "--queries", type=positive_int, help="query budget per image (black-box attacks)"
    )
    parser.add_argument(
        "--option",
        "-O",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an attack option, as the Python API takes it (repeatable; see `trompe attacks NAME`)",
    )
    parser.add_argument("--steps", type=positive_int, help="most steps (attack's default)")
    parser.add_argument(
        "--restarts", type=positive_int, help="runs from new random starts (pgd; default 1)"
    )
    parser.add_argument("--step-size", type=levels, help="step size in 0-255 levels")
    parser.add_argument(
        "--confidence",
        type=probability,
        help="probability the target must reach (default 0.99 with --target)",
    )
    parser.add_argument(
        "--min-eps", action="store_true", help="search the smallest budget that works"
    )
    parser.add_argument("--seed", type=seed, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--resolution",
        choices=["full", "model"],
        default="full",
        help="attack the photo at its own size (default) or the model-size crop",
    )
    parser.add_argument("--out", "-o", default=out_default, help=f"output folder ({out_default})")
    parser.add_argument("--force", action="store_true", help="overwrite files in the folder")
    parser.add_argument("--json", action="store_true", help="print the result JSON on stdout")
    parser.add_argument("--device", type=device, help="torch device, e.g. cuda (default cpu)")
    parser.add_argument(
        "--max-pixels", type=positive_int, help="refuse larger images (default 64,000,000)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    world = add_gradient_flags(
        parser,
        "real world and transfer",
        "make the image survive transformations or fool models it was not made on "
        "(iterative attacks: fgsm, pgd, mifgsm, pgd-l0)",
    )
    world.add_argument(
        "--transfer-to",
        metavar="MODELS",
        help="held-out models to show the result to, e.g. efficientnet_lite2",
    )
    add_model_options(parser)


#: The gradient hook's flags (:func:`add_gradient_flags`), by their keyword in the Python API.
GRADIENT_FLAGS = ("survive", "samples", "diversity", "translation", "variance", "momentum")


def add_gradient_flags(
    parser: argparse.ArgumentParser, title: str, description: str
) -> argparse._ArgumentGroup:
    """Add the gradient hook's flags (EOT, DI, TI, VT, MI) as a group; return the group."""
    group = parser.add_argument_group(title, description)
    group.add_argument(
        "--survive",
        metavar="SPECS",
        help="transforms to survive, e.g. jpeg:50-95,resize:0.5-1.0,crop:0.9,blur,light "
        "(EOT); the saved PNG is checked under the real ones",
    )
    group.add_argument(
        "--samples", type=positive_int, help="views averaged per step (default 4 with --survive)"
    )
    group.add_argument(
        "--diversity", type=probability, help="input diversity (DI): probability of a resized view"
    )
    group.add_argument(
        "--translation", type=positive_int, help="translation invariance (TI): kernel side, odd"
    )
    group.add_argument(
        "--variance", type=positive_int, help="variance tuning (VT): neighbours per step (20)"
    )
    group.add_argument("--momentum", type=float, help="momentum (MI) decay, 1.0 as in MI-FGSM")
    return group


def gradient_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The gradient hook's flags that were given, as the Python API's keywords."""
    return {
        flag: getattr(args, flag)
        for flag in GRADIENT_FLAGS
        if getattr(args, flag, None) is not None
    }


def _check_output(out_text: str, force: bool, source: Path | None) -> Path:
    """Refuse, before any work and with the true reason, an output folder that cannot be
    written, would overwrite files without ``--force``, or would overwrite the input photo.

    It runs first, before torch is imported: a mistyped --out costs no wait.
    """
    import os
    from pathlib import Path

    from trompe.cli._console import printable
    from trompe.errors import OutputExistsError

    if not out_text.strip():
        raise InvalidArgumentError("--out is empty; give a folder, e.g. --out trompe-out")
    if "\x00" in out_text:
        raise InvalidArgumentError("--out holds a NUL character, which no path can; fix --out")
    out = Path(out_text)
    shown = printable(repr(str(out)))
    # The nearest part of the path that exists decides: a folder to create the rest in, or
    # the true reason why not.
    for part in (out, *out.parents):
        if part.is_symlink() and not part.exists():
            pointee = printable(repr(os.readlink(part)))
            raise TrompeError(
                f"--out {shown}: {printable(repr(str(part)))} is a link to {pointee}, which does "
                "not exist; create it or choose another --out"
            )
        if part.exists():
            break
    else:  # pragma: no cover (a relative path ends at ".", which exists)
        part = Path(".")
    if not part.is_dir():
        where = "" if part == out else f" goes through {printable(repr(str(part)))}, which"
        raise TrompeError(f"--out {shown}{where} is a file, not a folder; choose another --out")
    if not os.access(part, os.W_OK | os.X_OK):
        raise TrompeError(
            f"cannot write into {printable(repr(str(part)))}: permission denied; choose --out"
        )
    for name in _OUTPUT_NAMES:
        target = out / name
        if not (target.exists() or target.is_symlink()):
            continue
        if target.is_dir():
            raise TrompeError(
                f"{printable(repr(str(target)))} is a folder; remove it or choose another --out"
            )
        # The input is never an output, --force or not.
        if source is not None and source.exists() and target.exists() and source.samefile(target):
            raise InvalidArgumentError(
                f"--out {shown} would overwrite the input photo {printable(repr(str(source)))} "
                f"(as {name}); choose another --out"
            )
        if not force:
            raise OutputExistsError(
                f"{printable(repr(str(target)))} exists already; pass --force to overwrite it, "
                "or choose another --out"
            )
    return out


def _collect_options(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The attack's keyword arguments from the dedicated flags and from ``--option``."""
    from trompe.attacks._options import attack_options, parse_option
    from trompe.units import to_unit

    accepted = {o.name for o in attack_options(cls)}
    name = getattr(cls, "name", cls.__name__)
    options: dict[str, Any] = {}
    step_size = getattr(args, "step_size", None)
    flags = {
        "steps": getattr(args, "steps", None),
        "restarts": getattr(args, "restarts", None),
        "queries": getattr(args, "queries", None),
        "step_size": None if step_size is None else to_unit(step_size),
    }
    for key, value in flags.items():
        if value is None:
            continue
        if key not in accepted:
            flag = "--" + key.replace("_", "-")
            raise InvalidArgumentError(
                f"attack {name!r} takes no {flag}; see `trompe attacks {name}` for its options"
            )
        options[key] = value
    seed = getattr(args, "seed", 0)
    if "seed" in accepted:
        options["seed"] = seed
    for text in getattr(args, "option", []):
        key, value = parse_option(cls, text)
        options[key] = value
    if isinstance(options.get("seed"), int) and not 0 <= options["seed"] <= MAX_SEED:
        # -O seed=... as --seed: torch's generators take 64 bits, and say so with a traceback.
        raise InvalidArgumentError(
            f"seed must be a whole number from 0 to {MAX_SEED} (2**63 - 1), got {options['seed']}"
        )
    return options


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """trompe's warnings as one line on stderr, like its errors (no source line below)."""
    print(f"trompe: warning: {message}", file=sys.stderr)


def _run_attack(args: argparse.Namespace, image_arg: str | None) -> int:
    import warnings

    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        return _attack_and_save(args, image_arg)


def _attack_and_save(args: argparse.Namespace, image_arg: str | None) -> int:
    import json
    from pathlib import Path

    out = _check_output(args.out, args.force, Path(image_arg) if image_arg else None)
    if getattr(args, "survive", None) is not None:
        from trompe.transforms import parse_transforms

        parse_transforms(args.survive)  # a bad spec fails before the model is loaded

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from trompe.api import attack as run_attack
    from trompe.api import budget_from_levels
    from trompe.attacks import SweepResult, get_attack
    from trompe.cli._console import console, print_json, shown
    from trompe.images import DEFAULT_MAX_PIXELS, example_path, load_image
    from trompe.report import save_result

    info = get_attack(args.attack)
    budget = budget_from_levels(
        info.name,
        getattr(args, "eps", None),
        norm=getattr(args, "norm", None),
        min_eps=getattr(args, "min_eps", False),
        eps_name="--eps",
        min_eps_name="--min-eps",
    )
    options = _collect_options(args, info.cls)
    source = Path(image_arg) if image_arg else example_path("chelsea")
    image = load_image(source, max_pixels=getattr(args, "max_pixels", None) or DEFAULT_MAX_PIXELS)
    clf = model_from_args(args, device=args.device)
    target = args.target
    if target is not None:
        target = clf.labels.index(target)  # unknown names fail here, with suggestions

    kwargs: dict[str, Any] = budget.kwargs()
    if getattr(args, "confidence", None) is not None:
        kwargs["confidence"] = args.confidence
    kwargs.update(gradient_kwargs(args))
    if getattr(args, "transfer_to", None):
        kwargs["transfer_to"] = args.transfer_to

    stdout = console()
    err = console(stderr=True)
    show = not args.json and not getattr(args, "no_progress", False) and err.is_terminal
    goal_name = shown(clf.labels[target]) if target is not None else "true class"
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("step {task.completed:.0f}/{task.total:.0f}"),
        TextColumn("{task.fields[prob]}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not show,
    ) as bar:
        task = bar.add_task(info.name, total=None, prob="")

        def progress(p: Any) -> None:
            bar.update(
                task, completed=p.step, total=p.steps, prob=f"{goal_name}: {p.goal_prob:.1%}"
            )

        outcome = run_attack(
            image,
            target,
            model=clf,
            resolution=getattr(args, "resolution", "full"),
            progress=progress,
            **kwargs,
            **options,
        )
    extra: dict[str, Any] = {
        "image": str(source),
        "command": "trompe " + " ".join(sys.argv[1:]) if sys.argv else "",
        "seed": options.get("seed"),
    }
    if isinstance(outcome, SweepResult):
        # The files show the smallest budget that worked (the last one tried if none did).
        result = outcome.results[-1]
        extra["sweep"] = {"norm": outcome.norm, "budgets": outcome.table()}
    else:
        result = outcome
    already = int(result.steps[0]) == 0 and bool(result.success[0])
    paths = save_result(result, out, force=args.force, model=clf, extra=extra)
    summary = json.loads(Path(paths["json"]).read_text())
    code = exit_code(summary, already=already)
    if args.json:
        print_json(summary)
        return code

    if already:
        wanted = f"already predicts {goal_name}" if target is not None else "meets the goal"
        err.print(f"note: the model {wanted} for this image; nothing to change")
    before, after = result.top(1, after=False)[0][0], result.top(1)[0][0]
    gi = int(result.goal.classes[0])
    table = Table(
        title=f"{shown(source.name)}: {info.name} on {shown(clf.name)}", title_justify="left"
    )
    table.add_column("")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    table.add_row(
        "top-1", f"{shown(before[1])} {before[2]:.1%}", f"{shown(after[1])} {after[2]:.1%}"
    )
    label = f"{'target' if result.goal.targeted else 'true class'} {shown(clf.labels[gi])}"
    table.add_row(
        label, f"{result.class_prob(gi, after=False):.2%}", f"{result.class_prob(gi):.2%}"
    )
    norms = summary.get("norms", {})
    table.add_row("L-inf (0-255)", "", f"{norms.get('linf_255', float('nan')):g}")
    table.add_row("L2 (0-255)", "", f"{norms.get('l2_255', float('nan')):.1f}")
    if result.norm == "l1":
        table.add_row("L1 (0-255)", "", f"{float(result.norms.l1[0]):.0f}")
    if result.norm == "l0":
        table.add_row("pixels changed", "", f"{float(result.norms.l0[0]):.0f}")
    psnr = norms.get("psnr_db")
    table.add_row("PSNR", "", "no change" if psnr is None else f"{psnr:.1f} dB")
    if info.access == "gradients":
        table.add_row("steps", "", str(int(result.steps[0])))
    else:
        table.add_row("queries", "", f"{int(result.queries[0])} (no gradients)")
    table.add_row("seconds", "", f"{result.seconds:.1f}")
    stdout.print(table)
    if isinstance(outcome, SweepResult):
        sweep_table = Table(title=f"sweep ({outcome.norm})", title_justify="left")
        sweep_table.add_column("eps (0-255)" if outcome.norm != "l0" else "pixels")
        sweep_table.add_column("success")
        for row in outcome.table():
            sweep_table.add_row(f"{row['eps_255']:g}", "yes" if row["success_rate"] else "no")
        stdout.print(sweep_table)
    survival = summary.get("survival")
    if survival is not None:
        from trompe.cli._tables import survival_table, survival_verdict

        stdout.print(survival_table(survival, "survival of the saved PNG"))
        stdout.print(survival_verdict(survival))
    transfer = summary.get("transfer")
    if transfer is not None:
        from trompe.cli._tables import transfer_table

        stdout.print(transfer_table(transfer, "held-out models (transfer)"))
    verdict = "[green]success[/green]" if code == EXIT_OK else "[red]goal not met[/red]"
    where = "the saved PNG" + (" and every transform" if survival is not None else "")
    stdout.print(
        f"{verdict} (checked on {where})  files in {shown(out)}/: {', '.join(_OUTPUT_NAMES)}"
    )
    return code


def exit_code(summary: dict[str, Any], *, already: bool = False) -> int:
    """The exit code of an attack, the same in every output mode (table, ``--json``, demo).

    0 when the goal is met on the saved PNG as read back (or was met before any change), 1
    when it is not: a goal not met is a failure at run time (README, "exit code"). With
    ``--survive``, the goal must also be met on the PNG after every real transform of the
    survival grid (``summary["survival"]["survived"]``).
    """
    verified = summary.get("verified_on_png") or {}
    ok = verified.get("success", summary.get("success", False))
    survival = summary.get("survival")
    if survival is not None and not survival.get("survived", False):
        return EXIT_FAILURE
    return EXIT_OK if ok or already else EXIT_FAILURE


def run_attack(args: argparse.Namespace) -> int:
    """Attack the photo of the command line (the bundled cat without one)."""
    return _run_attack(args, args.image)


def run_demo(args: argparse.Namespace) -> int:
    """The demo: the bundled cat photo becomes the target class."""
    # The demo has no budget options: _run_attack reads every missing one as the default,
    # except that Carlini-Wagner makes one run instead of its full search over c (20 s on the
    # CPU instead of 80; the later runs seldom find a smaller change on a photo).
    from trompe.attacks import get_attack
    from trompe.cli._console import console, shown

    if get_attack(args.attack).name == "cw":
        args.option = ["binary_search_steps=1"]
    if not args.json:
        console(stderr=True).print(
            f"trompe demo: the bundled cat photo -> {shown(repr(args.target))} with "
            f"{shown(args.attack)}"
        )
    return _run_attack(args, None)
