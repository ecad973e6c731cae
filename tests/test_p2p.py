"""Prompt-to-Prompt on the shared sampler (tiny models): the token aligner, the step rules, the cross- and
self-attention replacement (processor level and in real sampler runs), the local blend, and the editor."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

import ale_edit.editor as editor_module
from ale_edit.editor import EditRequest, Editor
from ale_edit.io import load_image
from ale_edit.methods import METHODS, EditBatch, method_class
from ale_edit.methods.p2p import (
    P2P_SELF_MIN_LEVEL, PromptToPrompt, PromptToPromptController, PromptToPromptCrossAttention,
    PromptToPromptOptions, PromptToPromptSelfAttention, align_prompts, blend_active, blend_words,
    cross_replace_active, p2p_processors, self_replace_active,
)
from ale_edit.methods.shared import blend_layers
from ale_edit.processors import blocks, install_processors, self_attention_qkv, transformer_blocks_in_call_order
from ale_edit.processors import to_heads as _to_heads
from ale_edit.sampler import StepState
from ale_edit.settings import EditSettings
from ale_edit.methods.seq_aligner import (
    global_alignment, prompt_ids, refinement_mapper, replacement_mapper, word_tokens,
)
from ale_edit.sampler import SamplerInputs, virtual_inversion
from ale_edit.text import encode_prompts
from ale_edit.tokenizer import clip_tokenizer

STEPS = 5
REFINE = [("cup", "cup made of gold"), ("book", "red-colored book")]  # word counts differ: refine
REPLACE = [("cup", "teacup"), ("book", "notebook")]  # "cup and book" -> "teacup and notebook": replace


@pytest.fixture(scope="module")
def tokenizer():
    return clip_tokenizer()


@pytest.fixture(scope="module")
def image(ale_bench):
    return load_image(ale_bench / "images" / "artificial_img05.jpg")


# -- the aligner ----------------------------------------------------------------------------------------------------
def test_refinement_mapper_aligns_the_shared_tokens(tokenizer):
    # "a cat" -> "a dog": [BOS, a, cat, EOS] vs [BOS, a, dog, EOS]; "dog" has no source token.
    mapper, alphas = refinement_mapper(prompt_ids(tokenizer, "a cat"), prompt_ids(tokenizer, "a dog"))
    assert mapper[:4].tolist() == [0, 1, -1, 3] and alphas[:4].tolist() == [1, 1, 0, 1]
    assert torch.equal(mapper[4:], torch.arange(4, 77)) and bool((alphas[4:] == 1).all())  # past the prompt
    # [BOS, cup, and, book, EOS] -> [BOS, golden, cup, and, red, book, EOS]
    mapper, alphas = refinement_mapper(prompt_ids(tokenizer, "cup and book"),
                                       prompt_ids(tokenizer, "golden cup and red book"))
    assert mapper[:7].tolist() == [0, -1, 1, 2, -1, 3, 4] and alphas[:7].tolist() == [1, 0, 1, 1, 0, 1, 1]
    assert torch.equal(mapper[7:], torch.arange(7, 77))
    same, ones = refinement_mapper(prompt_ids(tokenizer, "cup and book"), prompt_ids(tokenizer, "cup and book"))
    assert torch.equal(same, torch.arange(77)) and bool((ones == 1).all())


def test_global_alignment_breaks_ties_left_then_up_then_diagonal():
    # [5, 7] vs [7, 5]: both single matches score 1. At the corner "left" (target 5 unaligned) beats "up", so the
    # traceback keeps 7 <- 7; preferring "up" would have kept 5 <- 5 instead.
    assert global_alignment([5, 7], [7, 5]) == [1, -1]
    assert global_alignment([1, 2, 3], [1, 9, 3]) == [0, -1, 2]  # a mismatch (-1) never beats gap + gap (0)
    assert global_alignment([1, 2], [1, 2, 3]) == [0, 1, -1]


def test_replacement_mapper_one_to_one_words_is_the_identity(tokenizer):
    for source, target in (("a cat", "a dog"), ("cup and book", "mug and book")):
        m = replacement_mapper(word_tokens(tokenizer, source), word_tokens(tokenizer, target))
        assert torch.equal(m, torch.eye(77)), (source, target)


def test_replacement_mapper_splits_weights_and_keeps_p2ps_trailing_diagonal(tokenizer):
    # [BOS, cup, and, book, EOS] -> [BOS, te, acup, and, book, EOS]
    m = replacement_mapper(word_tokens(tokenizer, "cup and book"), word_tokens(tokenizer, "teacup and book"))
    expected = torch.zeros(77, 77)
    expected[0, 0] = 1
    expected[1, 1] = expected[1, 2] = 0.5  # one source token -> two target tokens, 1/|target| each
    for j in range(3, 77):
        expected[j, j] = 1  # P2P writes M[j, j] after the last replaced word (M[i, j] would be M[j-1, j])
    assert torch.equal(m, expected)
    # [BOS, cy, an, cup, and, book, EOS] -> [BOS, red, cup, and, notebook, EOS]: two replaced words
    m = replacement_mapper(word_tokens(tokenizer, "cyan cup and book"), word_tokens(tokenizer, "red cup and notebook"))
    expected = torch.zeros(77, 77)
    expected[0, 0] = expected[1, 1] = expected[2, 1] = 1  # cy, an -> red (one target token: weight 1)
    expected[3, 2] = expected[4, 3] = 1  # cup, and: the shifted diagonal before the last replaced word
    expected[5, 4] = 1  # book -> notebook
    for j in range(5, 76):
        expected[j, j] = 1  # then M[j, j] while i = j + 1 < 77: column 76 stays empty
    assert torch.equal(m, expected)
    with pytest.raises(ValueError, match="same number of words"):
        replacement_mapper(word_tokens(tokenizer, "cup"), word_tokens(tokenizer, "golden cup"))


def test_mapper_choice_and_blend_words(tokenizer):
    replace, refine = align_prompts(tokenizer, REPLACE), align_prompts(tokenizer, REFINE)
    assert replace.mode == "replace" and replace.source_prompt == "cup and book"
    assert torch.equal(replace.keep, torch.zeros(77))
    assert refine.mode == "refine" and refine.target_prompt == "cup made of gold and red-colored book"
    # [BOS, cup, and, book, EOS] -> [BOS, cup, made, of, gold, and, red, -, colored, book, EOS]
    assert refine.mapper[:11].tolist() == [0, 1, -1, -1, -1, 2, -1, -1, -1, 3, 4]
    assert torch.equal(refine.keep, 1 - refine.alphas)
    for n in range(77):  # the matrix form holds the mapper: column n is alpha[n] at mapper[n]
        column = torch.zeros(77)
        if refine.alphas[n]:
            column[refine.mapper[n]] = 1
        assert torch.equal(refine.matrix[:, n], column), n
    # two pairs with equal totals but unequal per-pair word counts do not line up: refine
    assert align_prompts(tokenizer, [("red cup", "mug"), ("book", "blue book")]).mode == "refine"
    words = blend_words(tokenizer, REFINE)
    assert words[0].nonzero().flatten().tolist() == [1, 3]  # cup, book in "cup and book"
    assert words[1].nonzero().flatten().tolist() == [1, 2, 3, 4, 6, 7, 8, 9]  # all but "and", BOS, EOS


def test_step_rules_on_fifteen_steps():
    steps = range(15)
    assert [k for k in steps if cross_replace_active(0.8, k, 15)] == list(range(12))
    assert [k for k in steps if cross_replace_active(0.7, k, 15)] == list(range(11))
    for fraction, last in ((1.0, 14), (0.6, 8), (0.5, 6)):
        assert [k for k in steps if self_replace_active(fraction, k, 15)] == list(range(last + 1))
    assert [k for k in steps if blend_active(0.2, k, 15)] == list(range(3, 15))
    # the schedules arrive as float32 tensors (0.6 -> 0.6000000238): the controller keeps P2P's float64 count
    ctl = controller_for([[("cup", "mug")]] * 3, torch.tensor([1.0, 0.6, 0.5]), num_steps=15)
    on = []
    for k in steps:
        ctl.begin_step(k)
        on.append(ctl.self_replacing().tolist())
    assert [sum(o[i] for o in on) for i in range(3)] == [15, 9, 7]


# -- processors on a fabricated attention layer ---------------------------------------------------------------------
def controller_for(pairs, schedules, num_steps=10, **kwargs):
    return PromptToPromptController.from_pairs(clip_tokenizer(), pairs, num_steps, schedules, **kwargs)


def install_p2p_processors(unet, controller):
    return install_processors(unet, p2p_processors(controller, blocks(unet)))


def after_step(ctl, k, x_s, x_t, num_steps=15):
    return ctl.after_step(StepState(k, num_steps, x_s, x_t, x_s, 0.5, 0.5))


def heads_out(x):
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], -1)


def test_cross_attention_target_maps_are_the_mapped_source_maps_while_replacing(tokenizer):
    torch.manual_seed(0)
    attn = Attention(query_dim=12, cross_attention_dim=10, heads=3, dim_head=4).eval()
    b, n = 2, 6
    x, text = torch.randn(4 * b, n, 12), torch.randn(4 * b, 77, 10)
    ctl = controller_for([REPLACE, REFINE], torch.tensor([0.5, 0.5]), num_steps=10, cross_replace=0.5)  # k < 5
    seen = []
    ctl.recorder = seen.append
    processor = PromptToPromptCrossAttention(ctl, layer=0)
    q, k, v = _to_heads(attn, attn.to_q(x)), _to_heads(attn, attn.to_k(text)), _to_heads(attn, attn.to_v(text))
    probs = (q @ k.transpose(-1, -2) * attn.scale).softmax(-1)
    p_src, p_tgt = probs[2 * b :3 * b], probs[3 * b :]
    plain = heads_out(F.scaled_dot_product_attention(q, k, v))
    replace, refine = align_prompts(tokenizer, REPLACE), align_prompts(tokenizer, REFINE)
    mapped = torch.stack([
        torch.einsum("hnw,wt->hnt", p_src[0], replace.matrix),  # P_s M
        refine.alphas * p_src[1][..., refine.mapper.clamp(min=0)] + (1 - refine.alphas) * p_tgt[1],
    ])
    for step in (0, 4, 5, 9):
        ctl.begin_step(step)
        out = processor.attend(attn, x, text)
        record = seen[-1]
        assert record["step"] == step and torch.allclose(record["source"], p_src, atol=1e-6)
        assert torch.allclose(out[: 3 * b], plain[: 3 * b], atol=1e-6)  # the source and unconditional chunks
        if step < 5:
            assert record["replacing"] and torch.allclose(record["used"], mapped, atol=1e-6), step
            assert torch.allclose(out[3 * b :], heads_out(mapped @ v[3 * b :]), atol=1e-6)  # P~_t V_t
            assert not torch.allclose(out[3 * b :], plain[3 * b :], atol=1e-3)
        else:
            assert not record["replacing"] and torch.allclose(record["used"], p_tgt, atol=1e-6), step
            assert not torch.allclose(record["used"], mapped, atol=1e-3)
            assert torch.allclose(out, plain, atol=1e-6)
    ctl.recorder = None
    assert torch.allclose(processor.attend(attn, x, text), plain, atol=1e-6)  # idle: plain SDPA, nothing recorded
    assert len(seen) == 4


def test_self_attention_takes_the_source_maps_at_deep_levels_for_each_edits_schedule():
    torch.manual_seed(1)
    attn = Attention(query_dim=12, heads=3, dim_head=4).eval()
    b, n = 2, 6
    x = torch.randn(4 * b, n, 12)
    ctl = controller_for([REPLACE, REFINE], torch.tensor([1.0, 0.2]), num_steps=10)  # edit 0: k < 10, edit 1: k < 2
    q, k, v = (_to_heads(attn, f(x)) for f in (attn.to_q, attn.to_k, attn.to_v))
    plain = heads_out(F.scaled_dot_product_attention(q, k, v))
    injected = heads_out(F.scaled_dot_product_attention(q[2 * b :3 * b], k[2 * b :3 * b], v[3 * b :]))
    deep, shallow = PromptToPromptSelfAttention(ctl, level=2), PromptToPromptSelfAttention(ctl, level=1)
    for step, expected in ((0, [True, True]), (1, [True, True]), (2, [True, False]), (9, [True, False])):
        ctl.begin_step(step)
        out = deep.attend(attn, x, None)
        assert torch.allclose(out[: 3 * b], plain[: 3 * b], atol=1e-6)  # source and unconditional: plain
        for e, replaced in enumerate(expected):
            target = out[3 * b + e]
            assert torch.allclose(target, injected[e] if replaced else plain[3 * b + e], atol=1e-6), (step, e)
            assert not torch.allclose(target, plain[3 * b + e] if replaced else injected[e], atol=1e-3)
        assert torch.allclose(shallow.attend(attn, x, None), plain, atol=1e-6)  # level < 2: plain
    ctl = controller_for([REPLACE, REFINE], torch.tensor([0.0, 0.0]), num_steps=10)
    assert torch.allclose(PromptToPromptSelfAttention(ctl, level=3).attend(attn, x, None), plain, atol=1e-6)


def test_layers_on_an_sd15_shaped_unet():
    """SD-1.5's block layout (16 transformer blocks): self replacement at blocks 4..9 (level >= 2, the 16x16 and
    8x8 layers at 512^2), the local blend's store at blocks 4, 5, 7, 8, 9 (P2P's down_cross[2:4] + up_cross[:3])."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(
        block_out_channels=(8, 8, 8, 8), layers_per_block=2, norm_num_groups=4, cross_attention_dim=8,
        attention_head_dim=2, down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
    assert blend_layers(blocks(unet)) == {4, 5, 7, 8, 9}
    install_p2p_processors(unet, controller_for([REPLACE], torch.tensor([1.0]), local_blend=True))
    processors = unet.attn_processors
    order = transformer_blocks_in_call_order(unet)
    self_attention = [processors[f"{name}.attn1.processor"] for name in order]
    cross_attention = [processors[f"{name}.attn2.processor"] for name in order]
    assert [i for i, p in enumerate(self_attention) if p.level >= P2P_SELF_MIN_LEVEL] == [4, 5, 6, 7, 8, 9]
    assert [p.layer for p in cross_attention] == list(range(16))
    assert [i for i, p in enumerate(cross_attention) if p.store] == [4, 5, 7, 8, 9]


