"""The sentiment pipeline's pieces: batches, padding, truncation, splits, the TF-IDF baseline."""

import json
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from selfattn.config import ConfigError
from selfattn.models.encoder import EncoderConfig
from selfattn.sentiment import (ReviewEncoder, ReviewTask, SentimentDataConfig, SentimentRunConfig, TfidfClassifier,
                                TfidfConfig, load_splits, pad_batch, read_jsonl, run_tfidf, synthetic_reviews,
                                train_tokenizer, truncate_ids)


def make_task(n_train=37, n_val=11, seed=0):
    g = torch.Generator().manual_seed(1)
    ids = {name: [[2] + torch.randint(5, 50, (int(torch.randint(1, 20, (1,), generator=g)),), generator=g).tolist()
                  + [3] for _ in range(n)] for name, n in (("train", n_train), ("validation", n_val))}
    labels = {name: [i % 2 for i in range(len(rows))] for name, rows in ids.items()}
    return ReviewTask(ids, labels, pad_id=0, seed=seed)


def test_batches_are_a_pure_function_of_seed_split_index():
    a, b = make_task(), make_task()
    for split, index in (("train", 0), ("train", 7), ("val", 2)):
        x, y = a.batch(split, index, 8), b.batch(split, index, 8)
        assert all(torch.equal(x[k], y[k]) for k in x)
    # a different index, or a different seed, gives different rows
    assert a.rows_for("train", 0, 8) != a.rows_for("train", 1, 8)
    assert a.rows_for("train", 0, 8) != make_task(seed=1).rows_for("train", 0, 8)
    # asking out of order (as a resumed run does) changes nothing
    later_first = make_task()
    later_first.batch("train", 9, 8)
    assert later_first.rows_for("train", 0, 8) == a.rows_for("train", 0, 8)


def test_each_epoch_visits_every_training_review_once():
    task = make_task(n_train=40)
    for epoch in range(2):
        rows = [r for i in range(5 * epoch, 5 * epoch + 5) for r in task.rows_for("train", i, 8)]
        assert sorted(rows) == list(range(40))
    # and the two epochs are shuffled differently
    assert task.rows_for("train", 0, 8) != task.rows_for("train", 5, 8)


def test_validation_batches_are_fixed_and_mixed():
    task = make_task(n_val=11)
    rows = [r for i in range(3) for r in task.rows_for("val", i, 11)]
    assert rows[:11] == rows[11:22] and sorted(rows[:11]) == list(range(11))


def test_batch_pads_to_its_longest_review_and_masks_padding():
    task = make_task()
    b = task.batch("train", 3, 8)
    rows = task.rows_for("train", 3, 8)
    lengths = [len(task.ids["train"][r]) for r in rows]
    assert b["input_ids"].shape == (8, max(lengths))
    assert b["attention_mask"].sum(1).tolist() == lengths
    for i, r in enumerate(rows):
        assert b["input_ids"][i, :lengths[i]].tolist() == task.ids["train"][r]
        assert (b["input_ids"][i, lengths[i]:] == 0).all()
    assert b["labels"].tolist() == [task.labels["train"][r] for r in rows]
    # rows= takes a slice of the same batch (one rank's share under DDP)
    part = task.batch("train", 3, 8, rows=slice(2, 5))
    assert part["labels"].tolist() == b["labels"][2:5].tolist()
    assert task.tokens(b) == sum(lengths)


def test_pad_batch():
    ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=1)
    assert ids.tolist() == [[5, 6, 7], [8, 1, 1]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 60), budget=st.integers(1, 30), policy=st.sampled_from(["head", "head_tail"]))
def test_truncation_keeps_a_head_and_a_tail_of_the_review(n, budget, policy):
    body = list(range(n))
    out = truncate_ids(body, budget, policy)
    assert len(out) == min(n, budget)
    if n <= budget:
        assert out == body
    elif policy == "head":
        assert out == body[:budget]
    else:
        head = budget // 4
        assert out == body[:head] + body[n - (budget - head):]


def test_review_encoder_wraps_and_counts_what_it_cuts():
    tok = train_tokenizer([t for t, _ in synthetic_reviews(200)], "wordpiece", 300)
    enc = ReviewEncoder(tok, max_len=8, truncate="head_tail")
    (short, long_), cut = enc.encode(["good movie", " ".join(["plot"] * 20)])
    assert short[0] == enc.cls and short[-1] == enc.sep and len(short) == 4 and cut[0] == 0
    assert len(long_) == 8 and cut[1] == 20 - 6
    assert enc.pad == 0  # [PAD] is the first special token


def test_bpe_tokenizer_has_the_specials_too():
    tok = train_tokenizer([t for t, _ in synthetic_reviews(200)], "bpe", 400)
    enc = ReviewEncoder(tok, max_len=16, truncate="head")
    ids = enc.encode(["good movie"])[0][0]
    assert ids[0] == enc.cls and ids[-1] == enc.sep and tok.decode(ids[1:-1]) == "good movie"


