"""Counts in words: `1 batch`, `2 batches`, `1 row`. Every count dd-build prints goes through
`counted` (or `noun` where the number is printed apart from its noun)."""

from __future__ import annotations

# Nouns whose plural is not the regular one below.
_IRREGULAR = {"was": "were", "is": "are", "this": "these", "it": "they"}


def noun(count: int | None, word: str, plural: str | None = None) -> str:
    """`word` as it agrees with `count`: singular for exactly 1, plural otherwise (also for
    an unknown count: "0 of ? batches")."""
    if count == 1:
        return word
    return plural or _plural(word)


def counted(count: int, word: str, plural: str | None = None) -> str:
    """`1 batch`, `3 batches`, `0 rows`."""
    return f"{count} {noun(count, word, plural)}"


def _plural(word: str) -> str:
    head, _, last = word.rpartition(" ")  # "finished batch" → "finished batches"
    if last in _IRREGULAR:
        plural = _IRREGULAR[last]
    elif last.endswith(("s", "x", "z", "ch", "sh")):
        plural = last + "es"
    elif last.endswith("y") and last[-2:-1] not in ("a", "e", "i", "o", "u", ""):
        plural = last[:-1] + "ies"
    else:
        plural = last + "s"
    return f"{head} {plural}" if head else plural
