"""``trompe apply``: (being built; see issue 13)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from trompe.errors import TrompeError

if TYPE_CHECKING:
    from trompe.cli import Parser, Verbs


def add_apply(verbs: Verbs, common: Parser) -> None:
    """Add ``apply`` to the sub-commands."""
    parser = verbs.add_parser("apply", parents=[common], help="(being built)")
    parser.set_defaults(run=run_apply)


def run_apply(args: argparse.Namespace) -> int:
    raise TrompeError("trompe apply is being built")