# -- real sampler runs on the tiny UNet -----------------------------------------------------------------------------
def sampler_inputs(models, edits, seed=3):
    torch.manual_seed(seed)
    b = len(edits)
    sources = [" and ".join(s for s, _ in p) for p in edits]
    targets = [" and ".join(t for _, t in p) for p in edits]
    e = encode_prompts(models.tokenizer, models.text_encoder, ["", *sources, *targets])
    return SamplerInputs(z0=torch.randn(b, 4, 8, 8), uncond=e[:1].expand(b, -1, -1), source_cond=e[1 : 1 + b],
                         target_cond=e[1 + b :], generators=[torch.Generator().manual_seed(seed + i) for i in range(b)])


def sample(models, ctl, edits, install=install_p2p_processors, step_callback=None):
    previous = install(models.unet, ctl)
    try:
        return virtual_inversion(models.unet, models.scheduler, sampler_inputs(models, edits), ctl,
                                 num_steps=STEPS, progress=False, step_callback=step_callback)
    finally:
        models.unet.set_attn_processor(previous)


def test_sampler_run_replaces_target_cross_maps_during_the_replace_steps_only(tiny_models, tokenizer, monkeypatch):
    edits = [REPLACE, REFINE]
    ctl = controller_for(edits, torch.tensor([1.0, 1.0]), num_steps=STEPS)  # c = 0.8: k < floor(6 * 0.8) = 4
    seen = []
    ctl.recorder = lambda r: seen.append({key: (v.clone() if torch.is_tensor(v) else v) for key, v in r.items()})
    self_checks = []  # (level, output == plain self-attention)
    original = PromptToPromptSelfAttention.attend

    def attend(self, attn, hidden_states, encoder_hidden_states):
        out = original(self, attn, hidden_states, encoder_hidden_states)
        q, k, v = self_attention_qkv(attn, hidden_states, encoder_hidden_states)
        self_checks.append((self.level, torch.equal(out, heads_out(F.scaled_dot_product_attention(q, k, v)))))
        return out

    monkeypatch.setattr(PromptToPromptSelfAttention, "attend", attend)
    sample(tiny_models, ctl, edits)
    replace, refine = align_prompts(tokenizer, REPLACE), align_prompts(tokenizer, REFINE)
    assert {r["step"] for r in seen} == set(range(STEPS)) and {r["layer"] for r in seen} == set(range(7))
    for r in seen:
        p_src, p_own = r["source"], r["own"]
        mapped = torch.stack([
            torch.einsum("hnw,wt->hnt", p_src[0], replace.matrix),
            refine.alphas * p_src[1][..., refine.mapper.clamp(min=0)] + (1 - refine.alphas) * p_own[1],
        ])
        if r["step"] < 4:
            assert r["replacing"] and torch.allclose(r["used"], mapped, atol=1e-6), (r["step"], r["layer"])
        else:
            assert not r["replacing"] and torch.equal(r["used"], p_own)
            assert not torch.allclose(p_own, mapped, atol=1e-4), r["layer"]  # the replacement did change maps
    # The tiny UNet has no level-2 block: P2P's self-attention stays plain in every layer and step.
    assert {lv for lv, _ in self_checks} == {0, 1} and all(same for _, same in self_checks)


