"""User-supplied (source, target) pairs from TSV and JSONL."""

from __future__ import annotations

import json

import pytest

from selfattn.data.pairs import PairsFormatError, read_pairs


def test_tsv_with_and_without_header(tmp_path):
    path = tmp_path / "p.tsv"
    path.write_text("source\ttarget\nhello world\thola mundo\n\nbye\tadiós\r\n", encoding="utf-8")
    assert read_pairs(path) == [("hello world", "hola mundo"), ("bye", "adiós")]
    path.write_text("hello\thola\n", encoding="utf-8")
    assert read_pairs(path) == [("hello", "hola")]
    path.write_text("en\tes\na\tb\n", encoding="utf-8")
    assert read_pairs(path, source_key="en", target_key="es") == [("a", "b")]


def test_jsonl_with_custom_keys(tmp_path):
    path = tmp_path / "p.jsonl"
    rows = [{"document": "long text", "summary": "short", "id": 1}, {"document": "b", "summary": "c"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    assert read_pairs(path, source_key="document", target_key="summary") == [("long text", "short"), ("b", "c")]


@pytest.mark.parametrize(
    "name, content, kwargs, message",
    [
        ("a.tsv", "a\tb\nonly one column\n", {}, r"a.tsv, line 2: 1 tab-separated fields"),
        ("a.tsv", "a\tb\tc\n", {}, r"line 1: 3 tab-separated fields"),
        ("a.tsv", "a\t \n", {}, r"line 1: target is empty"),
        ("a.tsv", "", {}, r"a.tsv: no pairs"),
        ("a.tsv", "source\ttarget\n", {}, r"no pairs"),
        ("a.jsonl", '{"source": "a", "target": "b"}\n{"source": "a"\n', {}, r"a.jsonl, line 2: not valid JSON"),
        ("a.jsonl", '{"source": "a", "tgt": "b"}\n', {}, r"line 1: missing key\(s\) \['target'\]"),
        ("a.jsonl", '["a", "b"]\n', {}, r"line 1: expected a JSON object, got list"),
        ("a.jsonl", '{"source": 3, "target": "b"}\n', {}, r"line 1: source is int"),
        ("a.jsonl", "\n\n", {}, r"a.jsonl: no pairs"),
        ("a.csv", "a,b\n", {}, r"cannot tell the format"),
        ("a.tsv", "a\tb\n", {"format": "xml"}, r"format='xml'"),
    ],
)
def test_malformed_files_name_the_file_and_line(tmp_path, name, content, kwargs, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        read_pairs(path, **kwargs)


def test_errors_are_value_errors_and_missing_file(tmp_path):
    assert issubclass(PairsFormatError, ValueError)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_pairs(tmp_path / "nope.tsv")
