"""Tests of trompe.labels: the ImageNet data file, lookup, search and error messages."""

from __future__ import annotations

import json
from collections import Counter
from importlib.resources import files

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trompe.errors import InvalidArgumentError, TrompeError, UnknownLabelError
from trompe.labels import Labels, _normalize, imagenet_labels

LABELS = imagenet_labels()

# -- the data file ----------------------------------------------------------------------------


def test_data_file_shape() -> None:
    text = (files("trompe") / "data" / "imagenet_classes.json").read_text(encoding="utf-8")
    entries = json.loads(text)
    assert len(entries) == 1000
    for entry in entries:
        assert set(entry) == {"name", "synonyms"}
        assert isinstance(entry["name"], str) and entry["name"].strip() == entry["name"] != ""
        assert entry["synonyms"], entry
        assert all(isinstance(s, str) and s.strip() == s != "" for s in entry["synonyms"])
    # One class per line keeps diffs readable.
    assert text.count("\n") == 1002


@pytest.mark.parametrize(
    ("index", "name", "synonym"),
    [
        (0, "tench", "Tinca tinca"),
        (1, "goldfish", "Carassius auratus"),
        (144, "pelican", "pelican"),
        (235, "German Shepherd Dog", "German shepherd"),
        (281, "tabby cat", "tabby"),
        (282, "tiger cat", "tiger cat"),
        (285, "Egyptian Mau", "Egyptian cat"),
        (504, "coffee mug", "coffee mug"),
        (511, "convertible", "convertible"),
        (742, "printer", "printer"),
        (937, "broccoli", "broccoli"),
        (951, "lemon", "lemon"),
        (967, "espresso", "espresso"),
        (968, "cup", "cup"),
        (999, "toilet paper", "toilet tissue"),
    ],
)
def test_spot_indices(index: int, name: str, synonym: str) -> None:
    assert LABELS[index] == name
    assert synonym in LABELS.synonyms(index)


def test_imagenet_labels_is_cached_and_a_sequence() -> None:
    assert imagenet_labels() is LABELS
    assert len(LABELS) == 1000
    assert list(LABELS)[:2] == ["tench", "goldfish"]
    assert LABELS[-1] == "toilet paper"
    assert LABELS[281:283] == ["tabby cat", "tiger cat"]
    assert "lemon" in LABELS
    assert LABELS.synonyms(281) == ("tabby", "tabby cat")
    assert LABELS.describe(951) == "lemon (951)"
    assert "1000 classes" in repr(LABELS)


def test_no_name_is_blank_or_shared() -> None:
    assert all(name.strip() for name in LABELS)
    counts = Counter(_normalize(name) for name in LABELS)
    assert [name for name, n in counts.items() if n > 1] == []


# -- index() ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("lemon", 951),
        ("pelican", 144),
        ("German shepherd", 235),
        ("German Shepherd Dog", 235),
        ("alsatian", 235),
        ("tabby", 281),
        ("tabby cat", 281),
        ("951", 951),
        (951, 951),
        ("Egyptian cat", 285),
        ("Egyptian Mau", 285),
        ("espresso", 967),
        ("espresso machine", 550),
        ("broccoli", 937),
        ("printer", 742),
        ("convertible", 511),
        ("cup", 968),
        ("coffee mug", 504),
        ("toilet tissue", 999),
        ("crane (bird)", 134),
        ("crane machine", 517),
        ("jack-o'-lantern", 607),
        ("St Bernard", 247),
        ("0", 0),
        (" 42 ", 42),
    ],
)
def test_index_resolves(query: str | int, expected: int) -> None:
    assert LABELS.index(query) == expected


@pytest.mark.parametrize(
    "query",
    [
        "German shepherd",
        "german_shepherd",
        " GERMAN  SHEPHERD ",
        "german-shepherd",
        "German__Shepherd",
    ],
)
def test_index_ignores_case_and_separators(query: str) -> None:
    assert LABELS.index(query) == 235


