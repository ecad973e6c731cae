"""Prompts of an edit: the phrases joined with " and ", each phrase's own token positions, and their encodings.

The base prompt joins the phrases with " and "; E(p) is the CLIP text encoder's 77 x D output for prompt p.
Every method reads the phrases' positions from here (ALE's ORE, P2P's and InfEdit's word sets), never by first
match of a word. An edit that carries whole prompts (PIE-Bench's, each phrase marked in [], ``ale_edit.prompts``)
is laid out from those instead (``edit_layouts``, ``edit_texts``) for the methods that read whole prompts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .errors import EditInputError, PromptTooLongError
from .prompts import marked_spans, unmark
from .tokenizer import clip_tokenizer

JOINER = " and "

@dataclass(frozen=True)
class PromptLayout:
    """A prompt joined from phrases, with each phrase's token positions (BOS at position 0)."""

    phrases: tuple[str, ...]
    text: str
    input_ids: tuple[int, ...]  # BOS, tokens, EOS; unpadded
    spans: tuple[tuple[int, int], ...]  # [start, end) of each phrase in input_ids

    @property
    def eos_index(self) -> int:
        return len(self.input_ids) - 1

    def phrase_length(self, i: int) -> int:
        start, end = self.spans[i]
        return end - start


def _phrase_tokens(tokenizer, phrase: str) -> list[int]:
    return list(tokenizer(phrase, add_special_tokens=False).input_ids)


def check_length(tokenizer, text: str, ids: Sequence[int] | None = None) -> list[int]:
    """The token ids of ``text`` with BOS/EOS (``ids`` when already known); ``PromptTooLongError`` naming the
    prompt and its length when they exceed the tokenizer's (the text encoder's) 77."""
    if ids is None:  # verbose=False: the length is named here, once, not also in transformers' own warning
        ids = tokenizer(text, add_special_tokens=True, truncation=False, verbose=False).input_ids
    ids = list(ids)
    if len(ids) > tokenizer.model_max_length:
        raise PromptTooLongError(f"prompt {text!r} is {len(ids)} tokens with BOS/EOS; the text encoder takes at most "
                                 f"{tokenizer.model_max_length}")
    return ids


def layout_prompt(tokenizer, phrases: Sequence[str], joiner: str = JOINER) -> PromptLayout:
    """Join ``phrases`` and place each at its own token positions (never by first match: equal phrases and
    phrases sharing words each get their own span).

    Raises ``EditInputError`` when a phrase has no tokens or its tokens do not appear as a contiguous run of the
    joined prompt's tokenization, and ``PromptTooLongError`` when the prompt exceeds the tokenizer's length.
    """
    if not phrases:
        raise EditInputError("no phrases to join into a prompt")
    text = joiner.join(phrases)
    joiner_ids = _phrase_tokens(tokenizer, joiner.strip()) if joiner.strip() else []
    pieces: list[int] = []
    spans = []
    offset = 1  # after BOS
    for i, phrase in enumerate(phrases):
        ids = _phrase_tokens(tokenizer, phrase)
        if not ids:
            raise EditInputError(f"phrase {phrase!r} has no tokens: the tokenizer cannot place it")
        if i > 0:
            pieces += joiner_ids
            offset += len(joiner_ids)
        spans.append((offset, offset + len(ids)))
        pieces += ids
        offset += len(ids)
    joined_ids = check_length(tokenizer, text)
    if joined_ids[1:-1] != pieces:
        raise EditInputError(
            f"the phrases {list(phrases)!r} cannot be located in the tokens of {text!r}: tokenizing them one by one "
            f"gives other tokens than tokenizing the joined prompt"
        )
    return PromptLayout(tuple(phrases), text, tuple(joined_ids), tuple(spans))


def layout_marked_prompt(tokenizer, marked: str) -> PromptLayout:
    """A whole prompt with its phrases marked in [] (``ale_edit.prompts``), laid out: the text without the marks,
    each marked phrase at its own token positions.

    The text is tokenized piece by piece (before, each phrase, between, after) and the pieces must give the tokens
    of the whole text, so every span is exact; otherwise, or when the prompt is too long, the errors of
    ``layout_prompt``.
    """
    text, char_spans = marked_spans(marked)
    if not char_spans:
        raise EditInputError(f"no phrase is marked in [] in the prompt {marked!r}")
    pieces: list[int] = []
    spans = []
    cut = 0
    for start, end in char_spans:
        pieces += _phrase_tokens(tokenizer, text[cut:start])
        ids = _phrase_tokens(tokenizer, text[start:end])
        if not ids:
            raise EditInputError(f"phrase {text[start:end]!r} has no tokens: the tokenizer cannot place it")
        spans.append((1 + len(pieces), 1 + len(pieces) + len(ids)))  # after BOS
        pieces += ids
        cut = end
    pieces += _phrase_tokens(tokenizer, text[cut:])
    whole = check_length(tokenizer, text)
    if whole[1:-1] != pieces:
        raise EditInputError(f"the marked phrases of {marked!r} cannot be located in the tokens of {text!r}: "
                             f"tokenizing the pieces one by one gives other tokens than tokenizing the prompt")
    return PromptLayout(tuple(text[a:b] for a, b in char_spans), text, tuple(whole), tuple(spans))


def edit_texts(pairs: Sequence[tuple[str, str]], prompts: tuple[str, str] | None = None) -> tuple[str, str]:
    """The source and target prompt an edit is conditioned on: its whole prompts without their marks when it has
    them, else its joined source and target phrases."""
    if prompts is not None:
        return unmark(prompts[0]), unmark(prompts[1])
    return joined_prompt([s for s, _ in pairs]), joined_prompt([t for _, t in pairs])


def edit_layouts(tokenizer, pairs: Sequence[tuple[str, str]],
                 prompts: tuple[str, str] | None = None) -> tuple[PromptLayout, PromptLayout]:
    """The source and target prompt of an edit with each phrase's token positions: its whole marked prompts when
    it has them, else its joined phrases."""
    if prompts is not None:
        return layout_marked_prompt(tokenizer, prompts[0]), layout_marked_prompt(tokenizer, prompts[1])
    return layout_prompt(tokenizer, [s for s, _ in pairs]), layout_prompt(tokenizer, [t for _, t in pairs])


@torch.no_grad()
def encode_prompts(tokenizer, text_encoder, prompts: Sequence[str]) -> torch.Tensor:
    """E(p) for each prompt: the text encoder's last hidden state over 77 padded tokens, shape (n, 77, D)."""
    for p in prompts:
        check_length(tokenizer, p)
    ids = tokenizer(
        list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
        return_tensors="pt",
    ).input_ids.to(text_encoder.device)
    return text_encoder(ids)[0]


def check_edit_lengths(pairs: Sequence[tuple[str, str]], prompts: tuple[str, str] | None = None,
                       tokenizer=None) -> None:
    """``PromptTooLongError`` when an edit's source or target prompt (``edit_texts``) does not fit the text
    encoder, found with the tokenizer alone: before any model loads. ``tokenizer``: SD 1.x's CLIP tokenizer, built
    offline (``tokenizer.clip_tokenizer``), when not given."""
    tokenizer = tokenizer or clip_tokenizer()
    for text in edit_texts(pairs, prompts):
        check_length(tokenizer, text)


def joined_prompt(phrases: Sequence[str]) -> str:
    """The base prompt of ``phrases``: "a and b and c"."""
    return JOINER.join(phrases)
