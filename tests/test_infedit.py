"""InfEdit on the shared sampler (tiny models): the three-branch sampler, the step rules, the self- and cross-
attention processors on six chunks, the local blend, the aligner's cosine extension, and the editor."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

import ale_edit.editor as editor_module
from ale_edit.editor import EditRequest, Editor
from ale_edit.errors import EditInputError
from ale_edit.io import load_image
from ale_edit.methods import METHODS, EditBatch, method_class
from ale_edit.methods.infedit import (
    InfEdit, InfEditController, InfEditCrossAttention, InfEditOptions, InfEditSelfAttention, blend_active,
    blend_threshold, blend_word_vector, cross_replace_active, infedit_processors, self_inject_active,
    target_phrase_words,
)
from ale_edit.methods.seq_aligner import infedit_refinement_mapper, prompt_ids, refinement_mapper
from ale_edit.processors import blocks, install_processors
from ale_edit.processors import to_heads as _to_heads
from ale_edit.sampler import SamplerInputs, StepState, _noise, lcm_timesteps, virtual_inversion
from ale_edit.settings import EditSettings
from ale_edit.text import encode_prompts
from ale_edit.tokenizer import clip_tokenizer

STEPS = 5
PAIRS = [("cup", "cup made of gold"), ("book", "red-colored book")]
L = 77


@pytest.fixture(scope="module")
def tokenizer():
    return clip_tokenizer()


def controller(b=1, num_steps=15, schedules=None, mappers=None, alphas=None, local=None, mutual=None, lengths=None,
               **kw):
    return InfEditController(
        num_steps=num_steps,
        schedules=schedules if schedules is not None else torch.ones(b),
        mappers=mappers if mappers is not None else torch.arange(L).repeat(b, 1),
        alphas=alphas if alphas is not None else torch.ones(b, L),
        local_words=local if local is not None else torch.zeros(b, L),
        mutual_words=mutual if mutual is not None else torch.zeros(b, L),
        target_lengths=lengths if lengths is not None else torch.full((b,), 8),
        **kw,
    )


def after_step(ctl, k, x_s, x_t, x_m, alpha, num_steps=15):
    return ctl.after_step(StepState(k, num_steps, x_s, x_t, x_s, alpha, 0.5, x_m))


# -- step rules -----------------------------------------------------------------------------------------------------
def test_step_rules_and_blend_threshold_on_fifteen_steps(tiny_models):
    steps = range(15)
    for s, last in ((1.0, 13), (0.6, 7), (0.5, 6)):
        assert [k for k in steps if self_inject_active(s, k, 15)] == list(range(last + 1))
    assert [k for k in steps if cross_replace_active(0.7, k, 15)] == list(range(10))
    assert [k for k in steps if blend_active(k)] == list(range(1, 15))
    timesteps, scheduler = lcm_timesteps(tiny_models.scheduler, 15)
    assert timesteps.tolist() == [999, 939, 879, 799, 739, 679, 599, 539, 479, 399, 339, 279, 199, 139, 79]
    tau = [blend_threshold(float(scheduler.alphas_cumprod.double()[int(t)]), 0.6) for t in timesteps]
    assert [round(x, 3) for x in tau[1:6]] == [1.554, 1.133, 0.778, 0.606, 0.6]
    assert all(x == 0.6 for x in tau[5:])


# -- local blend ----------------------------------------------------------------------------------------------------
def _maps(block: slice, token: int) -> torch.Tensor:
    """(1, 1 head, 16 queries, 77): a 4x4 map that is 1 on ``block`` for ``token`` and on BOS elsewhere."""
    grid = torch.zeros(4, 4)
    grid[block, block] = 1
    p = torch.zeros(1, 1, 16, L)
    p[0, 0, :, token] = grid.flatten()
    p[0, 0, :, 0] = 1 - grid.flatten()
    return p


def test_local_blend_keeps_the_mutual_latent_outside_the_local_words(tiny_models):
    _, scheduler = lcm_timesteps(tiny_models.scheduler, 15)
    timesteps = lcm_timesteps(tiny_models.scheduler, 15)[0]
    alpha = [float(scheduler.alphas_cumprod.double()[int(t)]) for t in timesteps]
    local = torch.zeros(1, L)
    local[0, 2] = 1
    local[0, 7] = 1  # the EOS position of an 8-token prompt: outside 1 .. L_t - 2, never read
    ctl = controller(local=local)
    ctl.begin_step(0)
    s_source = _maps(slice(2, 4), 3)  # the source-refined maps: token 3 on the bottom-right block
    s_mutual = _maps(slice(0, 2), 2)  # the mutual-refined maps: token 2 (local word) on the top-left block
    s_mutual[0, 0, :, 7] = 1.0  # a uniform EOS map: would make everything "inside" were it read
    ctl.blend.add(1, s_source, s_mutual)
    x_s, x_t, x_m = torch.zeros(1, 4, 8, 8), torch.ones(1, 4, 8, 8), torch.full((1, 4, 8, 8), 2.0)
    x_m_before = x_m.clone()
    top_left = torch.zeros(8, 8, dtype=torch.bool)
    top_left[:4, :4] = True
    bottom_right = torch.zeros(8, 8, dtype=torch.bool)
    bottom_right[4:, 4:] = True
    for k in range(15):
        out = after_step(ctl, k, x_s, x_t, x_m, alpha[k])
        if k == 0:
            assert torch.equal(out, x_t)  # no blend after the first step
        elif k in (1, 2):
            assert torch.equal(out, x_m), k  # tau_e > 1: the mask is empty, x_t becomes x_m everywhere
        else:
            assert torch.equal(out[..., top_left], x_t[..., top_left]), k
            assert torch.equal(out[..., ~top_left], x_m[..., ~top_left]), k
    assert torch.equal(x_m, x_m_before)

    # Mutual words: token 3 (mutual only) takes x_s on its source-map mask; token 2 (local and mutual) takes x_m
    # on its mutual-map mask at k = T - 2.
    ctl.mutual_words[0, 2] = ctl.mutual_words[0, 3] = 1
    for k in (5, 13):
        out = after_step(ctl, k, x_s, x_t, x_m, alpha[k])
        assert torch.equal(out[..., bottom_right], x_s[..., bottom_right]), k
        rest = ~top_left & ~bottom_right
        assert torch.equal(out[..., rest], x_m[..., rest]), k
        expected = x_m if k == 13 else x_t  # the "use x_m" rule of the second-to-last step
        assert torch.equal(out[..., top_left], expected[..., top_left]), k
    assert torch.equal(x_m, x_m_before)

    # Without local words the target is not pulled to x_m (the reference's empty mask is skipped).
    empty = controller()
    empty.begin_step(0)
    empty.blend.add(1, s_source, s_mutual)
    assert torch.equal(after_step(empty, 5, x_s, x_t, x_m, alpha[5]), x_t)


# -- self-attention -------------------------------------------------------------------------------------------------
def _sdpa(q, k, v):
    b, h, n, d = q.shape
    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, h * d)


def test_self_attention_substitutes_queries_keys_and_values_in_both_triples():
    torch.manual_seed(0)
    attn = Attention(query_dim=12, heads=3, dim_head=4).eval()
    b = 2
    x = torch.randn(6 * b, 5, 12)
    q, k, v = (_to_heads(attn, f(x)).chunk(6) for f in (attn.to_q, attn.to_k, attn.to_v))
    # edit 0 injects at step 0 (1.0 > 1/10), edit 1 does not (0.0); at step 9 neither does
    ctl = controller(b=b, num_steps=10, schedules=torch.tensor([1.0, 0.0]))
    with torch.no_grad():
        for step in (0, 9):
            ctl.begin_step(step)
            out = InfEditSelfAttention(ctl).attend(attn, x, None).chunk(6)
            for s, t, m in ((0, 1, 2), (3, 4, 5)):
                for e in range(b):
                    e_ = slice(e, e + 1)
                    assert torch.allclose(out[s][e_], _sdpa(q[s][e_], k[s][e_], v[s][e_]), atol=1e-6)  # plain
                    if step == 0 and e == 0:
                        assert torch.allclose(out[m][e_], out[s][e_], atol=1e-6)
                        assert torch.allclose(out[t][e_], _sdpa(q[s][e_], k[s][e_], v[t][e_]), atol=1e-6)
                    else:
                        assert torch.allclose(out[t][e_], _sdpa(q[t][e_], k[t][e_], v[t][e_]), atol=1e-6)
                        assert torch.allclose(out[m][e_], _sdpa(q[t][e_], k[s][e_], v[s][e_]), atol=1e-6)
                        assert not torch.allclose(out[m][e_], out[s][e_], atol=1e-4)


# -- cross-attention ------------------------------------------------------------------------------------------------
def _refine(p_x, p_t, mapper, alphas):
    out = torch.empty_like(p_t)
    for n in range(L):
        src = int(mapper[n]) if mapper[n] >= 0 else 0
        out[..., n] = alphas[n] * p_x[..., src] + (1 - alphas[n]) * p_t[..., n]
    return out


def test_cross_attention_refines_the_target_while_replacing_and_stores_refined_maps():
    torch.manual_seed(1)
    attn = Attention(query_dim=12, cross_attention_dim=10, heads=3, dim_head=4).eval()
    x, context = torch.randn(6, 16, 12), torch.randn(6, L, 10)
    mapper, alphas = refinement_mapper([0, 5, 6, 9], [0, 5, 7, 6, 9])  # target token 2 is unaligned
    mapper[1] = 3  # a non-identity entry, so that a wrong gather would show
    records = []
    ctl = controller(num_steps=10, mappers=mapper[None], alphas=alphas[None], recorder=records.append)
    processor = InfEditCrossAttention(ctl, layer=4, store=True)
    q = _to_heads(attn, attn.to_q(x)).chunk(6)
    k, v = (_to_heads(attn, f(context)).chunk(6) for f in (attn.to_k, attn.to_v))
    probs = [(qq @ kk.transpose(-1, -2) * attn.scale).softmax(-1) for qq, kk in zip(q, k)]
    p_s, p_t, p_m = probs[3:]
    stored = torch.zeros(1, 2, 16, L)
    with torch.no_grad():
        for step in range(10):
            ctl.begin_step(step)
            out = processor.attend(attn, x, context).chunk(6)
            used = records[-1]["used"]
            replacing = 0.7 >= (step + 1) / 10
            assert records[-1]["replacing"] == replacing
            expected = _refine(p_s, p_t, mapper, alphas) if replacing else p_t
            assert torch.allclose(used, expected, atol=1e-6), step
            assert torch.allclose(out[4], _sdpa_probs(expected, v[4]), atol=1e-5), step
            assert torch.allclose(out[3], _sdpa(q[3], k[3], v[3]), atol=1e-5)  # source: its own maps
            assert torch.allclose(out[5], _sdpa(q[5], k[5], v[5]), atol=1e-5)  # mutual: its own maps
            for c in range(3):
                assert torch.allclose(out[c], _sdpa(q[c], k[c], v[c]), atol=1e-5)  # unconditional: plain
            stored += torch.stack([_refine(p_s, p_t, mapper, alphas).mean(1),
                                   _refine(p_m, p_t, mapper, alphas).mean(1)], dim=1)
            assert torch.allclose(ctl.blend.store.mean(), stored, atol=1e-5), step  # always refined with the own P_t
    assert [r["replacing"] for r in records] == [True] * 7 + [False] * 3
    assert not torch.allclose(_refine(p_s, p_t, mapper, alphas), p_t, atol=1e-4)


def _sdpa_probs(p, v):
    out = p @ v
    b, h, n, d = out.shape
    return out.transpose(1, 2).reshape(b, n, h * d)


# -- aligner --------------------------------------------------------------------------------------------------------
def test_aligner_extension_golden_cases_and_index_order():
    # [BOS, s1, s2, and, s3, EOS] -> [BOS, t1, t2, and, t3, t4, EOS]: BOS, "and", EOS align; runs [1, 3), [4, 6)
    source_ids, target_ids = [100, 1, 2, 50, 3, 200], [100, 11, 12, 50, 13, 14, 200]
    base, base_alphas = refinement_mapper(source_ids, target_ids)
    assert base[:7].tolist() == [0, -1, -1, 3, -1, -1, 5]
    e = torch.eye(8)
    src, tgt = torch.zeros(L, 8), torch.zeros(L, 8)
    src[1], tgt[1], tgt[2], src[2] = e[0], e[1], e[0], e[2]
    # reference: cos(source[p], target[q]) -> (p=1, q=2) scores 1; intended: cos(target[p], source[q]) -> (2, 1)
    # run [4, 6) has one candidate (source 4) and all-zero encodings: a tie, the first target position wins
    ref, ref_alphas = infedit_refinement_mapper(source_ids, target_ids, src, tgt, order="reference")
    assert ref[:7].tolist() == [0, 2, -1, 3, 4, -1, 5] and ref_alphas[:7].tolist() == [1, 1, 0, 1, 1, 0, 1]
    intended, int_alphas = infedit_refinement_mapper(source_ids, target_ids, src, tgt, order="intended")
    assert intended[:7].tolist() == [0, -1, 1, 3, 4, -1, 5] and int_alphas[:7].tolist() == [1, 0, 1, 1, 1, 0, 1]
    assert torch.equal(ref[7:], torch.arange(7, L)) and bool((ref_alphas[7:] == 1).all())
    with pytest.raises(ValueError, match="order"):
        infedit_refinement_mapper(source_ids, target_ids, src, tgt, order="swapped")


def test_aligner_extension_on_benchmark_prompts(tokenizer):
    torch.manual_seed(0)
    src, tgt = torch.randn(L, 16), torch.randn(L, 16)
    # [BOS, cy, an, -, colored, book, and, gray, -, colored, mug, EOS] from [BOS, book, and, cup, EOS]
    source_ids, target_ids = prompt_ids(tokenizer, "book and cup"), prompt_ids(tokenizer, "cyan-colored book and "
                                                                                          "gray-colored mug")
    mapper, alphas = infedit_refinement_mapper(source_ids, target_ids, src, tgt)
    assert alphas[1:5].tolist() == [0, 0, 0, 0]  # run 1..4 has an empty source range (BOS .. book)
    run = mapper[7:11].tolist()
    assert sorted(run)[-1] == 3 and run.count(3) == 1 and run.count(-1) == 3  # one token of 7..10 takes "cup"
    assert mapper[[0, 5, 6, 11]].tolist() == [0, 1, 2, 4]
    # "steam and cup" -> "blue-colored toxic gas and gray-colored mug": run 1..5 may take "steam", 7..10 "cup"
    mapper, alphas = infedit_refinement_mapper(prompt_ids(tokenizer, "steam and cup"),
                                               prompt_ids(tokenizer, "blue-colored toxic gas and gray-colored mug"),
                                               src, tgt)
    assert mapper[1:6].tolist().count(1) == 1 and mapper[7:11].tolist().count(3) == 1
    assert int(alphas[:12].sum()) == 5  # BOS, and, EOS plus one token per run
    same, ones = infedit_refinement_mapper(source_ids, source_ids, src, src)
    assert torch.equal(same, torch.arange(L)) and bool((ones == 1).all())  # ref(P_s) = P_s
    ctl = controller(mappers=same[None], alphas=ones[None])
    p_s, p_t = torch.rand(1, 2, 4, L), torch.rand(1, 2, 4, L)
    assert torch.equal(ctl.refine(p_s, p_t), p_s)


def test_controller_from_pairs_local_words_and_registration(tokenizer):
    words = target_phrase_words(tokenizer, PAIRS)
    # [BOS, cup, made, of, gold, and, red, -, colored, book, EOS]: every target-phrase token, not "and"
    assert words.nonzero().flatten().tolist() == [1, 2, 3, 4, 6, 7, 8, 9]
    assert "infedit" in METHODS and method_class("infedit") is InfEdit
    with pytest.raises(ValueError, match="target encodings"):
        InfEditController.from_pairs(tokenizer, [PAIRS], STEPS, [0.5], torch.randn(1, L, 16), torch.randn(0, L, 16))
    embeds = torch.randn(1, L, 16)
    batch = EditBatch(pairs=[PAIRS], schedules=[0.5], masks=[{}], num_steps=STEPS, latent_size=(8, 8),
                      vae_scale_factor=8, tokenizer=tokenizer, encode=lambda prompts: embeds.expand(len(prompts), -1, -1))
    run = InfEdit(InfEditOptions()).prepare(batch)
    ctl = run.controller
    assert isinstance(ctl, InfEditController) and ctl.cross_replace == 0.7 and ctl.thresh_e == ctl.thresh_m == 0.6
    assert ctl.target_lengths.tolist() == [11] and not ctl.mutual_words.any()
    assert torch.equal(ctl.local_words[0], words)
    assert torch.equal(run.conditioning.mutual, run.conditioning.source)  # the mutual branch: the source prompt


def test_blend_words_as_the_app_takes_them(tokenizer):
    # target prompt: [BOS, cup, made, of, gold, and, red, -, colored, book, EOS]
    assert blend_word_vector(tokenizer, PAIRS, "gold book").nonzero().flatten().tolist() == [4, 9]
    assert blend_word_vector(tokenizer, PAIRS, "red-colored").nonzero().flatten().tolist() == [6, 7, 8]
    assert not blend_word_vector(tokenizer, PAIRS, "").any()
    assert torch.equal(blend_word_vector(tokenizer, PAIRS, "*"), target_phrase_words(tokenizer, PAIRS))
    with pytest.raises(EditInputError, match="'silver' is not a word of the target prompt"):
        blend_word_vector(tokenizer, PAIRS, "silver")


# -- sampler --------------------------------------------------------------------------------------------------------
class StubUNet:
    """A UNet stand-in: eps depends on each chunk's latents and text, so every branch is distinguishable."""

    device, dtype = torch.device("cpu"), torch.float32

    def __init__(self):
        self.calls = []

    def __call__(self, latents, t, encoder_hidden_states):
        self.calls.append((latents.clone(), encoder_hidden_states.clone()))
        text = encoder_hidden_states.mean(dim=(1, 2))[:, None, None, None]
        return SimpleNamespace(sample=torch.tanh(0.3 * latents + text) + float(t) / 2000)


