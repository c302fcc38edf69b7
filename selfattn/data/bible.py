"""English-Spanish verse pairs from two SWORD zText Bible modules (KJV and Reina-Valera 1909).

The Debian packages ``sword-text-kjv`` and ``sword-text-sparv`` install the modules
``engKJV2006eb`` and ``spaRV1909eb`` under ``/usr/share/sword``. Both use KJV versification,
so index slot *i* of one module holds the same verse as slot *i* of the other.

zText layout (per testament, files ``ot.*`` and ``nt.*``):

* ``.bzv``: one little-endian ``<IIH`` entry per slot: (block number, byte offset in the
  uncompressed block, byte size); size 0 means an empty slot.
* ``.bzs``: one ``<III`` entry per block: (offset into ``.bzz``, compressed size,
  uncompressed size).
* ``.bzz``: the zlib-compressed blocks, back to back.

Slot order within a testament (checked against the ``<div type="book">`` and ``<chapter>``
markers of both real modules): slot 0 is empty, slot 1 is the testament heading, then for each
book one book-heading slot, and for each chapter one chapter-heading slot followed by its
verses. Heading slots carry only markup (book titles, ``<chapter sID=...>``) and are dropped.

Verse text is OSIS XML; :func:`osis_to_text` keeps only the words a reader sees.
"""

from __future__ import annotations

import functools
import html
import random
import re
import struct
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

SWORD_ROOT = Path("/usr/share/sword")
KJV_MODULE = "engKJV2006eb"
RV1909_MODULE = "spaRV1909eb"
INSTALL_HINT = "apt-get install -y sword-text-kjv sword-text-sparv"

_VERSE_ENTRY = struct.Struct("<IIH")  # (block, offset in uncompressed block, size)
_BLOCK_ENTRY = struct.Struct("<III")  # (offset in .bzz, compressed size, uncompressed size)

