"""Class names of a classifier, with synonyms and a forgiving lookup.

A :class:`Labels` holds the readable name of every class of a model, in index order, and
optionally a list of synonyms per class. It resolves what a person types (``"German shepherd"``,
``"tabby"``, ``"951"``) to a class index, and explains in one line what went wrong when it
cannot: a typo gets the nearest names, an ambiguous word gets the candidates.

The ImageNet-1k names come from ``data/imagenet_classes.json``: the short readable names of
Anish Athalye's *imagenet-simple-labels* and, as synonyms, the WordNet 3.0 lemmas of each class's
synset (see ``data/LICENSES.md``).

Example:
    >>> from trompe.labels import imagenet_labels
    >>> labels = imagenet_labels()
    >>> labels.index("German shepherd"), labels.describe(951)
    (235, 'lemon (951)')
"""

from __future__ import annotations

import difflib
import functools
import importlib.resources
import json
import operator
import re
import shlex
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import overload

from trompe.errors import InvalidArgumentError, UnknownLabelError

__all__ = ["Labels", "imagenet_labels"]

# A string made only of digits is always read as an index, never as a name.
_INDEX = re.compile(r"[+-]?[0-9]+")
# Apostrophes and dots are dropped ("St. Bernard" == "St Bernard", "potters wheel" finds
# "potter's wheel"); brackets, commas and slashes separate words like spaces do.
_DROPPED = str.maketrans("", "", "'\u2019.")
_SEPARATORS = re.compile(r"[\s_\-(),/]+")
# difflib similarity (0 to 1) below which a name is not offered as a correction.
_FUZZY_CUTOFF = 0.75
_MIN_FUZZY_WORD = 4
# Without a listing command to point to, an unknown name lists the classes when they are few.
_LIST_AT_MOST = 10


def _normalize(text: str) -> str:
    """Folds case, drops apostrophes and dots, and turns runs of separators into one space."""
    return " ".join(part for part in _SEPARATORS.split(text.casefold().translate(_DROPPED)) if part)


def _join_or(items: Sequence[str]) -> str:
    """``["a", "b", "c"]`` -> ``"a, b or c"``."""
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " or " + items[-1]


@dataclass(frozen=True)
class _Lookup:
    """Tables built once per :class:`Labels`, on the first lookup or search."""

    names: dict[str, tuple[int, ...]]  # normalized name -> classes with that name
    synonyms: dict[str, tuple[int, ...]]  # normalized synonym -> classes with that synonym
    terms: tuple[tuple[str, int, bool], ...]  # (normalized term, class, is a synonym)
    fuzzy: dict[str, tuple[int, ...]]  # normalized term or word -> classes, for difflib


