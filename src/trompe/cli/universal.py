"""``trompe universal``: (being built; see issue 13)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from trompe.errors import TrompeError

if TYPE_CHECKING:
    from trompe.cli import Parser, Verbs


def add_universal(verbs: Verbs, common: Parser) -> None:
    """Add ``universal`` to the sub-commands."""
    parser = verbs.add_parser("universal", parents=[common], help="(being built)")
    parser.set_defaults(run=run_universal)


def run_universal(args: argparse.Namespace) -> int:
    raise TrompeError("trompe universal is being built")