def test_sampler_run_self_replacement_follows_the_schedule_at_qualifying_levels(tiny_models, monkeypatch):
    ctl = controller_for([REFINE], torch.tensor([0.6]), num_steps=STEPS, min_level=1)  # k < floor(5 * 0.6) = 3
    seen = []  # (step, level, target == SDPA(Q_s, K_s, V_t), target == plain)
    original = PromptToPromptSelfAttention.attend

    def attend(self, attn, hidden_states, encoder_hidden_states):
        out = original(self, attn, hidden_states, encoder_hidden_states)
        q, k, v = self_attention_qkv(attn, hidden_states, encoder_hidden_states)
        plain = heads_out(F.scaled_dot_product_attention(q, k, v))
        injected = heads_out(F.scaled_dot_product_attention(q[2:3], k[2:3], v[3:4]))
        assert torch.equal(out[:3], plain[:3])  # source and unconditional chunks untouched
        seen.append((self.controller.step_index, self.level, torch.allclose(out[3:], injected, atol=1e-6),
                     torch.allclose(out[3:], plain[3:], atol=1e-6)))
        return out

    monkeypatch.setattr(PromptToPromptSelfAttention, "attend", attend)
    sample(tiny_models, ctl, [REFINE])
    assert {s for s, *_ in seen} == set(range(STEPS)) and {lv for _, lv, *_ in seen} == {0, 1}
    for step, level, is_injected, is_plain in seen:
        if level >= 1 and step < 3:
            assert is_injected, (step, level)
        else:
            assert is_plain, (step, level)
        if step > 0:  # at step 0 x_s = x_t, so the first blocks see equal inputs in any case
            assert is_injected != is_plain, (step, level)