# KJV versification: (OSIS book id, verses in each chapter), Old Testament then New.
# 66 books, 1,189 chapters, 31,102 verses. Derived from the book and chapter markers of the
# installed KJV and RV1909 modules (both agree); tests check it against them.
KJV_VERSIFICATION: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("Gen", (31, 25, 24, 26, 32, 22, 24, 22, 29, 32, 32, 20, 18, 24, 21, 16, 27, 33, 38, 18, 34, 24, 20, 67, 34, 35, 46, 22, 35, 43, 55, 32, 20, 31, 29, 43, 36, 30, 23, 23, 57, 38, 34, 34, 28, 34, 31, 22, 33, 26)),
    ("Exod", (22, 25, 22, 31, 23, 30, 25, 32, 35, 29, 10, 51, 22, 31, 27, 36, 16, 27, 25, 26, 36, 31, 33, 18, 40, 37, 21, 43, 46, 38, 18, 35, 23, 35, 35, 38, 29, 31, 43, 38)),
    ("Lev", (17, 16, 17, 35, 19, 30, 38, 36, 24, 20, 47, 8, 59, 57, 33, 34, 16, 30, 37, 27, 24, 33, 44, 23, 55, 46, 34)),
    ("Num", (54, 34, 51, 49, 31, 27, 89, 26, 23, 36, 35, 16, 33, 45, 41, 50, 13, 32, 22, 29, 35, 41, 30, 25, 18, 65, 23, 31, 40, 16, 54, 42, 56, 29, 34, 13)),
    ("Deut", (46, 37, 29, 49, 33, 25, 26, 20, 29, 22, 32, 32, 18, 29, 23, 22, 20, 22, 21, 20, 23, 30, 25, 22, 19, 19, 26, 68, 29, 20, 30, 52, 29, 12)),
    ("Josh", (18, 24, 17, 24, 15, 27, 26, 35, 27, 43, 23, 24, 33, 15, 63, 10, 18, 28, 51, 9, 45, 34, 16, 33)),
    ("Judg", (36, 23, 31, 24, 31, 40, 25, 35, 57, 18, 40, 15, 25, 20, 20, 31, 13, 31, 30, 48, 25)),
    ("Ruth", (22, 23, 18, 22)),
    ("1Sam", (28, 36, 21, 22, 12, 21, 17, 22, 27, 27, 15, 25, 23, 52, 35, 23, 58, 30, 24, 42, 15, 23, 29, 22, 44, 25, 12, 25, 11, 31, 13)),
    ("2Sam", (27, 32, 39, 12, 25, 23, 29, 18, 13, 19, 27, 31, 39, 33, 37, 23, 29, 33, 43, 26, 22, 51, 39, 25)),
    ("1Kgs", (53, 46, 28, 34, 18, 38, 51, 66, 28, 29, 43, 33, 34, 31, 34, 34, 24, 46, 21, 43, 29, 53)),
    ("2Kgs", (18, 25, 27, 44, 27, 33, 20, 29, 37, 36, 21, 21, 25, 29, 38, 20, 41, 37, 37, 21, 26, 20, 37, 20, 30)),
    ("1Chr", (54, 55, 24, 43, 26, 81, 40, 40, 44, 14, 47, 40, 14, 17, 29, 43, 27, 17, 19, 8, 30, 19, 32, 31, 31, 32, 34, 21, 30)),
    ("2Chr", (17, 18, 17, 22, 14, 42, 22, 18, 31, 19, 23, 16, 22, 15, 19, 14, 19, 34, 11, 37, 20, 12, 21, 27, 28, 23, 9, 27, 36, 27, 21, 33, 25, 33, 27, 23)),
    ("Ezra", (11, 70, 13, 24, 17, 22, 28, 36, 15, 44)),
    ("Neh", (11, 20, 32, 23, 19, 19, 73, 18, 38, 39, 36, 47, 31)),
    ("Esth", (22, 23, 15, 17, 14, 14, 10, 17, 32, 3)),
    ("Job", (22, 13, 26, 21, 27, 30, 21, 22, 35, 22, 20, 25, 28, 22, 35, 22, 16, 21, 29, 29, 34, 30, 17, 25, 6, 14, 23, 28, 25, 31, 40, 22, 33, 37, 16, 33, 24, 41, 30, 24, 34, 17)),
    ("Ps", (6, 12, 8, 8, 12, 10, 17, 9, 20, 18, 7, 8, 6, 7, 5, 11, 15, 50, 14, 9, 13, 31, 6, 10, 22, 12, 14, 9, 11, 12, 24, 11, 22, 22, 28, 12, 40, 22, 13, 17, 13, 11, 5, 26, 17, 11, 9, 14, 20, 23, 19, 9, 6, 7, 23, 13, 11, 11, 17, 12, 8, 12, 11, 10, 13, 20, 7, 35, 36, 5, 24, 20, 28, 23, 10, 12, 20, 72, 13, 19, 16, 8, 18, 12, 13, 17, 7, 18, 52, 17, 16, 15, 5, 23, 11, 13, 12, 9, 9, 5, 8, 28, 22, 35, 45, 48, 43, 13, 31, 7, 10, 10, 9, 8, 18, 19, 2, 29, 176, 7, 8, 9, 4, 8, 5, 6, 5, 6, 8, 8, 3, 18, 3, 3, 21, 26, 9, 8, 24, 13, 10, 7, 12, 15, 21, 10, 20, 14, 9, 6)),
    ("Prov", (33, 22, 35, 27, 23, 35, 27, 36, 18, 32, 31, 28, 25, 35, 33, 33, 28, 24, 29, 30, 31, 29, 35, 34, 28, 28, 27, 28, 27, 33, 31)),
    ("Eccl", (18, 26, 22, 16, 20, 12, 29, 17, 18, 20, 10, 14)),
    ("Song", (17, 17, 11, 16, 16, 13, 13, 14)),
    ("Isa", (31, 22, 26, 6, 30, 13, 25, 22, 21, 34, 16, 6, 22, 32, 9, 14, 14, 7, 25, 6, 17, 25, 18, 23, 12, 21, 13, 29, 24, 33, 9, 20, 24, 17, 10, 22, 38, 22, 8, 31, 29, 25, 28, 28, 25, 13, 15, 22, 26, 11, 23, 15, 12, 17, 13, 12, 21, 14, 21, 22, 11, 12, 19, 12, 25, 24)),
    ("Jer", (19, 37, 25, 31, 31, 30, 34, 22, 26, 25, 23, 17, 27, 22, 21, 21, 27, 23, 15, 18, 14, 30, 40, 10, 38, 24, 22, 17, 32, 24, 40, 44, 26, 22, 19, 32, 21, 28, 18, 16, 18, 22, 13, 30, 5, 28, 7, 47, 39, 46, 64, 34)),
    ("Lam", (22, 22, 66, 22, 22)),
    ("Ezek", (28, 10, 27, 17, 17, 14, 27, 18, 11, 22, 25, 28, 23, 23, 8, 63, 24, 32, 14, 49, 32, 31, 49, 27, 17, 21, 36, 26, 21, 26, 18, 32, 33, 31, 15, 38, 28, 23, 29, 49, 26, 20, 27, 31, 25, 24, 23, 35)),
    ("Dan", (21, 49, 30, 37, 31, 28, 28, 27, 27, 21, 45, 13)),
    ("Hos", (11, 23, 5, 19, 15, 11, 16, 14, 17, 15, 12, 14, 16, 9)),
    ("Joel", (20, 32, 21)),
    ("Amos", (15, 16, 15, 13, 27, 14, 17, 14, 15)),
    ("Obad", (21,)),
    ("Jonah", (17, 10, 10, 11)),
    ("Mic", (16, 13, 12, 13, 15, 16, 20)),
    ("Nah", (15, 13, 19)),
    ("Hab", (17, 20, 19)),
    ("Zeph", (18, 15, 20)),
    ("Hag", (15, 23)),
    ("Zech", (21, 13, 10, 14, 11, 15, 14, 23, 17, 12, 17, 14, 9, 21)),
    ("Mal", (14, 17, 18, 6)),
    ("Matt", (25, 23, 17, 25, 48, 34, 29, 34, 38, 42, 30, 50, 58, 36, 39, 28, 27, 35, 30, 34, 46, 46, 39, 51, 46, 75, 66, 20)),
    ("Mark", (45, 28, 35, 41, 43, 56, 37, 38, 50, 52, 33, 44, 37, 72, 47, 20)),
    ("Luke", (80, 52, 38, 44, 39, 49, 50, 56, 62, 42, 54, 59, 35, 35, 32, 31, 37, 43, 48, 47, 38, 71, 56, 53)),
    ("John", (51, 25, 36, 54, 47, 71, 53, 59, 41, 42, 57, 50, 38, 31, 27, 33, 26, 40, 42, 31, 25)),
    ("Acts", (26, 47, 26, 37, 42, 15, 60, 40, 43, 48, 30, 25, 52, 28, 41, 40, 34, 28, 41, 38, 40, 30, 35, 27, 27, 32, 44, 31)),
    ("Rom", (32, 29, 31, 25, 21, 23, 25, 39, 33, 21, 36, 21, 14, 23, 33, 27)),
    ("1Cor", (31, 16, 23, 21, 13, 20, 40, 13, 27, 33, 34, 31, 13, 40, 58, 24)),
    ("2Cor", (24, 17, 18, 18, 21, 18, 16, 24, 15, 18, 33, 21, 14)),
    ("Gal", (24, 21, 29, 31, 26, 18)),
    ("Eph", (23, 22, 21, 32, 33, 24)),
    ("Phil", (30, 30, 21, 23)),
    ("Col", (29, 23, 25, 18)),
    ("1Thess", (10, 20, 13, 18, 28)),
    ("2Thess", (12, 17, 18)),
    ("1Tim", (20, 15, 16, 16, 25, 21)),
    ("2Tim", (18, 26, 17, 22)),
    ("Titus", (16, 15, 15)),
    ("Phlm", (25,)),
    ("Heb", (14, 18, 19, 16, 14, 20, 28, 13, 28, 39, 40, 29, 25)),
    ("Jas", (27, 26, 18, 17, 20)),
    ("1Pet", (25, 25, 22, 19, 14)),
    ("2Pet", (21, 22, 18)),
    ("1John", (10, 29, 24, 21, 21)),
    ("2John", (13,)),
    ("3John", (14,)),
    ("Jude", (25,)),
    ("Rev", (20, 29, 22, 11, 14, 17, 17, 13, 21, 11, 19, 17, 18, 20, 8, 21, 18, 24, 21, 15, 27, 21)),
)
KJV_OT_BOOKS = 39  # books 0..38 live in ot.*, the rest in nt.*


