"""Prompt words a guild refuses, matched as whole words on what a reader sees.

A prompt is compared in its *skeleton* form, so the usual evasions still hit a blocked word:
compatibility forms (fullwidth ｃａｔ, ligatures, 𝐜𝐚𝐭) folded by NFKC; invisible characters
(zero-width space and joiners, word joiner, BOM, soft hyphen, bidi controls, variation
selectors, Hangul fillers) removed; Cyrillic and Greek letters that look Latin (с, а, о, ν,
ρ...) folded to the Latin letter; case folded; accents on Latin letters dropped. The blocked
word is reduced the same way, so "сat" (Cyrillic с) blocks "cat" and the other way round.
Matching stays whole-word: "castle" does not block "castlewood".
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

# Invisible characters that are not in category Cf (which is removed as a whole).
_INVISIBLE_EXTRA = frozenset(
    "\u034f"  # combining grapheme joiner
    "\u115f\u1160\u3164\uffa0"  # Hangul fillers
    "\u17b4\u17b5"  # Khmer inherent vowels
    "\u180b\u180c\u180d\u180f"  # Mongolian variation selectors
    "\u2800"  # braille pattern blank
)
_VARIATION_SELECTORS = (range(0xFE00, 0xFE10), range(0xE0100, 0xE01F0))

# Letters from other scripts that a reader takes for a Latin one, folded to it. Applied after
# NFKC/NFD and before case folding, so capitals that look Latin (Greek Η, Cyrillic В) fold too.
_LOOK_ALIKES = str.maketrans(
    {
        # Cyrillic
        "А": "a", "а": "a", "В": "b", "в": "b", "Ь": "b", "ь": "b", "С": "c", "с": "c",
        "Ԁ": "d", "ԁ": "d", "Е": "e", "е": "e", "Һ": "h", "һ": "h", "Н": "h", "н": "h",
        "І": "i", "і": "i", "Ј": "j", "ј": "j", "К": "k", "к": "k", "Ӏ": "l", "ӏ": "l",
        "М": "m", "м": "m", "О": "o", "о": "o", "Р": "p", "р": "p", "Ԛ": "q", "ԛ": "q",
        "Ѕ": "s", "ѕ": "s", "Т": "t", "т": "t", "У": "y", "у": "y", "Ү": "y", "ү": "y",
        "Ԝ": "w", "ԝ": "w", "Х": "x", "х": "x",
        # Greek
        "Α": "a", "α": "a", "Β": "b", "β": "b", "Ϲ": "c", "ϲ": "c", "Ε": "e", "ε": "e",
        "Η": "h", "η": "n", "Ι": "i", "ι": "i", "ϳ": "j", "Κ": "k", "κ": "k", "Μ": "m",
        "Ν": "n", "ν": "v", "Ο": "o", "ο": "o", "Ρ": "p", "ρ": "p", "Τ": "t", "τ": "t",
        "Υ": "y", "υ": "u", "Χ": "x", "χ": "x", "Ζ": "z", "ω": "w",
        # Armenian and Latin variants
        "օ": "o", "ս": "u", "ı": "i", "ȷ": "j", "ɡ": "g", "ɑ": "a", "ɩ": "i",
    }
)  # fmt: skip


def _invisible(char: str) -> bool:
    """Characters that show nothing by themselves and do not separate words."""
    if char in _INVISIBLE_EXTRA or unicodedata.category(char) == "Cf":
        return True
    code = ord(char)
    return any(code in block for block in _VARIATION_SELECTORS)


def _without_invisible(text: str) -> str:
    return "".join(char for char in text if not _invisible(char))


def _latin(char: str) -> bool:
    code = ord(char)
    return code < 0x0250 or 0x1E00 <= code < 0x1F00


def _without_latin_accents(text: str) -> str:
    """Drop combining marks on Latin letters (é → e, and a look-alike ё → e once folded);
    marks in other scripts (Cyrillic й, Devanagari vowel signs) are part of the letter."""
    out: list[str] = []
    on_latin = False
    for char in unicodedata.normalize("NFD", text):
        if unicodedata.combining(char):
            if not on_latin:
                out.append(char)
            continue
        on_latin = _latin(char)
        out.append(char)
    return unicodedata.normalize("NFC", "".join(out))


def skeleton(text: str) -> str:
    """`text` as the blocklist compares it: NFKC, invisible characters removed, look-alike
    letters folded to Latin, case folded, accents on Latin letters dropped, whitespace runs
    made one space."""
    # Folded before NFKC too: NFKC turns some look-alikes (lunate sigma ϲ) into plain letters.
    text = _without_invisible(unicodedata.normalize("NFKC", text.translate(_LOOK_ALIKES)))
    text = unicodedata.normalize("NFD", text).translate(_LOOK_ALIKES).casefold()
    return " ".join(_without_latin_accents(text).split())


def normalise(word: str) -> str:
    """A word or phrase as a moderator's list stores it: NFKC, invisible characters removed,
    lower case, single spaces. Still readable in its own script (matching folds it further)."""
    text = _without_invisible(unicodedata.normalize("NFKC", word))
    return " ".join(text.lower().split())


@lru_cache(maxsize=4096)
def _pattern(word: str) -> re.Pattern[str] | None:
    folded = skeleton(word)
    if not folded:
        return None
    return re.compile(rf"(?<!\w){re.escape(folded)}(?!\w)")


def blocked_word(prompt: str, words: list[str]) -> str | None:
    """The first of `words` found in `prompt` as a whole word or phrase, compared as
    skeletons (see `skeleton`), or None. Returns the word as listed, for the refusal."""
    if not words:
        return None  # most servers list none: the prompt's skeleton is not worth making
    text = skeleton(prompt)
    for word in words:
        pattern = _pattern(word)
        if pattern is not None and pattern.search(text):
            return word
    return None


def is_blank(text: str) -> bool:
    """True when nothing visible remains once whitespace, format characters (zero-width
    space, joiners, BOM...), other invisible fillers and lone combining marks are removed."""
    for char in unicodedata.normalize("NFKC", text):
        if char.isspace() or _invisible(char):
            continue
        category = unicodedata.category(char)
        if category[0] in "ZM" or category == "Cc":
            continue
        return False
    return True
