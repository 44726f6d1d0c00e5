"""The ``trompe`` command line: parse, call the library, render.

Every error that trompe raises on purpose becomes one line on stderr and a non-zero exit code
(2 for a usage error, 1 for a failure at run time); ``--debug`` shows the traceback instead.
``--json`` puts only machine-readable output on stdout.

One module per group of verbs: :mod:`.classify`, :mod:`.catalogue` (``models``, ``labels``,
``attacks``) and :mod:`.attack` (``attack``, ``demo``). Each adds its sub-parsers and runs its
commands; at the top they import only the standard library and trompe's light leaves, and each
command imports what it needs (torch, the attacks, rich) when it runs, so that ``trompe --help``,
``trompe --version`` and every ``trompe VERB --help`` answer without loading torch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NoReturn

from trompe._version import __version__
from trompe.errors import TrompeError
from trompe.units import parse_budgets, parse_levels

__all__ = ["EXIT_FAILURE", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "main"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

#: A verb's runner: takes the parsed arguments, returns the exit code.
Command = Callable[[argparse.Namespace], int]

_EPILOG = """examples:
  trompe classify                       classify the bundled cat photo
  trompe classify photo.jpg --top 3     the 3 most likely classes of your photo
  trompe labels shepherd                find a class by name
  trompe models                         the built-in pretrained models
"""


class Parser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line, like trompe's other errors."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


if TYPE_CHECKING:
    from typing import TypeAlias

    #: What the verb modules add their sub-parsers to.
    Verbs: TypeAlias = argparse._SubParsersAction[Parser]


# -- argument types (argparse turns their ArgumentTypeError into a usage error) ----------------


def positive_int(text: str) -> int:
    """A whole number above 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {value}")
    return value


def probability(text: str) -> float:
    """A probability strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a probability, got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(
            f"expected a probability strictly between 0 and 1 (e.g. 0.99), got {text}"
        )
    return value


def levels(text: str) -> float:
    """A number of 0-255 pixel levels above 0 (see :func:`trompe.units.parse_levels`)."""
    try:
        return parse_levels(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def budgets(text: str) -> list[float]:
    """One budget in levels, or a comma-separated list of them for a sweep."""
    try:
        return parse_budgets(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _build_parser() -> argparse.ArgumentParser:
    # The verb modules import nothing heavy at their top; importing them here rather than above
    # keeps them free to import this package's exit codes and argument types.
    from trompe.cli import attack, catalogue, classify

    # --debug is accepted before and after the verb; SUPPRESS keeps the sub-parser's default
    # from overwriting a --debug given before it.
    common = Parser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show tracebacks and debug logs",
    )

    parser = Parser(
        prog="trompe",
        description="Adversarial images for image classifiers: optical illusions for neural "
        "networks.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"trompe {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="COMMAND", parser_class=Parser)
    # The order of `trompe --help`.
    classify.add_classify(verbs, common)
    catalogue.add_models(verbs, common)
    attack.add_attack(verbs, common)
    attack.add_demo(verbs, common)
    catalogue.add_attacks(verbs, common)
    catalogue.add_labels(verbs, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (the console script exits with it)."""
    parser = _build_parser()
    args = parser.parse_args(argv)  # --help and --version exit here
    import logging

    debug = getattr(args, "debug", False)
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.verb is None:
        parser.print_help()
        return EXIT_USAGE
    command: Command = args.run
    try:
        return command(args)
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