@dataclass(frozen=True)
class Verse:
    book: str  # OSIS id, e.g. "Gen", "John"
    chapter: int
    verse: int
    text: str  # plain text; "" when the module leaves the slot empty
    # Strong's numbers of the verse's words ("H7225", "G2316"); both modules carry them, which
    # lets kjv_rv1909_pairs check that two slots really hold the same verse.
    lemmas: frozenset[str] = field(default=frozenset(), compare=False, repr=False)

    @property
    def ref(self) -> tuple[str, int, int]:
        return (self.book, self.chapter, self.verse)


@dataclass(frozen=True)
class Pair:
    ref: tuple[str, int, int]
    en: str
    es: str


# ----------------------------------------------------------------------------- raw slots


def read_testament_slots(module_dir: str | Path, testament: str) -> list[str]:
    """Raw OSIS markup of every index slot of one testament (``"ot"`` or ``"nt"``), in order."""
    if testament not in ("ot", "nt"):
        raise ValueError(f"testament={testament!r} is not allowed; choose 'ot' or 'nt'")
    base = Path(module_dir)
    paths = {ext: base / f"{testament}.{ext}" for ext in ("bzs", "bzv", "bzz")}
    for path in paths.values():
        if not path.is_file():
            raise FileNotFoundError(f"zText file {path} is missing")
    bzs, bzv, bzz = (paths[e].read_bytes() for e in ("bzs", "bzv", "bzz"))
    if len(bzs) % _BLOCK_ENTRY.size:
        raise ValueError(f"{paths['bzs']}: size {len(bzs)} is not a multiple of {_BLOCK_ENTRY.size}")
    if len(bzv) % _VERSE_ENTRY.size:
        raise ValueError(f"{paths['bzv']}: size {len(bzv)} is not a multiple of {_VERSE_ENTRY.size}")

    blocks: dict[int, bytes] = {}

    def block(number: int) -> bytes:
        # Blocks are decompressed lazily and once: a module has a few dozen, each a whole book.
        if number not in blocks:
            if number * _BLOCK_ENTRY.size >= len(bzs):
                raise ValueError(f"{paths['bzv']}: block {number} does not exist in {paths['bzs']}")
            start, csize, usize = _BLOCK_ENTRY.unpack_from(bzs, number * _BLOCK_ENTRY.size)
            if start + csize > len(bzz):
                raise ValueError(f"{paths['bzs']}: block {number} runs past the end of {paths['bzz']}")
            try:
                data = zlib.decompress(bzz[start : start + csize])
            except zlib.error as e:
                raise ValueError(f"{paths['bzz']}: block {number} is not valid zlib data ({e})") from e
            if len(data) != usize:
                raise ValueError(
                    f"{paths['bzz']}: block {number} inflates to {len(data)} bytes, index says {usize}"
                )
            blocks[number] = data
        return blocks[number]

    slots = []
    for slot, (number, offset, size) in enumerate(_VERSE_ENTRY.iter_unpack(bzv)):
        if size == 0:
            slots.append("")
            continue
        data = block(number)
        if offset + size > len(data):
            raise ValueError(f"{paths['bzv']}: slot {slot} runs past the end of block {number}")
        slots.append(data[offset : offset + size].decode("utf-8"))
    return slots