def test_index_accepts_integer_types() -> None:
    np = pytest.importorskip("numpy")
    torch = pytest.importorskip("torch")
    assert LABELS.index(np.int64(951)) == 951
    assert LABELS.index(torch.tensor(951)) == 951
    assert LABELS.describe(torch.tensor(951)) == "lemon (951)"


def test_names_come_before_synonyms() -> None:
    # "partridge" is the name of 86 and a synonym of 82 (ruffed grouse): the name wins.
    assert "partridge" in LABELS.synonyms(82)
    assert LABELS.index("partridge") == 86
    assert LABELS.index("harp") == 594


@pytest.mark.parametrize("query", ["1000", 1000, -1, "-1", 10**9])
def test_index_out_of_range(query: str | int) -> None:
    with pytest.raises(UnknownLabelError) as info:
        LABELS.index(query)
    assert str(info.value) == f"{int(query)}: no such class; indices go from 0 to 999"


@pytest.mark.parametrize("method", ["synonyms", "describe"])
def test_other_methods_check_the_range(method: str) -> None:
    with pytest.raises(UnknownLabelError, match="indices go from 0 to 999"):
        getattr(LABELS, method)(1000)
    with pytest.raises(InvalidArgumentError):
        getattr(LABELS, method)("951")


@pytest.mark.parametrize("query", [True, 2.0, None, b"lemon"])
def test_index_refuses_other_types(query: object) -> None:
    with pytest.raises(InvalidArgumentError):
        LABELS.index(query)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("query", "candidates"),
    [
        ("crane", ["crane (bird) (134)", "crane (machine) (517)"]),
        ("maillot", ["tights (638)", "tank suit (639)"]),
        ("grass snake", ["smooth green snake (55)", "garter snake (57)"]),
        ("panda", ["red panda (387)", "giant panda (388)"]),
    ],
)
def test_ambiguous_names_list_the_candidates(query: str, candidates: list[str]) -> None:
    with pytest.raises(UnknownLabelError) as info:
        LABELS.index(query)
    message = str(info.value)
    assert "\n" not in message
    assert f"'{query}'" in message and "ambiguous" in message and "index" in message
    for candidate in candidates:
        assert candidate in message


def test_typo_suggests_the_nearest_name() -> None:
    with pytest.raises(UnknownLabelError) as info:
        LABELS.index("lemmon")
    assert str(info.value) == (
        "unknown class 'lemmon'; did you mean lemon (951)? see `trompe labels lemmon`"
    )


def test_typo_in_one_word_of_a_long_name() -> None:
    with pytest.raises(UnknownLabelError, match=r"German Shepherd Dog \(235\)") as info:
        LABELS.index("german shepard")
    assert "`trompe labels 'german shepard'`" in str(info.value)


def test_unknown_without_suggestion_points_to_the_list() -> None:
    with pytest.raises(UnknownLabelError) as info:
        LABELS.index("xqzzyvv")
    assert str(info.value) == "unknown class 'xqzzyvv'; see `trompe labels` for the list"


@pytest.mark.parametrize("query", ["", "   ", "--"])
def test_blank_query(query: str) -> None:
    with pytest.raises(UnknownLabelError, match="empty class name"):
        LABELS.index(query)


def test_errors_are_trompe_and_lookup_errors() -> None:
    with pytest.raises(LookupError):
        LABELS.index("lemmon")
    with pytest.raises(TrompeError):
        LABELS.index("crane")


@given(st.integers(min_value=0, max_value=999))
def test_every_name_resolves_to_its_class(i: int) -> None:
    name = LABELS[i]
    shared = [j for j, other in enumerate(LABELS) if _normalize(other) == _normalize(name)]
    if len(shared) == 1:
        assert LABELS.index(name) == i
        assert LABELS.index(name.upper()) == i
    else:
        with pytest.raises(UnknownLabelError):
            LABELS.index(name)


@given(st.integers(min_value=0, max_value=999))
def test_every_index_resolves_to_itself(i: int) -> None:
    assert LABELS.index(i) == i
    assert LABELS.index(str(i)) == i


