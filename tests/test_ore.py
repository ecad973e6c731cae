"""ORE: substituted bases, object-restricted embeddings under every EOS treatment and zeroing, the text plan."""

import pytest
import torch

from ale_edit.methods.ale.ore import build_text_plan, object_restricted_embeddings, substituted_base
from ale_edit.text import encode_prompts, layout_prompt

PAIRS = [("cup", "cup made of gold"), ("book", "red-colored book"), ("table", "wooden table")]


def encode(models, prompts):
    return encode_prompts(models.tokenizer, models.text_encoder, prompts)


def test_ore_properties(tiny_models):
    targets = [t for _, t in PAIRS]
    layout = layout_prompt(tiny_models.tokenizer, targets)
    embeds = encode(tiny_models, [layout.text, *targets])
    base, phrases = embeds[0], embeds[1:]
    sub = substituted_base(base, layout, phrases)
    ore = object_restricted_embeddings(sub, layout, phrases)
    eos = layout.eos_index
    for i, (start, end) in enumerate(layout.spans):
        n = end - start
        # Phrase tokens equal the standalone encoding, in the substituted base and in ORE_i.
        assert torch.equal(sub[start:end], phrases[i, 1 : 1 + n])
        assert torch.equal(ore[i, start:end], phrases[i, 1 : 1 + n])
        # Other phrases' tokens are zero.
        for j, (s, e) in enumerate(layout.spans):
            if j != i:
                assert torch.count_nonzero(ore[i, s:e]) == 0
        # From the base's EOS on: phrase i's own EOS and padding, EOS aligned with EOS.
        assert torch.equal(ore[i, eos:], phrases[i, 1 + n : 1 + n + 77 - eos])
        # BOS and the joining "and"s are the base's (Algorithm 1 zeroes only other phrases).
        assert torch.equal(ore[i, 0], base[0])
        and_positions = [layout.spans[0][1], layout.spans[1][1]]
        assert torch.equal(ore[i, and_positions], base[and_positions])
    # The standalone EOS really differs from the base's EOS (else the test above would prove nothing).
    assert not torch.allclose(ore[0, eos], base[eos])


def test_authors_zeroing_also_zeroes_the_joiners(tiny_models):
    targets = [t for _, t in PAIRS[:2]]
    layout = layout_prompt(tiny_models.tokenizer, targets)
    embeds = encode(tiny_models, [layout.text, *targets])
    sub = substituted_base(embeds[0], layout, embeds[1:])
    ore = object_restricted_embeddings(sub, layout, embeds[1:], zeroing="all_but_phrase")
    and_pos = layout.spans[0][1]
    assert torch.count_nonzero(ore[0, and_pos]) == 0 and torch.count_nonzero(ore[1, and_pos]) == 0
    start, end = layout.spans[1]
    assert torch.equal(ore[1, start:end], embeds[2, 1 : 1 + end - start])


@pytest.mark.parametrize("eos", ["naive", "zeros", "bos", "empty"])
def test_eos_variants_fill_the_tail_as_named(tiny_models, eos):
    targets = [t for _, t in PAIRS[:2]]
    layout = layout_prompt(tiny_models.tokenizer, targets)
    embeds = encode(tiny_models, ["", layout.text, *targets])
    empty, base, phrases = embeds[0], embeds[1], embeds[2:]
    sub = substituted_base(base, layout, phrases)
    ore = object_restricted_embeddings(sub, layout, phrases, eos=eos, empty_embeds=empty)
    e = layout.eos_index
    expected = {"naive": sub[e:], "zeros": torch.zeros_like(sub[e:]), "bos": sub[0].expand(77 - e, -1),
                "empty": empty[1 : 1 + 77 - e]}[eos]
    for i in range(2):
        assert torch.equal(ore[i, e:], expected)
        assert torch.equal(ore[i, :e][layout.spans[i][0]:layout.spans[i][1]],
                           phrases[i, 1 : 1 + layout.phrase_length(i)])


def test_index_quirk_differs_from_the_fix_for_two_or_more_objects(tiny_models):
    targets = [t for _, t in PAIRS[:2]]
    layout = layout_prompt(tiny_models.tokenizer, targets)
    embeds = encode(tiny_models, [layout.text, *targets])
    fixed = substituted_base(embeds[0], layout, embeds[1:])
    quirk = substituted_base(embeds[0], layout, embeds[1:], index_quirk=True)
    (s0, e0), (s1, e1) = layout.spans
    assert torch.equal(fixed[s0:e0], quirk[s0:e0])  # the first phrase sits at the same positions in both
    assert not torch.allclose(fixed[s1:e1], quirk[s1:e1])
    # The quirk reads phrase 2's own encoding past its EOS: padding embeddings.
    assert torch.equal(quirk[s1:e1], embeds[2, s1:e1])
    one = layout_prompt(tiny_models.tokenizer, targets[:1])
    e1s = encode(tiny_models, [one.text, targets[0]])
    assert torch.equal(substituted_base(e1s[0], one, e1s[1:]), substituted_base(e1s[0], one, e1s[1:], index_quirk=True))


def test_text_plan_branches(tiny_models):
    plan = build_text_plan(tiny_models.tokenizer, lambda p: encode(tiny_models, p), PAIRS[:2])
    base_t, base_s = encode(tiny_models, [plan.target.text, plan.source.text])
    # The target branch is conditioned on the ordinary target prompt; the source on its substituted base.
    assert torch.equal(plan.target_cond, base_t)
    s, e = plan.source.spans[1]
    book = encode(tiny_models, ["book"])[0]
    assert torch.equal(plan.source_cond[s:e], book[1 : 1 + e - s])
    owner = plan.token_owner()
    assert owner[plan.target.spans[1][0]] == 1 and owner[0] == -1 and owner[plan.target.eos_index] == -1
    assert plan.ore.shape == (2, 77, base_t.shape[-1])
