"""Whole prompts with each phrase marked in []: parsing, token layout, and the methods that read them (PIE-Bench's
prompts for P2P, InfEdit, MasaCtrl, FPE) while ALE-Edit keeps to its phrases."""

import re

import numpy as np
import pytest
import torch
from PIL import Image

import ale_edit.editor as editor_module
from ale_edit.editor import EditRequest, Editor
from ale_edit.errors import EditInputError
from ale_edit.methods.infedit import target_phrase_words
from ale_edit.methods.p2p import align_prompts, blend_words
from ale_edit.prompts import check_marked_prompt, mark_span, marked_phrases, marked_spans, unmark
from ale_edit.settings import EditSettings
from ale_edit.text import edit_texts, encode_prompts, layout_marked_prompt

PAIR = [("cat", "dog")]
PROMPTS = ("a [cat] next to a cat toy", "a [dog] next to a cat toy")


@pytest.fixture(scope="module")
def tok(tiny_models):
    return tiny_models.tokenizer


def test_marked_spans_and_unmark():
    assert marked_spans("a slanted [rusty mountain bicycle] on the [road]") == (
        "a slanted rusty mountain bicycle on the road", ((10, 32), (40, 44)))
    assert unmark("a [red] heart") == "a red heart"
    assert marked_phrases("[a] and [b c]") == ("a", "b c")
    assert mark_span("a red heart", 2, 11) == "a [red heart]"


@pytest.mark.parametrize("text,message", [
    ("a [cat [on] mat]", "nested"), ("a cat] on", "without '['"), ("a [cat on", "left open"), ("a [ ] cat", "empty"),
])
def test_malformed_marks_are_named(text, message):
    with pytest.raises(EditInputError, match=re.escape(message)):
        marked_spans(text)


def test_check_marked_prompt_wants_the_phrases_in_order():
    check_marked_prompt("[a] x [b]", ["a", "b"], "source")
    with pytest.raises(EditInputError, match=r"marks \['b', 'a'\], the edit's target phrases are \['a', 'b'\]"):
        check_marked_prompt("[b] x [a]", ["a", "b"], "target")


def test_a_marked_phrase_is_placed_where_it_is_marked_not_at_its_first_match(tok):
    layout = layout_marked_prompt(tok, "a cat toy next to a [cat]")
    ids = tok("a cat toy next to a cat", add_special_tokens=False).input_ids
    assert layout.text == "a cat toy next to a cat" and layout.phrases == ("cat",)
    assert layout.spans == ((len(ids), len(ids) + 1),)  # the last token, not the second
    assert list(layout.input_ids) == [tok.bos_token_id, *ids, tok.eos_token_id]


def test_edit_texts_whole_prompts_or_joined_phrases():
    assert edit_texts(PAIR, PROMPTS) == ("a cat next to a cat toy", "a dog next to a cat toy")
    assert edit_texts([("cup", "gold cup"), ("book", "red book")]) == ("cup and book", "gold cup and red book")


def test_p2p_aligns_and_blends_on_the_whole_prompts(tok):
    replace = align_prompts(tok, PAIR, prompts=PROMPTS)
    assert (replace.mode, replace.source_prompt, replace.target_prompt) == ("replace", *edit_texts(PAIR, PROMPTS))
    refine = align_prompts(tok, [("heart", "pink heart")], prompts=("a red [heart]", "a [pink heart] and a rose"))
    assert refine.mode == "refine"  # 3 words against 6: P2P's own word-count check on the prompts
    words = blend_words(tok, PAIR, prompts=PROMPTS)
    assert torch.nonzero(words[0]).flatten().tolist() == [2] and torch.nonzero(words[1]).flatten().tolist() == [2]
    local = target_phrase_words(tok, [("heart", "pink heart")], prompts=("a red [heart]", "a [pink heart] and a rose"))
    assert torch.nonzero(local).flatten().tolist() == [2, 3]


@pytest.mark.parametrize("prompts,message", [
    (("a [cat]", "a dog"), "marks \\[\\], the edit's target phrases are \\['dog'\\]"),
    (("a [kitten]", "a [dog]"), "marks \\['kitten'\\], the edit's source phrases are \\['cat'\\]"),
    (("a [cat]",), "prompts must be"),
])
def test_bad_prompts_are_named_before_editing(tiny_models, prompts, message):
    image = Image.new("RGB", (64, 64))
    editor = Editor(tiny_models, EditSettings(size=64, steps=2, method="p2p"), progress=False)
    with pytest.raises(EditInputError, match=message):
        editor.edit(EditRequest(image, PAIR, prompts=prompts))


@pytest.mark.parametrize("method,source", [("p2p", True), ("infedit", True), ("masactrl", False), ("fpe", False)])
def test_whole_prompt_methods_are_conditioned_on_the_whole_prompts(tiny_models, monkeypatch, method, source):
    captured = {}
    original = editor_module.virtual_inversion

    def wrapped(unet, scheduler, inputs, controller, **kw):
        captured["inputs"] = inputs
        return original(unet, scheduler, inputs, controller, **kw)

    monkeypatch.setattr(editor_module, "virtual_inversion", wrapped)
    image = Image.new("RGB", (64, 64), (120, 60, 30))
    result = Editor(tiny_models, EditSettings(size=64, steps=2, method=method), progress=False).edit(
        EditRequest(image, PAIR, prompts=PROMPTS))
    texts = [edit_texts(PAIR, PROMPTS)[0] if source else "", edit_texts(PAIR, PROMPTS)[1]]
    expected = encode_prompts(tiny_models.tokenizer, tiny_models.text_encoder, texts)
    inputs = captured["inputs"]
    assert torch.equal(inputs.source_cond[0], expected[0]) and torch.equal(inputs.target_cond[0], expected[1])
    assert result.record["prompts"] == list(PROMPTS)


def test_ale_keeps_to_its_phrases_whatever_the_prompts(tiny_models):
    image = Image.new("RGB", (64, 64), (120, 60, 30))
    mask = {"cat": np.pad(np.ones((32, 32), bool), 16)}
    editor = Editor(tiny_models, EditSettings(size=64, steps=2), progress=False)
    plain = editor.edit(EditRequest(image, PAIR, mask))
    whole = editor.edit(EditRequest(image, PAIR, mask, prompts=PROMPTS))
    assert np.array_equal(np.asarray(plain.image), np.asarray(whole.image))
    assert "prompts" not in plain.record and whole.record["prompts"] == list(PROMPTS)
