"""The zText reader on a module built here, and the real KJV / RV1909 modules when installed."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

from selfattn.data import bible
from selfattn.data.bible import Pair, Verse

# A tiny versification: two OT books, one NT book.
TINY = (("Gen", (2, 1)), ("Exod", (1,)), ("Matt", (2,)))


def write_testament(folder: Path, testament: str, slots: list[str], per_block: int = 3) -> None:
    """Write slots (OSIS strings, "" = empty) as ``.bzs/.bzv/.bzz``, ``per_block`` slots a block."""
    bzs, bzv, bzz = bytearray(), bytearray(), bytearray()
    for start in range(0, len(slots), per_block):
        block = bytearray()
        number = start // per_block
        for text in slots[start : start + per_block]:
            data = text.encode("utf-8")
            bzv += struct.pack("<IIH", number, len(block) if data else 0, len(data))
            block += data
        packed = zlib.compress(bytes(block))
        bzs += struct.pack("<III", len(bzz), len(packed), len(block))
        bzz += packed
    (folder / f"{testament}.bzs").write_bytes(bytes(bzs))
    (folder / f"{testament}.bzv").write_bytes(bytes(bzv))
    (folder / f"{testament}.bzz").write_bytes(bytes(bzz))


OT_SLOTS = [
    "",  # slot 0
    '<milestone type="x-importer"/>',  # testament heading
    '<div osisID="Gen" sID="b1" type="book"/><title type="main">Genesis</title>',
    '<chapter osisID="Gen.1" sID="Gen.1"/>',
    '¶ In the <w lemma="strong:H7225">beginning</w>&amp; <transChange type="added">was</transChange>'
    '<note placement="foot">a footnote that must vanish</note>  light.',
    "",  # Gen 1:2 left empty by the module
    '<chapter osisID="Gen.2" sID="Gen.2"/>',
    '<title canonical="true" type="psalm">A Song.</title> <title><foreign>X TITLE.</foreign></title>Gen two.',
    '<div osisID="Exod" sID="b2" type="book"/>',
    '<chapter osisID="Exod.1" sID="Exod.1"/>',
    "Ñandú \\nd LORD «café».",
]
NT_SLOTS = [
    "",
    "",
    '<div osisID="Matt" sID="b3" type="book"/>',
    '<chapter osisID="Matt.1" sID="Matt.1"/>',
    '<q who="Jesus">Verily</q>',
    "The end.",
]


@pytest.fixture
def tiny_module(tmp_path: Path) -> Path:
    write_testament(tmp_path, "ot", OT_SLOTS)
    write_testament(tmp_path, "nt", NT_SLOTS, per_block=4)
    return tmp_path


def test_reader_maps_slots_to_references_and_strips_markup(tiny_module):
    verses = bible.read_ztext(tiny_module, TINY, ot_books=2)
    assert [v.ref for v in verses] == [
        ("Gen", 1, 1), ("Gen", 1, 2), ("Gen", 2, 1), ("Exod", 1, 1), ("Matt", 1, 1), ("Matt", 1, 2),
    ]  # fmt: skip
    text = [v.text for v in verses]
    assert text[0] == "In the beginning& was light."  # pilcrow, note and tags gone, entity decoded
    assert text[1] == ""  # the empty slot stays empty
    assert text[2] == "A Song. Gen two."  # canonical title kept, plain title dropped
    assert text[3] == "Ñandú LORD «café»."  # leaked USFM marker removed, UTF-8 intact
    assert text[4:] == ["Verily", "The end."]
    assert verses[0].lemmas == frozenset({"H7225"})


def test_reader_rejects_wrong_versification_and_broken_files(tiny_module, tmp_path):
    with pytest.raises(ValueError, match="versification expects"):
        bible.read_ztext(tiny_module, (("Gen", (3, 1)), ("Exod", (1,)), ("Matt", (2,))), ot_books=2)
    (tiny_module / "nt.bzv").write_bytes((tiny_module / "nt.bzv").read_bytes()[:-3])
    with pytest.raises(ValueError, match="not a multiple of 10"):
        bible.read_ztext(tiny_module, TINY, ot_books=2)
    (tiny_module / "nt.bzz").write_bytes(b"garbage" * 10)
    (tiny_module / "nt.bzv").write_bytes(struct.pack("<IIH", 0, 0, 5) * len(NT_SLOTS))
    with pytest.raises(ValueError, match="block 0"):
        bible.read_ztext(tiny_module, TINY, ot_books=2)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        bible.read_ztext(tiny_module / "ot.bzs", TINY, ot_books=2)  # a file, not a module folder
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no zText files"):
        bible.read_ztext(empty, TINY, ot_books=2)


def test_nt_only_module(tmp_path):
    write_testament(tmp_path, "nt", NT_SLOTS)
    verses = bible.read_ztext(tmp_path, TINY, ot_books=2)
    assert [v.text for v in verses] == ["Verily", "The end."]


def test_find_module_reads_data_path_and_names_packages(tmp_path):
    (tmp_path / "mods.d").mkdir()
    (tmp_path / "mods.d" / "x.conf").write_text(
        "[Mine]\nDataPath=./modules/texts/ztext/mine/\nModDrv=zText\nVersification=KJV\n"
    )
    (tmp_path / "modules/texts/ztext/mine").mkdir(parents=True)
    assert bible.find_module("Mine", tmp_path) == tmp_path / "modules/texts/ztext/mine"
    with pytest.raises(FileNotFoundError, match="apt-get install -y sword-text-kjv sword-text-sparv"):
        bible.find_module("Other", tmp_path)
    with pytest.raises(FileNotFoundError, match="sword-text-kjv"):
        bible.kjv_rv1909_pairs(tmp_path)


def test_alignment_follows_strongs_numbers_across_a_shift():
    def v(n, text, lemmas):
        return Verse("Gen", 1, n, text, frozenset(lemmas))

    en = [v(1, "a b", "AB"), v(2, "c d", "CD"), v(3, "e f", "EF"), v(4, "g h", "GH")]
    # The Spanish module numbers one verse earlier from slot 2 on, and leaves slot 4 empty.
    es = [v(1, "A B", "AB"), v(2, "E F", "EF"), v(3, "G H", "GH"), v(4, "", "")]
    assert bible.align_verses(en, es) == [(0, 0), (2, 1), (3, 2)]


def test_restore_opening_case():
    verses = [
        Verse("Gen", 1, 1, "EN el principio."),
        Verse("Gen", 1, 2, "Y dijo Jehová: en verdad fueron."),
        Verse("Gen", 2, 1, "Y FUERON acabados. ¡OH JEHOVÁ!"),
        Verse("Gen", 3, 1, "Salmo. ¡OH Jehová!"),
    ]
    got = [v.text for v in bible.restore_opening_case(verses)]
    # Only the first capital word of a verse 1 changes; its form comes from the other verses
    # ("fueron" lower case there); a sentence start is capitalised ("En", "Oh").
    assert got == [
        "En el principio.", "Y dijo Jehová: en verdad fueron.", "Y fueron acabados. ¡OH JEHOVÁ!", "Salmo. ¡Oh Jehová!",
    ]  # fmt: skip


def test_split_by_chapter_is_fixed_and_whole():
    pairs = [Pair(("Gen", c, n), f"e{c}.{n}", f"s{c}.{n}") for c in range(1, 21) for n in range(1, 4)]
    a = bible.split_by_chapter(pairs, seed=0, val_chapters=3, test_chapters=4)
    assert a == bible.split_by_chapter(pairs, seed=0, val_chapters=3, test_chapters=4)
    assert a != bible.split_by_chapter(pairs, seed=1, val_chapters=3, test_chapters=4)
    chapters = {k: {p.ref[:2] for p in v} for k, v in a.items()}
    assert len(chapters["validation"]) == 3 and len(chapters["test"]) == 4
    assert not (chapters["train"] & chapters["test"]) and not (chapters["train"] & chapters["validation"])
    assert sorted(sum(a.values(), []), key=lambda p: p.ref) == pairs
    with pytest.raises(ValueError, match="leaves no training"):
        bible.split_by_chapter(pairs, val_chapters=10, test_chapters=10)
    with pytest.raises(ValueError, match="val_chapters"):
        bible.split_by_chapter(pairs, val_chapters=-1)


# ----------------------------------------------------------------------------- real modules


def _installed() -> bool:
    try:
        bible.find_module(bible.KJV_MODULE)
        bible.find_module(bible.RV1909_MODULE)
        return True
    except FileNotFoundError:
        return False


needs_sword = pytest.mark.skipif(
    not _installed(), reason="needs the Debian packages: apt-get install -y sword-text-kjv sword-text-sparv"
)


@needs_sword
def test_versification_table_matches_the_markers_of_both_modules():
    import re

    assert len(bible.KJV_VERSIFICATION) == 66
    assert sum(len(c) for _, c in bible.KJV_VERSIFICATION) == 1189
    assert sum(sum(c) for _, c in bible.KJV_VERSIFICATION) == 31102
    for name in (bible.KJV_MODULE, bible.RV1909_MODULE):
        folder = bible.find_module(name)
        for testament, books in (("ot", bible.KJV_VERSIFICATION[:39]), ("nt", bible.KJV_VERSIFICATION[39:])):
            slots = bible.read_testament_slots(folder, testament)
            refs = bible.slot_refs(books)
            assert len(slots) == len(refs)
            book = None
            for ref, raw in zip(refs, slots):
                if ref is not None:
                    assert "<chapter" not in raw or "eID" in raw  # a verse never opens a chapter
                    continue
                start = re.search(r'osisID="(\w+)" sID="[^"]*" type="book"', raw)
                if start:
                    book = start.group(1)
                    continue
                chapter = re.search(r'<chapter [^>]*osisID="(\w+)\.(\d+)" sID', raw)
                if chapter:
                    assert chapter.group(1) == book


@needs_sword
def test_real_pairs():
    pairs = bible.kjv_rv1909_pairs()
    by_ref = {p.ref: p for p in pairs}
    assert 30_900 <= len(pairs) <= 31_102
    assert len(by_ref) == len(pairs)
    gen = by_ref[("Gen", 1, 1)]
    assert gen.en.startswith("In the beginning God created")
    assert gen.es.startswith("En el principio crió Dios")
    john = by_ref[("John", 3, 16)]
    assert john.en.startswith("For God so loved the world")
    assert john.es.startswith("Porque de tal manera amó Dios al mundo")
    # RV1909 numbers Num 13 one verse later than KJV: the aligner moves it back.
    assert by_ref[("Num", 12, 16)].es.startswith("Y después movió el pueblo de Haseroth")
    assert by_ref[("Jonah", 1, 17)].es.startswith("Mas Jehová había prevenido un gran pez")
    for p in pairs:
        assert p.en and p.es and "<" not in p.en + p.es and "¶" not in p.en and "\\" not in p.en
    split = bible.split_by_chapter(pairs)
    assert sum(map(len, split.values())) == len(pairs)
    assert {p.ref[:2] for p in split["test"]}.isdisjoint({p.ref[:2] for p in split["train"]})