def test_source_branch_is_the_plain_runs(tiny_models):
    """x_s after every step equals a run with plain processors: P2P never changes what the source computes."""
    plain_ctl = controller_for([REFINE], torch.tensor([0.0]), num_steps=STEPS, cross_replace=0.0)
    xs_plain, xs_p2p, xt_plain, xt_p2p = [], [], [], []
    sample(tiny_models, plain_ctl, [REFINE],
           step_callback=lambda k, xs, xt, x0: (xs_plain.append(xs.clone()), xt_plain.append(xt.clone())))
    ctl = controller_for([REFINE], torch.tensor([1.0]), num_steps=STEPS, min_level=0)
    sample(tiny_models, ctl, [REFINE], step_callback=lambda k, xs, xt, x0: (xs_p2p.append(xs.clone()),
                                                                           xt_p2p.append(xt.clone())))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(xs_plain, xs_p2p))
    assert not torch.allclose(xt_plain[-1], xt_p2p[-1], atol=1e-4)  # while the target did change


# -- local blend ----------------------------------------------------------------------------------------------------
def test_local_blend_keeps_the_source_outside_the_word_maps():
    ctl = controller_for([REFINE], torch.tensor([1.0]), num_steps=15, local_blend=True)
    words = ctl.blend.words[0]  # (2, 77)
    grid = torch.zeros(4, 4)
    grid[:2, :2] = 1  # the source words attend to the top-left 2x2 of a 4x4 map
    p_src = torch.zeros(1, 2, 16, 77)
    word = int(words[0].nonzero()[0])
    p_src[0, :, :, word] = grid.flatten()
    p_src[0, :, :, 0] = 1 - grid.flatten()  # the rest on BOS (not a word)
    p_tgt = torch.zeros(1, 2, 16, 77)
    p_tgt[..., 0] = 1  # the target words get nothing: an empty mask, no NaN
    ctl.begin_step(0)
    ctl.blend.add(3, p_src, p_tgt)
    x_s, x_t = torch.zeros(1, 4, 8, 8), torch.ones(1, 4, 8, 8)
    inside = torch.zeros(8, 8, dtype=torch.bool)
    inside[:6, :6] = True  # the 2x2 block, max-pooled 3x3 to 3x3, upsampled 2x to 6x6
    assert torch.equal(ctl.blend.mask(8, 8)[0, 0], inside)
    for k in range(15):
        out = after_step(ctl, k, x_s, x_t)
        if k < 3:
            assert torch.equal(out, x_t), k  # no blend before k + 1 > floor(0.2 T)
        else:
            assert torch.equal(out[..., inside], x_t[..., inside]) and torch.equal(out[..., ~inside], x_s[..., ~inside])
    off = controller_for([REFINE], torch.tensor([1.0]), num_steps=15)
    assert off.blend is None and torch.equal(after_step(off, 10, x_s, x_t), x_t)  # off by default


