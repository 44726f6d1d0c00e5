"""Output of the command line: rich consoles for people, JSON for programs."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


def console(*, stderr: bool = False) -> Console:
    """A console on stdout (or stderr) that keeps names whole when the output is piped."""
    from rich.console import Console

    out = Console(highlight=False, stderr=stderr)
    if not out.is_terminal:
        # Piped or captured output: rich would assume 80 columns and cut names short.
        out = Console(highlight=False, stderr=stderr, width=160)
    return out


def print_json(data: Any) -> None:
    """``data`` as indented JSON on stdout, the only thing there with ``--json``."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
