"""An attack's hyper-parameters, read from its signature and docstring: for listings and the CLI.

The attack classes are the single source of truth: names, types and defaults come from
``__init__``'s signature, descriptions from the class docstring's ``Args:`` section. The command
line turns ``--option steps=100`` into a typed value with :func:`parse_option`; the attack's own
``__init__`` then validates the value as it does for Python callers.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

from trompe.errors import InvalidArgumentError

__all__ = ["Option", "attack_options", "check_option_names", "parse_option"]

#: Set by the interfaces from their own flags or the goal; not listed as options.
_RESERVED = {"self", "eps", "norm", "attack", "options", "gradient"}


@dataclass(frozen=True)
class Option:
    """One hyper-parameter of an attack.

    Attributes:
        name: the keyword (``steps``).
        kind: a readable type (``int``, ``float``, ``bool``, ``"ce" | "dlr"``...).
        default: the default value (``inspect.Parameter.empty`` for a required one).
        help: the description from the docstring, one paragraph.
    """

    name: str
    kind: str
    default: Any
    help: str
    annotation: Any

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty

    @property
    def default_text(self) -> str:
        """The default as listings show it: ``required``, ``0.25``, ``None``..."""
        if self.required:
            return "required"
        if isinstance(self.default, float):
            return f"{self.default:g}"
        return str(self.default)


def _docstring_args(cls: type) -> dict[str, str]:
    """The ``Args:`` entries of the class docstring (Google style), by name; entries of base
    classes fill in what a subclass does not restate."""
    entries: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        entries.update(_own_docstring_args(klass))
    return entries


def _own_docstring_args(cls: type) -> dict[str, str]:
    doc = cls.__dict__.get("__doc__") or ""
    doc = inspect.cleandoc(doc)
    match = re.search(r"^Args:\n(.*?)(?:^\S|\Z)", doc, flags=re.M | re.S)
    if not match:
        return {}
    entries: dict[str, str] = {}
    name = None
    for line in match.group(1).splitlines():
        head = re.match(r"^ {4}(\*{0,2}\w+)(?: \(.*?\))?: ?(.*)$", line)
        if head:
            name = head.group(1).lstrip("*")
            entries[name] = head.group(2).strip()
        elif name and line.strip():
            entries[name] += " " + line.strip()
    return entries


def _kind(annotation: Any) -> str:
    if annotation is inspect.Parameter.empty:
        return "value"
    origin = get_origin(annotation)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_kind(a) for a in get_args(annotation))
    if annotation is type(None):
        return "none"
    return getattr(annotation, "__name__", str(annotation))


def attack_options(cls: type) -> list[Option]:
    """The hyper-parameters of an attack class, in signature order (eps and norm left out)."""
    signature = inspect.signature(cls.__init__)  # type: ignore[misc]
    try:
        hints = typing.get_type_hints(cls.__init__)  # type: ignore[misc]
    except Exception:  # pragma: no cover - unresolvable annotations: fall back to raw ones
        hints = {}
    docs = _docstring_args(cls)
    options = []
    for parameter in signature.parameters.values():
        if parameter.name in _RESERVED or parameter.kind in (
            inspect.Parameter.VAR_KEYWORD,
            inspect.Parameter.VAR_POSITIONAL,
        ):
            continue
        annotation = hints.get(parameter.name, parameter.annotation)
        options.append(
            Option(
                parameter.name,
                _kind(annotation),
                parameter.default,
                docs.get(parameter.name, ""),
                annotation,
            )
        )
    return options


def _convert(text: str, annotation: Any, name: str) -> Any:
    origin = get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        choices = get_args(annotation)
        if type(None) in choices and text.lower() in ("none", "null", ""):
            return None
        errors = []
        for choice in choices:
            if choice is type(None):
                continue
            try:
                return _convert(text, choice, name)
            except InvalidArgumentError as error:
                errors.append(str(error))
        raise InvalidArgumentError(errors[0] if errors else f"bad value {text!r} for {name}")
    if origin is Literal:
        for choice in get_args(annotation):
            if str(choice) == text:
                return choice
        allowed = ", ".join(str(c) for c in get_args(annotation))
        raise InvalidArgumentError(f"option {name} must be one of {allowed}, got {text!r}")
    if annotation is bool:
        lowered = text.lower()
        if lowered in ("true", "yes", "on", "1"):
            return True
        if lowered in ("false", "no", "off", "0"):
            return False
        raise InvalidArgumentError(f"option {name} must be true or false, got {text!r}")
    if annotation is int:
        try:
            return int(text)
        except ValueError:
            raise InvalidArgumentError(
                f"option {name} must be a whole number, got {text!r}"
            ) from None
    if annotation is float:
        try:
            return float(text)
        except ValueError:
            raise InvalidArgumentError(f"option {name} must be a number, got {text!r}") from None
    if annotation is str:
        return text
    raise InvalidArgumentError(f"option {name} cannot be set from the command line")


def check_option_names(cls: type, names: Iterable[str], *, also: Iterable[str] = ()) -> None:
    """Refuse, in one sentence listing the attack's options, a keyword it does not take (its
    constructor would raise a bare TypeError).

    Args:
        cls: the attack class.
        names: the option names given.
        also: names accepted besides the attack's own (``precision`` of the budget search).

    Raises:
        InvalidArgumentError: the first unknown name, in sorted order.
    """
    known = [o.name for o in attack_options(cls)] + list(also)
    unknown = sorted(set(names) - set(known))
    if unknown:
        attack = getattr(cls, "name", cls.__name__)
        raise InvalidArgumentError(
            f"attack {attack!r} has no option {unknown[0]!r}; its options: "
            f"{', '.join(known) or 'none'} (see `trompe attacks {attack}`)"
        )


def parse_option(cls: type, text: str) -> tuple[str, Any]:
    """Turn ``"name=value"`` into the typed keyword argument of attack class ``cls``.

    Raises:
        InvalidArgumentError: no ``=``, an option the attack does not have (the message lists
            its options), or a value of the wrong type.
    """
    name, sep, value = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or not name:
        raise InvalidArgumentError(
            f"an option is written NAME=VALUE (e.g. steps=100), got {text!r}"
        )
    check_option_names(cls, [name])
    options = {o.name: o for o in attack_options(cls)}
    return name, _convert(value.strip(), options[name].annotation, name)
