"""``trompe patch``: (being built; see issue 13)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from trompe.errors import TrompeError

if TYPE_CHECKING:
    from trompe.cli import Parser, Verbs


def add_patch(verbs: Verbs, common: Parser) -> None:
    """Add ``patch`` to the sub-commands."""
    parser = verbs.add_parser("patch", parents=[common], help="(being built)")
    parser.set_defaults(run=run_patch)


def run_patch(args: argparse.Namespace) -> int:
    raise TrompeError("trompe patch is being built")
