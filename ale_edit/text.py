"""Prompts of an edit: the phrases joined with " and ", each phrase's own token positions, and their encodings.

The base prompt joins the phrases with " and "; E(p) is the CLIP text encoder's 77 x D output for prompt p.
Every method reads the phrases' positions from here (ALE's ORE, P2P's and InfEdit's word sets), never by first
match of a word.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .errors import EditInputError, PromptTooLongError

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
    joined_ids = list(tokenizer(text, add_special_tokens=True, truncation=False).input_ids)
    max_length = tokenizer.model_max_length
    if len(joined_ids) > max_length:
        raise PromptTooLongError(
            f"prompt {text!r} is {len(joined_ids)} tokens with BOS/EOS; the text encoder takes at most {max_length}"
        )
    if joined_ids[1:-1] != pieces:
        raise EditInputError(
            f"the phrases {list(phrases)!r} cannot be located in the tokens of {text!r}: tokenizing them one by one "
            f"gives other tokens than tokenizing the joined prompt"
        )
    return PromptLayout(tuple(phrases), text, tuple(joined_ids), tuple(spans))


@torch.no_grad()
def encode_prompts(tokenizer, text_encoder, prompts: Sequence[str]) -> torch.Tensor:
    """E(p) for each prompt: the text encoder's last hidden state over 77 padded tokens, shape (n, 77, D)."""
    for p in prompts:
        n = len(tokenizer(p, truncation=False).input_ids)
        if n > tokenizer.model_max_length:
            raise PromptTooLongError(
                f"prompt {p!r} is {n} tokens with BOS/EOS; the text encoder takes at most {tokenizer.model_max_length}"
            )
    ids = tokenizer(
        list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
        return_tensors="pt",
    ).input_ids.to(text_encoder.device)
    return text_encoder(ids)[0]


def joined_prompt(phrases: Sequence[str]) -> str:
    """The base prompt of ``phrases``: "a and b and c"."""
    return JOINER.join(phrases)