class Labels(Sequence[str]):
    """Class names of a classifier, in index order, with optional synonyms per class.

    It behaves as a read-only sequence of the readable names (``labels[i]``, ``len(labels)``,
    iteration) and adds a lookup from what a person types to an index.

    Args:
        names: the readable name of each class, in index order.
        synonyms: for each class, other names it answers to (for ImageNet, the WordNet lemmas of
            its synset); None when there are none.

    Raises:
        InvalidArgumentError: no names, a name that is not a non-blank string, or synonyms whose
            length differs from that of the names.

    Example:
        >>> labels = Labels(["ant", "bee", "cow"], [["emmet"], [], ["cattle", "kine"]])
        >>> labels[1], len(labels), labels.index("Emmet"), labels.synonyms(2)
        ('bee', 3, 0, ('cattle', 'kine'))
    """

    def __init__(
        self, names: Sequence[str], synonyms: Sequence[Sequence[str]] | None = None
    ) -> None:
        if isinstance(names, str) or not names:
            raise InvalidArgumentError(
                f"labels need a sequence of at least one class name, got {names!r}"
            )
        for i, name in enumerate(names):
            if not isinstance(name, str) or not name.strip():
                raise InvalidArgumentError(
                    f"class {i} has the name {name!r}; every class needs a non-blank string name"
                )
        self._names: tuple[str, ...] = tuple(names)
        if synonyms is None:
            self._synonyms: tuple[tuple[str, ...], ...] = ((),) * len(self._names)
        else:
            if isinstance(synonyms, str) or len(synonyms) != len(self._names):
                raise InvalidArgumentError(
                    f"synonyms must be one list per class: {len(self._names)} classes, "
                    f"got {len(synonyms)} lists"
                )
            for i, group in enumerate(synonyms):
                if isinstance(group, str) or not all(isinstance(s, str) for s in group):
                    raise InvalidArgumentError(
                        f"the synonyms of class {i} must be a list of strings, got {group!r}"
                    )
            self._synonyms = tuple(tuple(group) for group in synonyms)
        # The command that lists these classes, named in error messages (set for ImageNet).
        self._listing_command: str | None = None

    # -- the sequence of names ---------------------------------------------------------------

    @overload
    def __getitem__(self, i: int) -> str: ...

    @overload
    def __getitem__(self, i: slice) -> list[str]: ...

    def __getitem__(self, i: int | slice) -> str | list[str]:
        """The readable name of class ``i``; a slice gives a list of names."""
        if isinstance(i, slice):
            return list(self._names[i])
        return self._names[i]

    def __len__(self) -> int:
        """The number of classes."""
        return len(self._names)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Labels):
            return NotImplemented
        return self._names == other._names and self._synonyms == other._synonyms

    def __hash__(self) -> int:
        return hash((self._names, self._synonyms))

    def __repr__(self) -> str:
        shown = ", ".join(repr(n) for n in self._names[:3])
        more = ", ..." if len(self._names) > 3 else ""
        return f"Labels([{shown}{more}], {len(self._names)} classes)"

    # -- one class ---------------------------------------------------------------------------

    def synonyms(self, index: int) -> tuple[str, ...]:
        """The synonyms of one class, in their usual order (empty if none were given).

        Args:
            index: the class index.

        Returns:
            The synonyms; for ImageNet, the WordNet lemmas of the class's synset.

        Raises:
            UnknownLabelError: the index is out of range.
            InvalidArgumentError: the index is not an integer.

        Example:
            >>> imagenet_labels().synonyms(281)
            ('tabby', 'tabby cat')
        """
        return self._synonyms[self._check_index(index)]

    def describe(self, index: int) -> str:
        """The name of a class followed by its index, as messages show it.

        Args:
            index: the class index.

        Returns:
            For example ``"lemon (951)"``.

        Raises:
            UnknownLabelError: the index is out of range.
            InvalidArgumentError: the index is not an integer.

        Example:
            >>> imagenet_labels().describe(951)
            'lemon (951)'
        """
        index = self._check_index(index)
        return f"{self._names[index]} ({index})"

    def index(self, query: str | int) -> int:  # type: ignore[override]
        """Resolves a class name, a synonym or an index to the index of one class.

        An int, or a string of digits, is an index. Any other string is compared with the names
        first, then with the synonyms, ignoring case, apostrophes and dots, and treating runs of
        spaces, underscores, hyphens and brackets as one space (``"german_shepherd"`` is
        ``"German shepherd"``, ``"crane bird"`` is ``"crane (bird)"``). This replaces
        :meth:`Sequence.index`: pass a name, not a range.

        Args:
            query: what the user typed, or an index (any integer type, such as a NumPy integer
                or a one-element integer tensor).

        Returns:
            The index of the class.

        Raises:
            UnknownLabelError: the index is out of range; the name matches no class (the message
                suggests the nearest names); or it matches several classes (the message lists
                them: pass an index instead).
            InvalidArgumentError: the query is neither a string nor an integer (a bool is
                refused too).

        Example:
            >>> labels = imagenet_labels()
            >>> labels.index("tabby"), labels.index(" GERMAN  SHEPHERD "), labels.index("951")
            (281, 235, 951)
            >>> labels.index("crane")
            Traceback (most recent call last):
            ...
            trompe.errors.UnknownLabelError: class 'crane' is ambiguous: crane (bird) (134) or \
crane (machine) (517); pass the index instead
        """
        if isinstance(query, str):
            text = query.strip()
            if _INDEX.fullmatch(text):
                return self._check_index(int(text))
            key = _normalize(text)
            if not key:
                raise UnknownLabelError(
                    f"empty class name {query!r}; pass a class name, a synonym or an index "
                    f"from 0 to {len(self) - 1}"
                )
            lookup = self._lookup
            for table in (lookup.names, lookup.synonyms):
                found = table.get(key)
                if found is None:
                    continue
                if len(found) == 1:
                    return found[0]
                candidates = _join_or([self.describe(i) for i in found])
                raise UnknownLabelError(
                    f"class {text!r} is ambiguous: {candidates}; pass the index instead"
                )
            raise UnknownLabelError(self._unknown_message(text))
        return self._check_index(query)

    # -- many classes ------------------------------------------------------------------------

    def search(self, query: str, limit: int = 10) -> list[int]:
        """Finds the classes whose name or synonyms contain the query, best matches first.

        Names and query are normalized as in :meth:`index`. Classes come in this order: a name
        or synonym equal to the query; containing it as whole words (``"cat"`` in
        ``"tabby cat"``); starting a word with it; containing it anywhere; and then, while fewer
        than ``limit`` were found, names close to it (typos, via :mod:`difflib`). Within a group,
        a match on the name comes before a match on a synonym, then the lower index first.

        Args:
            query: what to look for; a string of digits also finds the class with that index.
            limit: the most indices to return.

        Returns:
            Class indices, best first; all indices, in order, when the query is blank; an empty
            list when nothing is close.

        Raises:
            InvalidArgumentError: ``limit`` is less than 1.

        Example:
            >>> labels = imagenet_labels()
            >>> [labels[i] for i in labels.search("cat", limit=5)]
            ['tabby cat', 'tiger cat', 'Persian cat', 'Siamese cat', 'Egyptian Mau']
            >>> labels.search("lemmon", limit=3)
            [951]
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidArgumentError(f"limit must be an integer of at least 1, got {limit!r}")
        key = _normalize(query)
        if not key:
            return list(range(len(self)))
        best: dict[int, tuple[float, ...]] = {}

        def offer(index: int, rank: tuple[float, ...]) -> None:
            if index not in best or rank < best[index]:
                best[index] = rank

        text = query.strip()
        if _INDEX.fullmatch(text) and 0 <= int(text) < len(self):
            offer(int(text), (-1.0,))
        padded_key = f" {key} "
        for term, index, is_synonym in self._lookup.terms:
            if term == key:
                tier = 0
            elif padded_key in f" {term} ":
                tier = 1
            elif term.startswith(key) or f" {key}" in f" {term}":
                tier = 2
            elif key in term:
                tier = 3
            else:
                continue
            offer(index, (float(tier), float(is_synonym), float(index)))
        if len(best) < limit:
            fuzzy = self._lookup.fuzzy
            matcher = difflib.SequenceMatcher(b=key)
            for candidate in fuzzy:
                matcher.set_seq1(candidate)
                if (
                    matcher.real_quick_ratio() >= _FUZZY_CUTOFF
                    and matcher.quick_ratio() >= _FUZZY_CUTOFF
                ):
                    score = matcher.ratio()
                    if score >= _FUZZY_CUTOFF:
                        for index in fuzzy[candidate]:
                            offer(index, (4.0, -score, float(index)))
        return sorted(best, key=best.__getitem__)[:limit]

    # -- helpers -------------------------------------------------------------------------------

    def _check_index(self, index: int) -> int:
        """Returns the index as an int if a class has it, else raises UnknownLabelError."""
        if isinstance(index, bool):
            raise InvalidArgumentError(f"a class index is an integer, not a bool ({index})")
        try:
            index = operator.index(index)
        except TypeError:
            raise InvalidArgumentError(
                f"a class index is an integer, not {type(index).__name__} ({index!r})"
            ) from None
        if not 0 <= index < len(self._names):
            raise UnknownLabelError(
                f"{index}: no such class; indices go from 0 to {len(self._names) - 1}"
            )
        return index

    def _unknown_message(self, text: str) -> str:
        """The one-line message for a name that matches no class."""
        suggestions = [self.describe(i) for i in self.search(text, limit=3)]
        command = self._listing_command
        if suggestions:
            message = f"unknown class {text!r}; did you mean {_join_or(suggestions)}?"
            if command is not None:
                message += f" see `{command} {shlex.quote(text)}`"
            return message
        if command is not None:
            return f"unknown class {text!r}; see `{command}` for the list"
        if len(self) <= _LIST_AT_MOST:
            known = ", ".join(self.describe(i) for i in range(len(self)))
            return f"unknown class {text!r}; the classes are {known}"
        return (
            f"unknown class {text!r}; pass one of the {len(self)} class names, a synonym "
            f"or an index from 0 to {len(self) - 1}"
        )

    @functools.cached_property
    def _lookup(self) -> _Lookup:
        names: dict[str, list[int]] = {}
        synonyms: dict[str, list[int]] = {}
        terms: list[tuple[str, int, bool]] = []
        fuzzy: dict[str, list[int]] = {}
        for index, (name, group) in enumerate(zip(self._names, self._synonyms, strict=True)):
            for raw, table, is_synonym in [(name, names, False)] + [
                (s, synonyms, True) for s in group
            ]:
                term = _normalize(raw)
                if not term:
                    continue
                if index not in table.setdefault(term, []):
                    table[term].append(index)
                terms.append((term, index, is_synonym))
                # A typo in one word of a longer name ("shepard") should still find it; words
                # shorter than _MIN_FUZZY_WORD are left out ("tie" is too close to "tiger").
                words = [w for w in term.split(" ") if len(w) >= _MIN_FUZZY_WORD]
                for candidate in {term, *words}:
                    if index not in fuzzy.setdefault(candidate, []):
                        fuzzy[candidate].append(index)
        return _Lookup(
            names={k: tuple(v) for k, v in names.items()},
            synonyms={k: tuple(v) for k, v in synonyms.items()},
            terms=tuple(terms),
            fuzzy={k: tuple(v) for k, v in fuzzy.items()},
        )


@functools.cache
def imagenet_labels() -> Labels:
    """The 1000 ImageNet-1k classes, in the standard index order, with WordNet synonyms.

    Loaded once from the package data; later calls return the same object.

    Returns:
        The labels: short readable names (``labels[281] == "tabby cat"``) and, as synonyms, the
        lemmas of each class's WordNet synset (``("tabby", "tabby cat")``).

    Example:
        >>> labels = imagenet_labels()
        >>> len(labels), labels[0], labels.index("lemon")
        (1000, 'tench', 951)
    """
    resource = importlib.resources.files("trompe") / "data" / "imagenet_classes.json"
    entries = json.loads(resource.read_text(encoding="utf-8"))
    labels = Labels([e["name"] for e in entries], [e["synonyms"] for e in entries])
    labels._listing_command = "trompe labels"
    return labels
