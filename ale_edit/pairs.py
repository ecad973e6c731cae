"""An edit's (source, target) pairs as a person types them, read the same way by the command line (``-e``) and the
studio, and the file a source phrase's mask is saved to.

A pair is ``SOURCE=TARGET`` (the command line's form) or ``source -> target`` (the paper's). A line holding both
separators, or one of them twice, is refused: it is two pairs run together (``ball -> red ballbox=wooden box``) or a
typo, and reading it at the first separator would edit the wrong phrase into a target (and a file name) silently.
"""

from __future__ import annotations

from .errors import EditInputError
from .paths import safe_file_name

ASSIGN, ARROW = "=", "->"


class PairError(EditInputError):
    """A pair (or another ``LEFT=RIGHT`` assignment) that cannot be read; the message names the text."""


def split_assignment(value: str, form: str = "SOURCE=TARGET") -> tuple[str, str]:
    """``"left=right"`` split at the first "=", both sides non-empty after stripping (``--mask SOURCE=FILE``: a file
    name may hold "=")."""
    if ASSIGN not in value:
        raise PairError(f"{value!r} is not of the form {form}")
    left, right = (part.strip() for part in value.split(ASSIGN, 1))
    if not left or not right:
        raise PairError(f"{value!r} has an empty side")
    return left, right


def parse_pair(line: str) -> tuple[str, str]:
    """One pair, ``SOURCE=TARGET`` or ``source -> target``; a line with both separators or either twice is a
    ``PairError`` saying so."""
    arrows, assigns = line.count(ARROW), line.count(ASSIGN)
    if arrows and assigns:
        raise PairError(f"{line!r} holds both '->' and '=': give one pair per line, SOURCE=TARGET or "
                        f"source -> target")
    if arrows > 1 or assigns > 1:
        separator = ARROW if arrows > 1 else ASSIGN
        raise PairError(f"{line!r} holds {separator!r} more than once: give one pair per line, SOURCE=TARGET or "
                        f"source -> target")
    return split_assignment(line.replace(ARROW, ASSIGN) if arrows else line)


def mask_file_name(phrase: str) -> str:
    """ALE-Bench's convention, ``<phrase>_mask.png``, made safe, bounded and unique (``paths.safe_file_name``)."""
    return safe_file_name(phrase, "_mask.png")
