"""Prompt layout: each phrase placed at its own tokens; named errors for what cannot be placed or encoded."""

import pytest

from ale_edit.errors import EditInputError, PromptTooLongError
from ale_edit.text import layout_prompt

PAIRS = [("cup", "cup made of gold"), ("book", "red-colored book"), ("table", "wooden table")]


@pytest.fixture(scope="module")
def tok(tiny_models):
    return tiny_models.tokenizer


def test_layout_places_each_phrase_at_its_own_tokens(tok):
    layout = layout_prompt(tok, [t for _, t in PAIRS])
    assert layout.text == "cup made of gold and red-colored book and wooden table"
    ids = list(layout.input_ids)
    for phrase, (start, end) in zip(layout.phrases, layout.spans):
        assert ids[start:end] == tok(phrase, add_special_tokens=False).input_ids
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert layout.spans[0][0] == 1 and layout.eos_index == len(ids) - 1


def test_equal_and_word_sharing_phrases_get_distinct_spans(tok):
    layout = layout_prompt(tok, ["gold cup", "gold cup", "cup"])
    assert layout.spans == ((1, 3), (4, 6), (7, 8))
    # A first-match search would have placed the third "cup" inside the first phrase.
    assert layout.input_ids[7] == tok("cup", add_special_tokens=False).input_ids[0]


def test_too_long_prompt_is_named(tok):
    long_phrase = " ".join(["red"] * 40)
    with pytest.raises(PromptTooLongError, match="77"):
        layout_prompt(tok, [long_phrase, long_phrase])


def test_phrase_without_tokens_is_named(tok):
    with pytest.raises(EditInputError, match="has no tokens"):
        layout_prompt(tok, ["cup", "   "])
