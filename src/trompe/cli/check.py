"""``trompe check``: (being built; see issue 13)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from trompe.errors import TrompeError

if TYPE_CHECKING:
    from trompe.cli import Parser, Verbs


def add_check(verbs: Verbs, common: Parser) -> None:
    """Add ``check`` to the sub-commands."""
    parser = verbs.add_parser("check", parents=[common], help="(being built)")
    parser.set_defaults(run=run_check)


def run_check(args: argparse.Namespace) -> int:
    raise TrompeError("trompe check is being built")