@pytest.mark.parametrize("eta", [1.0, 0.5])
def test_three_branch_sampler_follows_infedits_update(tiny_models, eta):
    torch.manual_seed(0)
    z0, u, src, tgt, mut = torch.randn(1, 4, 8, 8), *(torch.randn(1, L, 8) for _ in range(4))
    inputs = SamplerInputs(z0=z0, uncond=u, source_cond=src, target_cond=tgt, mutual_cond=mut,
                           generators=[torch.Generator().manual_seed(7)])
    seen = []

    class Recorder:
        def begin_step(self, k):
            pass

        def after_step(self, state):
            seen.append((state.x_s.clone(), state.x_t.clone(), state.x_m.clone(), state.alpha_next, state.alpha))
            return state.x_t

        def finish(self, pred_x0, z0):
            return pred_x0

    unet = StubUNet()
    out = virtual_inversion(unet, tiny_models.scheduler, inputs, Recorder(), num_steps=STEPS, guidance_source=1.5,
                            guidance_target=2.0, eta=eta, progress=False)
    timesteps, scheduler = lcm_timesteps(tiny_models.scheduler, STEPS)
    alphas = scheduler.alphas_cumprod.double()
    gen = torch.Generator().manual_seed(7)
    x_s = _noise([gen], (4, 8, 8))
    x_t, x_m = x_s.clone(), x_s.clone()
    for k, t in enumerate(timesteps):
        latents, context = unet.calls[k]
        assert torch.equal(latents, torch.cat([x_s, x_t, x_m, x_s, x_t, x_m]))
        assert torch.equal(context, torch.cat([u, u, u, src, tgt, mut]))
        u_s, u_t, u_m, c_s, c_t, c_m = StubUNet()(latents, t, context).sample.chunk(6)
        e_s, e_t, e_m = u_s + 1.5 * (c_s - u_s), u_t + 2.0 * (c_t - u_t), u_m + 1.5 * (c_m - u_m)
        a = float(alphas[int(t)])
        a2 = float(alphas[int(timesteps[k + 1])]) if k + 1 < STEPS else float(scheduler.final_alpha_cumprod)
        sigma2 = eta * (1 - a2)
        c = max(1 - a2 - sigma2, 0) ** 0.5
        e_c = (x_s - a**0.5 * z0) / (1 - a) ** 0.5
        x0_t = z0 + ((x_t - x_s) - (1 - a) ** 0.5 * (e_t - e_s)) / a**0.5
        x0_m = z0 + ((x_m - x_s) - (1 - a) ** 0.5 * (e_m - e_s)) / a**0.5
        n = _noise([gen], (4, 8, 8))  # one draw per step, shared by the three branches
        x_t = a2**0.5 * x0_t + c * (e_t - e_s + e_c) + sigma2**0.5 * n
        x_m = a2**0.5 * x0_m + c * (e_m - e_s + e_c) + sigma2**0.5 * n
        x_s = a2**0.5 * z0 + c * (e_m - e_s + e_c) + sigma2**0.5 * n  # the mutual direction
        got_s, got_t, got_m, got_a2, got_a = seen[k]
        assert got_a == pytest.approx(a) and got_a2 == pytest.approx(a2)
        for got, want in ((got_s, x_s), (got_t, x_t), (got_m, x_m)):
            assert torch.allclose(got, want, atol=1e-5), k
        if eta == 1.0:
            assert torch.allclose(got_s, a2**0.5 * z0 + (1 - a2) ** 0.5 * n, atol=1e-5)
    assert torch.allclose(out, x0_t, atol=1e-5)  # the last step's target pred_x0


