"""Prompt words a guild refuses: matched whole-word and case-insensitively."""

from __future__ import annotations

import re


def normalise(word: str) -> str:
    return " ".join(word.lower().split())


def blocked_word(prompt: str, words: list[str]) -> str | None:
    """The first blocked word or phrase found in `prompt`, or None."""
    text = prompt.lower()
    for word in words:
        if re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text):
            return word
    return None
