"""The ``trompe`` command line: parse, call the library, render.

Every error that trompe raises on purpose becomes one line on stderr and a non-zero exit code
(2 for a usage error, 1 for a failure at run time); ``--debug`` shows the traceback instead.
``--json`` puts only machine-readable output on stdout.

The boundary with the terminal and the OS is here too: Ctrl-C (SIGINT) and SIGTERM end a run
the same way, by unwinding it (outputs are all or nothing) and exiting with 128 + the signal
number (130, 143), one line on stderr; a second signal while unwinding is ignored. Running out
of memory and a full disk (stdout included) are one line with the fix; a reader that went away
(``trompe labels | head``) ends the run quietly with 141, as a Unix tool killed by SIGPIPE.

One module per group of verbs: :mod:`.classify`, :mod:`.catalogue` (``models``, ``labels``,
``attacks``), :mod:`.attack` (``attack``, ``demo``), :mod:`.evaluate` and :mod:`.serve`. Each
adds its sub-parsers and runs its commands; at the top they import only the standard library and
trompe's light leaves, and each command imports what it needs (torch, the attacks, rich) when it
runs, so that ``trompe --help``, ``trompe --version`` and every ``trompe VERB --help`` answer
without loading torch.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

from trompe._version import __version__
from trompe.cli._console import printable
from trompe.errors import TrompeError
from trompe.units import parse_budgets, parse_levels

__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "Interrupted",
    "device",
    "main",
    "positive_int",
    "seed",
]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
#: 128 + the signal number, as a shell reports a process that a signal ended.
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130: Ctrl-C
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143: kill, timeout, schedulers
EXIT_BROKEN_PIPE = 128 + 13  # 141: SIGPIPE (the reader of stdout went away)

#: What to try when the run does not fit in memory.
_MEMORY_HINT = (
    "try --resolution model, a smaller --max-pixels, or fewer --queries, --steps or --restarts"
)

#: A verb's runner: takes the parsed arguments, returns the exit code.
Command = Callable[[argparse.Namespace], int]

_EPILOG = """examples:
  trompe classify                       classify the bundled cat photo
  trompe classify photo.jpg --top 3     the 3 most likely classes of your photo
  trompe labels shepherd                find a class by name
  trompe models                         the built-in models and the other model sources
  trompe evaluate -m digits_robust --data digits --eps 16,32   robust accuracy on a data set
  trompe serve                          the web page at http://127.0.0.1:8000
"""


class Parser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line, like trompe's other errors."""

    def error(self, message: str) -> NoReturn:
        line = f"{self.prog}: error: {message} (see `{self.prog} --help`)"
        self.exit(EXIT_USAGE, printable(line) + "\n")


if TYPE_CHECKING:
    from typing import TypeAlias

    #: What the verb modules add their sub-parsers to.
    Verbs: TypeAlias = argparse._SubParsersAction[Parser]


# -- argument types (argparse turns their ArgumentTypeError into a usage error) ----------------


#: The largest count a flag takes (steps, queries, pixels...): torch's 32-bit sizes and loops.
MAX_COUNT = 2**31 - 1
#: Seeds are 63-bit: what torch.Generator.manual_seed and NumPy both take.
MAX_SEED = 2**63 - 1


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number, got {printable(repr(text))}"
        ) from None


def positive_int(text: str) -> int:
    """A whole number above 0, at most :data:`MAX_COUNT`."""
    value = _whole(text)
    if not 0 < value <= MAX_COUNT:
        raise argparse.ArgumentTypeError(
            f"expected a whole number from 1 to {MAX_COUNT:,}, got {text.strip()[:40]}"
        )
    return value


def seed(text: str) -> int:
    """A random seed: a whole number from 0 to :data:`MAX_SEED`."""
    value = _whole(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(
            f"expected a seed from 0 to {MAX_SEED} (2**63 - 1), got {text.strip()[:40]}"
        )
    return value


def device(text: str) -> str:
    """A device name that trompe's models run on; whether this machine has it is checked later
    (:func:`trompe.models.resolve_device`), when torch is loaded."""
    import re

    if not re.fullmatch(r"cpu|mps|cuda(:[0-9]{1,3})?", text.strip()):
        raise argparse.ArgumentTypeError(
            f"expected cpu, cuda, cuda:N (N a GPU number) or mps, got {printable(repr(text))}"
        )
    return text.strip()


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
    from trompe.cli import (
        apply,
        attack,
        catalogue,
        check,
        classify,
        evaluate,
        patch,
        serve,
        transfer,
        universal,
    )

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
    check.add_check(verbs, common)
    transfer.add_transfer(verbs, common)
    universal.add_universal(verbs, common)
    patch.add_patch(verbs, common)
    apply.add_apply(verbs, common)
    evaluate.add_evaluate(verbs, common)
    catalogue.add_attacks(verbs, common)
    catalogue.add_labels(verbs, common)
    serve.add_serve(verbs, common)
    return parser


class Interrupted(KeyboardInterrupt):
    """A polite signal (SIGINT, SIGTERM) ended the run; a KeyboardInterrupt to every handler."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _Signals:
    """Turn SIGINT and SIGTERM into :class:`Interrupted`, once: later ones are ignored, so that
    nothing cuts the unwinding (and its clean-up of half-written files) short."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.previous: dict[signal.Signals, Any] = {}

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:
            return
        self.received = signum
        raise Interrupted(signum)

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # main() called from a thread: Python lets only the main thread set handlers
        for signum in (signal.SIGINT, signal.SIGTERM):
            self.previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self)

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            if handler is not None:
                signal.signal(signum, handler)

    def ignore(self) -> None:
        for signum in self.previous:
            signal.signal(signum, signal.SIG_IGN)