def slot_refs(
    books: tuple[tuple[str, tuple[int, ...]], ...],
) -> list[tuple[str, int, int] | None]:
    """The reference of every slot of a testament holding ``books``; None for heading slots."""
    refs: list[tuple[str, int, int] | None] = [None, None]  # empty slot 0, testament heading
    for book, chapters in books:
        refs.append(None)  # book heading
        for chapter, n_verses in enumerate(chapters, start=1):
            refs.append(None)  # chapter heading
            refs.extend((book, chapter, v) for v in range(1, n_verses + 1))
    return refs


# ----------------------------------------------------------------------------- markup

_NOTE = re.compile(r"<note\b.*?</note>", re.S)
_TITLE = re.compile(r"<title\b([^>]*)>.*?</title>", re.S)
_TAG = re.compile(r"<[^>]*>")
# The KJV module leaks a few USFM character markers ("\\nd LORD") from its source files.
_USFM_MARKER = re.compile(r"\\\+?[a-z]+\d*\*?")
_LEMMA = re.compile(r'lemma="([^"]*)"')


def osis_to_text(markup: str) -> str:
    """Plain text of one OSIS verse: notes and non-canonical titles dropped with their content,
    all other tags stripped (their text kept), entities unescaped, KJV's pilcrows removed,
    whitespace collapsed.

    Canonical titles (the Psalm superscriptions) stay: RV1909 prints them as part of verse 1,
    so keeping them keeps the two sides aligned.
    """
    text = _NOTE.sub(" ", markup)
    text = _TITLE.sub(lambda m: m.group(0) if 'canonical="true"' in m.group(1) else " ", text)
    text = _TAG.sub("", text)
    text = _USFM_MARKER.sub("", text)
    text = html.unescape(text).replace("\u00b6", " ")
    return " ".join(text.split())