# -- search() ---------------------------------------------------------------------------------


def test_search_cat_finds_the_cats_first() -> None:
    found = LABELS.search("cat", limit=10)
    assert {281, 282, 285} <= set(found[:5])


def test_search_ranks_exact_then_words_then_prefixes() -> None:
    assert LABELS.search("lemon")[0] == 951
    assert LABELS.search("shepherd")[0] == 235
    assert LABELS.search("tiger")[:4] == [292, 3, 282, 300]
    assert LABELS.search("retriever")[:5] == [205, 206, 207, 208, 209]
    # Whole words before the start of a word, which comes before a bare substring.
    found = LABELS.search("cat", limit=30)
    egyptian_cat, catamaran, polecat = 285, 484, 358
    assert found.index(egyptian_cat) < found.index(catamaran) < found.index(polecat)


def test_search_limit_and_blank_query() -> None:
    assert len(LABELS.search("dog", limit=3)) == 3
    assert LABELS.search("") == list(range(1000))
    assert LABELS.search("  ") == list(range(1000))
    with pytest.raises(InvalidArgumentError):
        LABELS.search("dog", limit=0)


def test_search_fuzzy_and_digits() -> None:
    assert LABELS.search("lemmon", limit=3) == [951]
    assert LABELS.search("brocoli")[0] == 937
    assert LABELS.search("951") == [951]
    assert LABELS.search("xqzzyvv") == []


# -- custom labels ------------------------------------------------------------------------------


def test_custom_labels_without_synonyms() -> None:
    labels = Labels(["ant", "bee", "Cow Parsley", "cow"])
    assert len(labels) == 4 and labels[2] == "Cow Parsley"
    assert labels.synonyms(1) == ()
    assert labels.index("BEE") == 1
    assert labels.index("cow_parsley") == 2
    assert labels.index("cow") == 3
    assert labels.index(3) == 3
    assert labels.search("cow") == [3, 2]
    with pytest.raises(UnknownLabelError) as info:
        labels.index("be")
    assert str(info.value) == "unknown class 'be'; did you mean bee (1)?"
    with pytest.raises(UnknownLabelError) as info:
        labels.index("xqzzyvv")
    assert "ant (0), bee (1)" in str(info.value)
    with pytest.raises(UnknownLabelError, match="indices go from 0 to 3"):
        labels.index(4)


def test_custom_labels_with_synonyms_and_duplicates() -> None:
    labels = Labels(["mouse", "mouse", "keyboard"], [["rodent"], ["computer mouse"], []])
    assert labels.index("rodent") == 0
    assert labels.index("computer mouse") == 1
    with pytest.raises(UnknownLabelError, match=r"mouse \(0\) or mouse \(1\)"):
        labels.index("mouse")


def test_many_custom_labels_do_not_list_them_all() -> None:
    labels = Labels([f"class {i}" for i in range(50)])
    assert labels.index("class 7") == 7
    with pytest.raises(UnknownLabelError) as info:
        labels.index("xqzzyvv")
    assert "0 to 49" in str(info.value) and "class 3" not in str(info.value)


def test_equality() -> None:
    assert Labels(["a", "b"]) == Labels(["a", "b"])
    assert Labels(["a", "b"]) != Labels(["a", "b"], [["x"], []])
    assert hash(Labels(["a", "b"])) == hash(Labels(("a", "b")))


@pytest.mark.parametrize(
    ("names", "synonyms"),
    [
        ([], None),
        ("abc", None),
        (["a", ""], None),
        (["a", "  "], None),
        (["a", 3], None),
        (["a", "b"], [["x"]]),
        (["a", "b"], [["x"], "y"]),
        (["a", "b"], [["x"], [2]]),
    ],
)
def test_invalid_labels(names: object, synonyms: object) -> None:
    with pytest.raises(InvalidArgumentError):
        Labels(names, synonyms)  # type: ignore[arg-type]