def test_local_blend_in_a_sampler_run_stores_the_deepest_layers_and_blends(tiny_models):
    assert blend_layers(blocks(tiny_models.unet)) == {1, 3, 4}  # the non-mid blocks of the tiny UNet's deepest level
    # The tiny UNet's random maps are nearly flat: at P2P's 0.3 every pixel is inside. 0.95 leaves a real mask.
    ctl = controller_for([REFINE], torch.tensor([1.0]), num_steps=STEPS, local_blend=True, blend_threshold=0.95)
    blended = []

    def callback(k, xs, xt, x0):
        assert ctl.blend.store.layers() == {1, 3, 4}
        mask = ctl.blend.mask(*xt.shape[-2:]).expand_as(xt)  # the store is what the blend of step k read
        if k >= 1:  # floor(0.2 * 5) = 1: blended after steps 1..4
            assert 0 < int(mask.sum()) < mask.numel(), k
            assert torch.equal(xt[~mask], xs[~mask]), k  # outside: the source latent
            assert not torch.allclose(xt[mask], xs[mask]), k  # inside: the target's own
            blended.append(k)
        else:
            assert not torch.allclose(xt[~mask], xs[~mask])  # step 0: no blend yet

    sample(tiny_models, ctl, [REFINE], step_callback=callback)
    assert blended == [1, 2, 3, 4]