def osis_lemmas(markup: str) -> frozenset[str]:
    """Strong's numbers of one OSIS verse (footnotes excluded): ``lemma="strong:H0430"``.
    RV1909 sometimes omits the prefix on the second number (``"strong:G2424 G5547"``)."""
    text = _NOTE.sub(" ", markup)
    return frozenset(
        token.removeprefix("strong:") for value in _LEMMA.findall(text) for token in value.split()
    )


# ----------------------------------------------------------------------------- modules


def read_ztext(
    module_dir: str | Path,
    versification: tuple[tuple[str, tuple[int, ...]], ...] = KJV_VERSIFICATION,
    ot_books: int = KJV_OT_BOOKS,
) -> list[Verse]:
    """Every verse slot of a zText module as plain text, in canonical order.

    ``versification[:ot_books]`` lives in ``ot.*`` and the rest in ``nt.*``; a testament whose
    three files are all absent is skipped (SWORD allows NT-only modules). Empty slots come back
    with ``text == ""``; heading slots are not returned.
    """
    if not 0 <= ot_books <= len(versification):
        raise ValueError(f"ot_books={ot_books} is out of range; allowed [0, {len(versification)}]")
    base = Path(module_dir)
    if not base.is_dir():
        raise FileNotFoundError(f"zText module folder {base} does not exist")
    verses: list[Verse] = []
    found = False
    for testament, books in (("ot", versification[:ot_books]), ("nt", versification[ot_books:])):
        if not any((base / f"{testament}.{e}").exists() for e in ("bzs", "bzv", "bzz")):
            continue
        found = True
        slots = read_testament_slots(base, testament)
        refs = slot_refs(books)
        if len(slots) != len(refs):
            raise ValueError(
                f"{base / (testament + '.bzv')}: {len(slots)} slots, but the versification "
                f"expects {len(refs)} (2 + books + chapters + verses); wrong versification?"
            )
        verses.extend(
            Verse(*ref, osis_to_text(s), osis_lemmas(s)) for ref, s in zip(refs, slots) if ref is not None
        )
    if not found:
        raise FileNotFoundError(f"{base} holds no zText files (ot.bzs/bzv/bzz or nt.bzs/bzv/bzz)")
    return verses


def find_module(name: str, root: str | Path = SWORD_ROOT) -> Path:
    """The data folder of the installed module ``name``, from ``DataPath`` in its conf file."""
    root = Path(root)
    confs = sorted((root / "mods.d").glob("*.conf")) if (root / "mods.d").is_dir() else []
    for conf in confs:
        lines = conf.read_text(encoding="utf-8", errors="replace").splitlines()
        if not any(line.strip() == f"[{name}]" for line in lines):
            continue
        fields = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
        if fields.get("ModDrv", "").strip().lower() != "ztext":
            raise ValueError(f"{conf}: ModDrv={fields.get('ModDrv')!r}; only zText modules are read")
        if fields.get("CompressType", "ZIP").strip().upper() != "ZIP":
            raise ValueError(f"{conf}: CompressType={fields.get('CompressType')!r}; only ZIP is read")
        if fields.get("Versification", "KJV").strip() != "KJV":
            raise ValueError(f"{conf}: Versification={fields.get('Versification')!r}; only KJV is known")
        data_path = root / fields.get("DataPath", "").strip()
        if not data_path.is_dir():
            raise FileNotFoundError(f"{conf}: DataPath {data_path} does not exist; reinstall: {INSTALL_HINT}")
        return data_path
    raise FileNotFoundError(
        f"SWORD module {name!r} is not installed under {root} (no conf in {root / 'mods.d'}); "
        f"install it with: {INSTALL_HINT}"
    )


