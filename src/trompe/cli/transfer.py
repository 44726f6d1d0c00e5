"""``trompe transfer``: (being built; see issue 13)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from trompe.errors import TrompeError

if TYPE_CHECKING:
    from trompe.cli import Parser, Verbs


def add_transfer(verbs: Verbs, common: Parser) -> None:
    """Add ``transfer`` to the sub-commands."""
    parser = verbs.add_parser("transfer", parents=[common], help="(being built)")
    parser.set_defaults(run=run_transfer)


def run_transfer(args: argparse.Namespace) -> int:
    raise TrompeError("trompe transfer is being built")
