"""Whole prompts with each edited phrase marked: ``"a slanted [rusty mountain bicycle] on the road"``.

An edit is its (source phrase, target phrase) pairs; an edit may also carry the whole source and target prompts
the phrases were taken from (PIE-Bench's prompts, for the baselines built for whole-prompt editing). In such a
prompt the phrase of each pair stands in square brackets, in pair order, so that every method places the phrase by
its marked position, never by searching the prompt for its words. The text a model reads is the prompt without
the brackets (``unmark``), as PIE-Bench's evaluation strips its own brackets.

Plain string functions: nothing here loads a tokenizer or a model.
"""

from __future__ import annotations

from typing import Sequence

from .errors import EditInputError

MARK_OPEN, MARK_CLOSE = "[", "]"


def unmark(text: str) -> str:
    """``text`` without its brackets (PIE-Bench's ``.replace("[", "").replace("]", "")``)."""
    return text.replace(MARK_OPEN, "").replace(MARK_CLOSE, "")


def marked_spans(marked: str) -> tuple[str, tuple[tuple[int, int], ...]]:
    """The unmarked text of ``marked`` and the [start, end) character span of each bracketed phrase in it.

    Raises ``EditInputError`` for a bracket left open or closed without opening, nested brackets, or an empty
    (or blank) phrase.
    """
    plain: list[str] = []
    spans: list[tuple[int, int]] = []
    start: int | None = None
    for ch in marked:
        if ch == MARK_OPEN:
            if start is not None:
                raise EditInputError(f"nested '[' in the prompt {marked!r}: a phrase is marked once")
            start = len(plain)
        elif ch == MARK_CLOSE:
            if start is None:
                raise EditInputError(f"']' without '[' in the prompt {marked!r}")
            if not "".join(plain[start:]).strip():
                raise EditInputError(f"an empty phrase is marked in the prompt {marked!r}")
            spans.append((start, len(plain)))
            start = None
        else:
            plain.append(ch)
    if start is not None:
        raise EditInputError(f"'[' left open in the prompt {marked!r}")
    return "".join(plain), tuple(spans)


def marked_phrases(marked: str) -> tuple[str, ...]:
    """The bracketed phrases of ``marked``, in order."""
    plain, spans = marked_spans(marked)
    return tuple(plain[a:b] for a, b in spans)


def mark_span(text: str, start: int, end: int) -> str:
    """``text`` with its characters [start, end) in brackets."""
    if not 0 <= start < end <= len(text):
        raise ValueError(f"span [{start}, {end}) is not inside a text of {len(text)} characters")
    return f"{text[:start]}{MARK_OPEN}{text[start:end]}{MARK_CLOSE}{text[end:]}"


def check_marked_prompt(marked: str, phrases: Sequence[str], which: str) -> None:
    """Raise ``EditInputError`` unless ``marked`` marks exactly ``phrases``, in order (``which``: "source" or
    "target", for the message)."""
    if not isinstance(marked, str) or not marked.strip():
        raise EditInputError(f"the {which} prompt must be a non-empty string, got {marked!r}")
    found = marked_phrases(marked)
    if list(found) != list(phrases):
        raise EditInputError(f"the {which} prompt {marked!r} marks {list(found)}, the edit's {which} phrases are "
                             f"{list(phrases)}: each phrase in [], in pair order")