# ----------------------------------------------------------------------------- pairs

_WORD = re.compile(r"[^\W\d_]+")


def restore_opening_case(verses: list[Verse]) -> list[Verse]:
    """Undo the printed drop capital of RV1909: verse 1 of each chapter opens with a word in
    capitals ("EN el principio", "Y FUERON acabados", "¡OH Jehová"). The first all-capital word
    of verse 1 takes the form that word has most often in the rest of the text (lower case,
    capitalised, or capitals as in "JAH"), capitalised if it starts a sentence."""
    counts: Counter[str] = Counter()
    for v in verses:
        if v.verse != 1:
            counts.update(_WORD.findall(v.text))
    out = []
    for v in verses:
        match = next(
            (m for m in _WORD.finditer(v.text) if len(m.group()) > 1 and m.group().isupper()), None
        )
        if v.verse != 1 or match is None:
            out.append(v)
            continue
        word = match.group()
        forms = (word.lower(), word.capitalize(), word)
        best = max(forms, key=lambda f: counts[f])  # ties: lower case, the first form
        prefix = v.text[: match.start()].rstrip(" ¡¿(")
        if (not prefix or prefix[-1] in ".!?") and best == word.lower():
            best = word.capitalize()
        text = v.text[: match.start()] + best + v.text[match.end() :]
        out.append(Verse(v.book, v.chapter, v.verse, text, v.lemmas))
    return out


def lemma_overlap(a: frozenset[str], b: frozenset[str]) -> float | None:
    """Share of the smaller set's Strong's numbers found in the other; None if a side has none."""
    if not a or not b:
        return None
    return len(a & b) / min(len(a), len(b))


def lemma_dice(a: frozenset[str], b: frozenset[str]) -> float:
    """Dice agreement of two Strong's sets: 1 = the same words, 0 = none shared."""
    return 2 * len(a & b) / (len(a) + len(b)) if a or b else 0.0


def _lengths_agree(a: str, b: str, max_ratio: float) -> bool:
    # +20 characters on both sides so that short verses ("No adulterarás.") are not judged
    # by a ratio of two small numbers.
    ratio = (len(a) + 20) / (len(b) + 20)
    return 1 / max_ratio <= ratio <= max_ratio


def align_verses(
    en: list[Verse],
    es: list[Verse],
    window: int = 3,
    min_agreement: float = 0.5,
    max_length_ratio: float = 2.0,
    move_margin: float = 0.1,
) -> list[tuple[int, int]]:
    """Index pairs (i into ``en``, j into ``es``) holding the same verse, in ``en`` order.

    RV1909 keeps its own verse numbers inside the KJV slots where the two traditions differ
    (KJV Num 12:16 is its Num 13:1, KJV Jonah 1:17 its Jonah 2:1, Job 38:39-41 its Job 39:1-3,
    and a few more), so whole chapters are shifted by a slot or more there. Strong's numbers
    tell: Spanish slot j moves to the English slot within ``window`` whose Dice agreement is
    highest, if that agreement is at least ``min_agreement`` and beats slot j's own by
    ``move_margin`` (a margin, because neighbouring verses in formulaic passages share many
    numbers). Otherwise it stays with English slot j when at least ``min_agreement`` of the
    smaller verse's numbers appear in the other (or a side has none to compare). Slots that
    agree with no English verse (merged or split verses) and empty slots are left
    out, and so are pairs whose lengths differ more than ``max_length_ratio``: where RV1909 has
    more verses in a chapter than KJV, the surplus is packed into the chapter's last slot
    (KJV Job 39:30 holds RV1909 Job 39:30-35), and its Strong's numbers then contain the
    English verse's. Each English slot is used at most once, by the Spanish slot agreeing best.
    """
    if len(en) != len(es):
        raise ValueError(f"the modules differ in length: {len(en)} and {len(es)} verse slots")
    candidates: list[tuple[float, int, int]] = []  # (agreement, i, j)
    for j, target in enumerate(es):
        if not target.text:
            continue
        here = lemma_dice(en[j].lemmas, target.lemmas)
        best: tuple[float, int, int] | None = None
        for i in range(max(0, j - window), min(len(en), j + window + 1)):
            if i == j or not en[i].lemmas or not _lengths_agree(en[i].text, target.text, max_length_ratio):
                continue
            score = lemma_dice(en[i].lemmas, target.lemmas)
            if score >= max(min_agreement, here + move_margin) and (
                best is None or (score, -abs(i - j)) > (best[0], -abs(best[1] - j))
            ):
                best = (score, i, j)
        if best is not None:
            candidates.append(best)
            continue
        share = lemma_overlap(en[j].lemmas, target.lemmas)
        if (share is None or share >= min_agreement) and en[j].text and _lengths_agree(
            en[j].text, target.text, max_length_ratio
        ):
            candidates.append((here, j, j))
    used: set[int] = set()
    kept = []
    for _score, i, j in sorted(candidates, key=lambda c: (-c[0], c[1], c[2])):
        if i not in used:
            used.add(i)
            kept.append((i, j))
    return sorted(kept)