def _inputs(models, prompts, seeds):
    e = encode_prompts(models.tokenizer, models.text_encoder, ["", *[p for pair in prompts for p in pair]])
    n = len(prompts)
    torch.manual_seed(5)
    z0 = torch.randn(1, 4, 8, 8).repeat(n, 1, 1, 1)
    source, target = e[1::2], e[2::2]
    inputs = SamplerInputs(z0=z0, uncond=e[:1].expand(n, -1, -1), source_cond=source, target_cond=target,
                           mutual_cond=source, generators=[torch.Generator().manual_seed(s) for s in seeds])
    return inputs, source, target


def test_a_batch_of_edits_equals_the_edits_run_one_by_one(tiny_models, tokenizer):
    edits = [(PAIRS, 1.0), ([("cup", "mug")], 0.5)]
    prompts = [(" and ".join(s for s, _ in p), " and ".join(t for _, t in p)) for p, _ in edits]

    def run(indices):
        inputs, source, target = _inputs(tiny_models, [prompts[i] for i in indices], [3 + i for i in indices])
        # 3 steps: injection differs per edit at k = 0 (1.0 > 1/3, 0.5 > 1/3) and k = 1 (1.0 only), and the
        # blend runs at k = 1 (also the x_m step T - 2) and k = 2
        ctl = InfEditController.from_pairs(tokenizer, [edits[i][0] for i in indices], 3,
                                           torch.tensor([edits[i][1] for i in indices]), source, target)
        previous = install_processors(tiny_models.unet, infedit_processors(ctl, blocks(tiny_models.unet)))
        try:
            out = virtual_inversion(tiny_models.unet, tiny_models.scheduler, inputs, ctl, num_steps=3,
                                    progress=False)
        finally:
            tiny_models.unet.set_attn_processor(previous)
        assert ctl.blend.store.layers() == {1, 3, 4}  # the tiny UNet's blend layers
        return out

    batch = run([0, 1])
    for i in range(2):
        assert torch.allclose(batch[i : i + 1], run([i]), atol=1e-4), i