# -- the editor -----------------------------------------------------------------------------------------------------
def test_p2p_is_registered_and_needs_the_prompts(tiny_models):
    assert "p2p" in METHODS and method_class("p2p") is PromptToPrompt
    with pytest.raises(ValueError, match="pairs"):
        PromptToPromptController.from_pairs(clip_tokenizer(), [], STEPS, [0.5])
    batch = EditBatch(pairs=[REPLACE], schedules=[0.5], masks=[{}], num_steps=STEPS, latent_size=(8, 8),
                      vae_scale_factor=8, tokenizer=clip_tokenizer(), blocks=blocks(tiny_models.unet),
                      encode=lambda prompts: encode_prompts(tiny_models.tokenizer, tiny_models.text_encoder, prompts))
    run = PromptToPrompt(PromptToPromptOptions()).prepare(batch)
    ctl = run.controller
    assert isinstance(ctl, PromptToPromptController) and ctl.modes == ("replace",) and ctl.cross_replace == 0.8
    source, = encode_prompts(tiny_models.tokenizer, tiny_models.text_encoder, ["cup and book"])
    assert torch.equal(run.conditioning.source[0], source)  # P2P takes the source prompt


def test_editor_runs_p2p_with_the_source_prompt_and_differs_from_fpe(tiny_models, image, monkeypatch):
    captured = {}
    original = editor_module.virtual_inversion

    def wrapped(unet, scheduler, inputs, controller, **kw):
        captured.setdefault(type(controller).__name__, (inputs, controller))
        return original(unet, scheduler, inputs, controller, **kw)

    monkeypatch.setattr(editor_module, "virtual_inversion", wrapped)
    outputs = {}
    for method in ("p2p", "fpe"):
        editor = Editor(tiny_models, EditSettings(size=64, steps=STEPS, method=method), progress=False)
        result = editor.edit(EditRequest(image, REFINE, edit_type="material"))
        outputs[method] = np.asarray(result.image)
        assert result.record["method"] == method and result.record["background_blending"] is False
    inputs, ctl = captured["PromptToPromptController"]
    source, target = encode_prompts(tiny_models.tokenizer, tiny_models.text_encoder,
                                    ["cup and book", "cup made of gold and red-colored book"])
    assert torch.equal(inputs.source_cond[0], source) and torch.equal(inputs.target_cond[0], target)
    assert ctl.modes == ("refine",) and list(ctl.schedules) == pytest.approx([0.6]) and ctl.blend is None
    assert not np.array_equal(outputs["p2p"], outputs["fpe"])