_PSALM_119_LETTER = re.compile(r"^[A-Z]+\.?\s+")


def _drop_psalm_119_letters(verses: list[Verse]) -> list[Verse]:
    """RV1909 prints Psalm 119's Hebrew letter ("ALEPH.", "BETH") inside verses 1, 9, 17, ...;
    KJV marks it as a non-canonical title, which osis_to_text drops. Drop it here too."""
    return [
        Verse(v.book, v.chapter, v.verse, _PSALM_119_LETTER.sub("", v.text), v.lemmas)
        if (v.book, v.chapter) == ("Ps", 119) and v.verse % 8 == 1
        else v
        for v in verses
    ]


@functools.lru_cache(maxsize=2)
def _kjv_rv1909_pairs(root: str) -> tuple[Pair, ...]:
    en = read_ztext(find_module(KJV_MODULE, root))
    es = read_ztext(find_module(RV1909_MODULE, root))
    es = restore_opening_case(_drop_psalm_119_letters(es))
    return tuple(Pair(en[i].ref, en[i].text, es[j].text) for i, j in align_verses(en, es))


def kjv_rv1909_pairs(root: str | Path = SWORD_ROOT) -> list[Pair]:
    """(reference, King James English, Reina-Valera 1909 Spanish) for every verse both modules
    fill, in canonical order. Raises FileNotFoundError naming the apt packages if missing."""
    return list(_kjv_rv1909_pairs(str(root)))


def split_by_chapter(
    pairs: list[Pair],
    seed: int = 0,
    val_chapters: int = 30,
    test_chapters: int = 40,
) -> dict[str, list[Pair]]:
    """A fixed train / validation / test split by whole chapters.

    The distinct (book, chapter) keys, in canonical order of first appearance, are shuffled by
    ``random.Random(seed)``; the first ``test_chapters`` go to test, the next ``val_chapters`` to
    validation, the rest to train. Each split keeps the pairs' original order. With the defaults
    on the KJV-RV1909 pairs this is the split the translation recipe reports on.
    """
    for name, value in (("val_chapters", val_chapters), ("test_chapters", test_chapters)):
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"{name}={value!r} is not allowed; expected an int >= 0")
    chapters = list(dict.fromkeys(p.ref[:2] for p in pairs))
    if val_chapters + test_chapters >= len(chapters):
        raise ValueError(
            f"val_chapters + test_chapters = {val_chapters + test_chapters} leaves no training "
            f"chapter; the pairs span {len(chapters)} chapters"
        )
    order = chapters[:]
    random.Random(seed).shuffle(order)
    test = set(order[:test_chapters])
    val = set(order[test_chapters : test_chapters + val_chapters])
    split: dict[str, list[Pair]] = {"train": [], "validation": [], "test": []}
    for p in pairs:
        key = p.ref[:2]
        split["test" if key in test else "validation" if key in val else "train"].append(p)
    return split