def _say(line: str) -> None:
    """One line on stderr, control characters shown escaped; a stderr that is gone is ignored."""
    try:
        stream = sys.stderr
        if stream is not None:
            stream.write(printable(line) + "\n")
            stream.flush()
    except (OSError, ValueError):
        pass


def _discard_output(*, stderr: bool = False) -> None:
    """Point stdout (and stderr) at the null device: the reader is gone or the disk is full, and
    Python's flush at exit would fail again and print its own traceback-like message."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    for stream in (sys.stdout, sys.stderr) if stderr else (sys.stdout,):
        try:
            if stream is not None:
                os.dup2(null, stream.fileno())
        except (OSError, ValueError):
            pass
    os.close(null)


def _guard_standard_streams() -> None:
    """Started with stdout or stderr closed (``>&-``): write there to the null device, as Python
    does, and keep the descriptor taken, so that no file trompe opens becomes "stdout"."""
    for number, name in ((1, "stdout"), (2, "stderr")):
        try:
            os.fstat(number)
        except OSError:
            try:
                null = os.open(os.devnull, os.O_WRONLY)
            except OSError:
                continue
            if null != number:
                os.dup2(null, number)
                os.close(null)
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, "w"))  # noqa: SIM115 (lives as long as sys)


def _out_of_memory(error: BaseException) -> bool:
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def _memory_reason(error: BaseException) -> str:
    """How much the failed allocation asked for, when the message says so (torch's do)."""
    import re

    found = re.search(r"tried to allocate ([0-9.]+ ?[KMGT]i?B|[0-9]+ bytes)", str(error), re.I)
    if found is None:
        return type(error).__name__
    amount = found[1]
    if amount.endswith("bytes"):
        amount = f"{int(amount.split()[0]) / 2**20:,.0f} MiB"
    return f"an allocation of {amount} failed"


def _short(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    text = lines[0] if lines and lines[0] else type(error).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (the console script exits with it).

    Exit codes: 0 done, 1 failure at run time, 2 usage error, 130 Ctrl-C, 143 SIGTERM, 141 the
    reader of stdout went away. ``--help`` and usage errors of the parser raise ``SystemExit``.
    With ``argv`` given, the signal handlers are put back on return; without (the program, which
    exits next), SIGINT and SIGTERM are left ignored.
    """
    _guard_standard_streams()
    signals = _Signals()
    signals.install()
    debug = False
    try:
        debug = "--debug" in (sys.argv[1:] if argv is None else list(argv))
        code = _main(argv)
        if sys.stdout is not None:
            sys.stdout.flush()  # a full disk shows here, not at exit
        return code
    except KeyboardInterrupt as exc:
        if debug:
            raise
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        if signum == signal.SIGTERM:
            _say("trompe: terminated")
            return EXIT_TERMINATED
        _say("trompe: interrupted")
        return EXIT_INTERRUPTED
    except OSError as exc:
        if exc.errno == errno.EPIPE or isinstance(exc, BrokenPipeError):
            # The reader of our output went away (`trompe labels | head`): quiet, as Unix tools.
            _discard_output(stderr=True)
            return EXIT_BROKEN_PIPE
        if debug:
            raise
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO):
            _discard_output()
            _say(f"trompe: error: cannot write the output: {exc.strerror or _short(exc)}")
            return EXIT_FAILURE
        _say(
            f"trompe: internal error: {type(exc).__name__}: {_short(exc)} "
            "(rerun with --debug for the traceback, and please report it)"
        )
        return EXIT_FAILURE
    except Exception as exc:
        if debug:
            raise
        if _out_of_memory(exc):
            _say(f"trompe: error: out of memory ({_memory_reason(exc)}); {_MEMORY_HINT}")
        else:
            _say(
                f"trompe: internal error: {type(exc).__name__}: {_short(exc)} "
                "(rerun with --debug for the traceback, and please report it)"
            )
        return EXIT_FAILURE
    finally:
        if argv is None:
            # Run as the program, which exits next: a late Ctrl-C (a second one, say) would
            # otherwise interrupt the interpreter's exit and print a traceback.
            signals.ignore()
        else:
            signals.restore()


def _main(argv: Sequence[str] | None) -> int:
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
        _say(f"trompe: error: {exc}")
        return exc.exit_code
