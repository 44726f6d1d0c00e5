"""Output of the command line: rich consoles for people, JSON for programs."""

from __future__ import annotations

import errno
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


def printable(text: str) -> str:
    """``text`` with control and other invisible characters shown as escapes (``\\x1b``).

    A file name can hold terminal escape sequences (colours, a window title); printed raw they
    would act on the terminal instead of showing what the name is.
    """
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )


def shown(value: object) -> str:
    """A user's string (a file name, a class name, a folder) ready for rich: control characters
    escaped, and rich markup such as ``[bold]`` shown as typed instead of interpreted.

    Every string that comes from the user goes through here before it meets a rich console.
    """
    from rich.markup import escape

    return escape(printable(str(value)))


def console(*, stderr: bool = False) -> Console:
    """A console on stdout (or stderr) that keeps names whole when the output is piped.

    A reader that goes away raises :class:`BrokenPipeError` to the caller (rich would exit with
    1), so that :func:`trompe.cli.main` ends every broken pipe the same way.
    """
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            raise BrokenPipeError(errno.EPIPE, "the reader of the output went away")

    out = _Console(highlight=False, stderr=stderr)
    if not out.is_terminal:
        # Piped or captured output: rich would assume 80 columns and cut names short.
        out = _Console(highlight=False, stderr=stderr, width=160)
    return out


def print_json(data: Any) -> None:
    """``data`` as indented JSON on stdout, the only thing there with ``--json``."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
