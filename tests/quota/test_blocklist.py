"""quota.blocklist: whole-word matching on what a reader sees, and blank prompts."""

from __future__ import annotations

import pytest

from quota.blocklist import blocked_word, is_blank, normalise, skeleton

HITS = [
    # prompt, blocked words, expected hit
    ("a cat on a mat", ["cat"], "cat"),
    ("A CAT", ["cat"], "cat"),
    ("a Cat", ["CAT"], "CAT"),  # a word listed before normalise existed still matches
    ("a c\u200bat", ["cat"], "cat"),  # zero-width space
    ("a c\u200cat", ["cat"], "cat"),  # zero-width non-joiner
    ("a c\u200dat", ["cat"], "cat"),  # zero-width joiner
    ("a c\u2060at", ["cat"], "cat"),  # word joiner
    ("a \ufeffcat", ["cat"], "cat"),  # BOM
    ("a c\u00adat", ["cat"], "cat"),  # soft hyphen
    ("a c\u202eta\u202c", ["cat"], None),  # bidi override: shows "cat" but stores "cta"
    ("a c\ufe0fat", ["cat"], "cat"),  # variation selector
    ("a ｃａｔ", ["cat"], "cat"),  # fullwidth
    ("a 𝐜𝐚𝐭", ["cat"], "cat"),  # mathematical bold
    ("a сat", ["cat"], "cat"),  # Cyrillic с
    ("a сат", ["cat"], "cat"),  # Cyrillic с, а, т
    ("a САТ", ["cat"], "cat"),  # Cyrillic capitals
    ("a ϲατ", ["cat"], "cat"),  # Greek lunate sigma, alpha, tau
    ("a càt", ["cat"], "cat"),  # accent on a Latin letter
    ("a c\u0301at", ["cat"], "cat"),  # combining accent
    ("a cat", ["сat"], "сat"),  # a look-alike in the blocked word works both ways
    ("рорѕ", ["pops"], "pops"),  # Cyrillic р, о, ѕ
    ("хуіј", ["xyij"], "xyij"),
    ("мкнв", ["mkhb"], "mkhb"),
    ("ροεικτι", ["poeikti"], "poeikti"),
    ("ν", ["v"], "v"),
    ("a red\u00a0castle", ["red castle"], "red castle"),  # no-break space
    ("a red   castle", ["red castle"], "red castle"),
    ("a red\u200b castle", ["red castle"], "red castle"),
    ("Straße", ["strasse"], "strasse"),  # case folding
    ("кот", ["кот"], "кот"),  # a Cyrillic word blocks itself
    ("мой кот", ["мои"], None),  # й is its own letter, not и with a mark
    ("the cat.", ["cat"], "cat"),
    ("(cat)", ["cat"], "cat"),
    # whole words only
    ("a castlewood table", ["castle"], None),
    ("a castle\u200bwood table", ["castle"], None),  # reads "castlewood"
    ("a сastlewood table", ["castle"], None),
    ("concatenate", ["cat"], None),
    ("cat_fish", ["cat"], None),
    ("a dog", ["cat", "bird"], None),
    ("a dog", [], None),
    ("a dog", ["\u200b"], None),  # a word that folds to nothing blocks nothing
    ("a dog and a cat", ["bird", "cat", "dog"], "cat"),  # first listed word found
]


@pytest.mark.parametrize(("prompt", "words", "expected"), HITS)
def test_blocked_word(prompt: str, words: list[str], expected: str | None) -> None:
    assert blocked_word(prompt, words) == expected


def test_regex_characters_in_words_are_literal() -> None:
    assert blocked_word("a c.t", ["c.t"]) == "c.t"
    assert blocked_word("a cat", ["c.t"]) is None
    assert blocked_word("a (b) c", ["(b)"]) == "(b)"
    assert blocked_word("a(b)c", ["(b)"]) is None  # whole words: not inside one
    assert blocked_word("x a+b y", ["a+b"]) == "a+b"


@pytest.mark.parametrize(
    ("word", "stored"),
    [
        ("Castle", "castle"),
        ("  Red   Castle ", "red castle"),
        ("c\u200bat", "cat"),
        ("ｃａｔ", "cat"),
        ("Кот", "кот"),  # stays readable in its own script
        ("\u200b\u200d", ""),  # nothing: the moderator's command refuses it
    ],
)
def test_normalise(word: str, stored: str) -> None:
    assert normalise(word) == stored


def test_a_normalised_word_still_matches_its_evasions() -> None:
    word = normalise("CAT")
    for prompt in ("cat", "c\u200bat", "ｃａｔ", "сat", "ϲατ"):
        assert blocked_word(prompt, [word]) == word


@pytest.mark.parametrize(
    ("text", "blank"),
    [
        ("", True),
        ("   \n\t", True),
        ("\u200b\u200c\u200d\u2060\ufeff", True),
        ("\u00a0\u3000\u2028", True),  # no-break, ideographic space, line separator
        ("\u3164\u115f\uffa0\u2800", True),  # Hangul fillers, braille blank
        ("\u034f\ufe0f\u0301", True),  # joiner, variation selector, lone accent
        ("\x00\x07", True),
        ("\u202e\u202c", True),  # bidi controls
        ("a", False),
        ("\u200ba\u200b", False),
        ("🙂", False),
        ("猫", False),
        (".", False),
        ("é", False),
    ],
)
def test_is_blank(text: str, blank: bool) -> None:
    assert is_blank(text) is blank


def test_skeleton_shapes() -> None:
    assert skeleton("  Ｃａｔ\u200b  ON\u00a0a ΜΑΤ ") == "cat on a mat"