def test_batch_keys_do_not_use_the_salted_builtin_hash():
    # hash() of a str differs between processes (PYTHONHASHSEED): a batch keyed by it would
    # change on resume or under DDP. Make any use of it fail loudly.
    import builtins

    expected = make_task().rows_for("train", 3, 8)

    def salted(_obj):
        raise AssertionError("batch keys must not depend on builtins.hash")

    real, builtins.hash = builtins.hash, salted
    try:
        got = make_task().rows_for("train", 3, 8)
    finally:
        builtins.hash = real
    assert got == expected


def test_synthetic_and_file_splits_are_disjoint_and_fixed(tmp_path):
    cfg = SentimentDataConfig(source="synthetic", synthetic_size=200, val_fraction=0.1)
    s = load_splits(cfg)
    assert [len(s[k]) for k in ("train", "validation", "test")] == [160, 20, 20]
    assert load_splits(cfg) == s
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(json.dumps({"text": t, "label": y}) for t, y in synthetic_reviews(50)) + "\n")
    f = load_splits(SentimentDataConfig(path=str(path)))
    assert sorted(sum(f.values(), [])) == sorted(synthetic_reviews(50))


def test_bad_jsonl_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok", "label": 1}\n{"text": "no label"}\n')
    with pytest.raises(ValueError, match="line 2"):
        read_jsonl(path)


@pytest.mark.parametrize("make, fragment", [
    (lambda: SentimentDataConfig(source="file"), "data.path"),
    (lambda: SentimentDataConfig(path="/no/such.jsonl"), "/no/such.jsonl"),
    (lambda: SentimentDataConfig(truncate="tail"), "data.truncate"),
    (lambda: SentimentRunConfig(init="minilm", train_mlm_steps=5), "train_mlm_steps"),
    (lambda: SentimentRunConfig(data=SentimentDataConfig(max_len=1000)), "max_position"),
    (lambda: SentimentRunConfig(mode="svm"), "mode"),
])
def test_bad_run_configs_fail_at_once(make, fragment):
    with pytest.raises(ConfigError, match=fragment):
        make()


def test_tfidf_baseline_learns_the_synthetic_rule_and_reloads(tmp_path):
    cfg = SentimentRunConfig(recipe="t", mode="tfidf", data=SentimentDataConfig(source="synthetic", synthetic_size=400),
                             tfidf=TfidfConfig(min_df=1))
    out = run_tfidf(cfg, tmp_path)
    assert out["test"]["accuracy"] >= 0.95 and out["test"]["n"] == 40
    assert sum(map(sum, out["test"]["confusion"])) == 40
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["test"] == out["test"]
    assert (tmp_path / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    texts = ["a great film", "the plot was awful", "the movie"]
    clf = TfidfClassifier.fit([t for t, _ in synthetic_reviews(400)], [y for _, y in synthetic_reviews(400)],
                              TfidfConfig(min_df=1))
    clf.save(tmp_path / "m.json")
    again = TfidfClassifier.load(tmp_path / "m.json")
    assert again.prob_positive(texts).tolist() == pytest.approx(clf.prob_positive(texts).tolist(), abs=1e-12)
    assert clf.prob_positive(texts[:1])[0] > 0.5 > clf.prob_positive(texts[1:2])[0]


def test_a_tfidf_run_classifies_through_the_same_entry_point(tmp_path):
    from selfattn.sentiment import Classifier

    cfg = SentimentRunConfig(recipe="t", mode="tfidf", data=SentimentDataConfig(source="synthetic", synthetic_size=200),
                             tfidf=TfidfConfig(min_df=1))
    run_tfidf(cfg, tmp_path)
    (pos, p_pos, _), (neg, p_neg, _) = Classifier(tmp_path)(["a wonderful story", "an awful ending"])
    assert (pos, neg) == ("positive", "negative") and 0.5 < p_pos <= 1 and 0.5 < p_neg <= 1


def test_minilm_start_keeps_the_pretrained_encoder_and_adds_a_fresh_head():
    from selfattn.interop.hf_bert import load_bert_folder
    from selfattn.sentiment import build_model_and_tokenizer, minilm_folder

    cfg = SentimentRunConfig(init="minilm", model=EncoderConfig(pooling="mean", n_classes=2))
    model, tok, resolved = build_model_and_tokenizer(cfg, None)
    base, raw = load_bert_folder(minilm_folder())
    assert resolved.model.n_layer == 6 and resolved.model.n_embd == 384 and resolved.model.n_classes == 2
    assert model.pooler is None and model.classifier.weight.shape == (2, 384)
    ours, theirs = model.state_dict(), base.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours if not k.startswith("classifier."))
    enc = ReviewEncoder(tok, 32, "head_tail")
    ids = enc.encode(["a fine film"])[0][0]
    assert tok.decode(ids).startswith("[CLS]") and len(ids) == 5  # [CLS] a fine film [SEP]
    # our [CLS] ... [SEP] wrapping gives exactly the ids of the folder's own template
    text = "Hello world, it's a TEST!"
    assert enc.encode([text])[0][0] == raw.encode(text).ids