# -- the editor -----------------------------------------------------------------------------------------------------
def test_editor_runs_infedit_with_the_mutual_branch_and_differs_from_p2p(tiny_models, ale_bench, monkeypatch):
    image = load_image(ale_bench / "images" / "artificial_img05.jpg")
    captured = {}
    original = editor_module.virtual_inversion

    def wrapped(unet, scheduler, inputs, controller, **kw):
        captured[type(controller).__name__] = (inputs, controller)
        return original(unet, scheduler, inputs, controller, **kw)

    monkeypatch.setattr(editor_module, "virtual_inversion", wrapped)
    outputs = {}
    for method in ("infedit", "p2p"):
        editor = Editor(tiny_models, EditSettings(method=method, size=64, steps=STEPS), progress=False)
        result = editor.edit(EditRequest(image, PAIRS, edit_type="material"))
        outputs[method] = np.asarray(result.image)
        assert result.record["method"] == method
    inputs, ctl = captured["InfEditController"]
    source, target = encode_prompts(tiny_models.tokenizer, tiny_models.text_encoder,
                                    ["cup and book", "cup made of gold and red-colored book"])
    assert torch.equal(inputs.source_cond[0], source) and torch.equal(inputs.target_cond[0], target)
    assert torch.equal(inputs.mutual_cond, inputs.source_cond)
    assert captured["PromptToPromptController"][0].mutual_cond is None
    assert list(ctl.schedules) == pytest.approx([0.6]) and ctl.cross_replace == 0.7
    assert not np.array_equal(outputs["infedit"], outputs["p2p"])
