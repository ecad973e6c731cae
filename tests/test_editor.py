"""The whole edit on tiny models: sampler properties, background blending, schedules, fallbacks, bad input."""

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import ale_edit.editor as editor_module
import ale_edit.processors as processors_module
from ale_edit.editor import EditRequest, Editor, working_size
from ale_edit.errors import EditInputError, PromptTooLongError
from ale_edit.io import load_image, load_mask
from ale_edit.methods.ale import AleController, AleOptions
from ale_edit.settings import EditSettings

SIZE = 64
STEPS = 4
PAIRS = [("cup", "cup made of gold"), ("book", "red-colored book")]


@pytest.fixture(scope="module")
def source(ale_bench):
    image = load_image(ale_bench / "images" / "artificial_img05.jpg")
    masks = {p: load_mask(ale_bench / "masks" / "artificial_img05" / f"{p}_mask.png", image.size) for p, _ in PAIRS}
    return image, masks


def make_editor(models, **settings):
    """An editor at the tests' size and steps; ALE-Edit's options go to its options, the rest to the settings."""
    ale = {k: settings.pop(k) for k in list(settings) if k in AleOptions.__dataclass_fields__}
    return Editor(models, EditSettings(size=SIZE, steps=STEPS, options=ale, **settings), progress=False)


def background(controller) -> torch.Tensor:
    """Where background blending copies x_s into x_t, (B, 1, h, w); None without background blending."""
    return None if controller.blend is None else controller.blend.background


class Capture:
    """Wraps the editor's sampler call to keep its inputs, per-step latents and output."""

    def __init__(self, monkeypatch):
        self.steps = []
        original = editor_module.virtual_inversion

        def wrapped(unet, scheduler, inputs, controller, **kw):
            self.inputs, self.controller = inputs, controller
            kw["step_callback"] = lambda k, xs, xt, x0: self.steps.append((k, xs.clone(), xt.clone()))
            self.output = original(unet, scheduler, inputs, controller, **kw)
            return self.output

        monkeypatch.setattr(editor_module, "virtual_inversion", wrapped)


def test_background_of_target_latent_equals_source_after_every_step(tiny_models, source, monkeypatch):
    image, masks = source
    cap = Capture(monkeypatch)
    make_editor(tiny_models).edit(EditRequest(image, PAIRS, masks, edit_type="color"))
    background_ = background(cap.controller).expand_as(cap.steps[0][1])
    assert 0 < background_.float().mean() < 1
    assert len(cap.steps) == STEPS
    for _, x_s, x_t in cap.steps:
        assert torch.equal(x_t[background_], x_s[background_])
        assert not torch.equal(x_t[~background_], x_s[~background_])


def test_bb_off_leaves_the_background_free(tiny_models, source, monkeypatch):
    image, masks = source
    cap = Capture(monkeypatch)
    make_editor(tiny_models, bb=False).edit(EditRequest(image, PAIRS, masks, edit_type="color"))
    assert background(cap.controller) is None
    _, x_s, x_t = cap.steps[-1]
    assert not torch.allclose(x_s, x_t)


def test_same_seed_same_output_and_other_seed_differs(tiny_models, source):
    image, masks = source
    ed = make_editor(tiny_models)
    a = np.asarray(ed.edit(EditRequest(image, PAIRS, masks, seed=7)).image)
    b = np.asarray(ed.edit(EditRequest(image, PAIRS, masks, seed=7)).image)
    c = np.asarray(ed.edit(EditRequest(image, PAIRS, masks, seed=8)).image)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_final_blend_with_empty_masks_returns_the_source_latent(tiny_models, source, monkeypatch):
    image, masks = source
    empty = {p: np.zeros_like(m) for p, m in masks.items()}
    cap = Capture(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        make_editor(tiny_models, final_blend=True).edit(EditRequest(image, PAIRS, empty))
    assert torch.equal(cap.output, cap.inputs.z0)


def test_without_final_blend_the_output_is_the_last_pred_x0(tiny_models, source, monkeypatch):
    image, masks = source
    cap = Capture(monkeypatch)
    make_editor(tiny_models).edit(EditRequest(image, PAIRS, masks))
    assert not torch.equal(cap.output, cap.inputs.z0)


def test_qk_injection_runs_exactly_in_the_scheduled_steps(tiny_models, source, monkeypatch):
    image, masks = source
    seen = []  # (step, target q equals source q) per self-attention call
    original_sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, *args, **kwargs):
        if k.shape[2] == q.shape[2] and q.shape[0] % 4 == 0 and k.shape[2] != 77:  # self-attention
            qs, ks = q.chunk(4), k.chunk(4)
            seen.append((ctl_holder[0].step_index,
                         torch.equal(qs[1], qs[0]) and torch.equal(qs[3], qs[2]) and torch.equal(ks[3], ks[2])))
        return original_sdpa(q, k, v, *args, **kwargs)

    ctl_holder = []
    original_begin = AleController.begin_step

    def begin(self, k):
        ctl_holder[:] = [self]
        original_begin(self, k)

    monkeypatch.setattr(processors_module.F, "scaled_dot_product_attention", spy)
    monkeypatch.setattr(AleController, "begin_step", begin)
    make_editor(tiny_models).edit(EditRequest(image, PAIRS, masks, schedule=0.5))  # 4 steps: k+1 < 2 -> step 0
    steps = {k for k, _ in seen}
    assert steps == set(range(STEPS))
    assert all(same for k, same in seen if k == 0)
    assert not any(same for k, same in seen if k > 0)


def test_batch_equals_one_at_a_time(tiny_models, source):
    image, masks = source
    ed = make_editor(tiny_models)
    requests = [EditRequest(image, PAIRS, masks, edit_type="color", seed=1),
                EditRequest(image, PAIRS[:1], {"cup": masks["cup"]}, edit_type="object", seed=2)]
    batched = ed.edit_batch(requests)
    for request, result in zip(requests, batched):
        alone = ed.edit(request)
        diff = np.abs(np.asarray(alone.image, dtype=int) - np.asarray(result.image, dtype=int))
        assert diff.max() <= 1
        assert alone.record["schedule"] == result.record["schedule"]


def test_missed_detection_edits_without_masking_or_blending(tiny_models, source, monkeypatch):
    image, masks = source
    cap = Capture(monkeypatch)
    detector_calls = []

    def detector(img, phrases):
        detector_calls.append(list(phrases))
        return {p: None for p in phrases}

    ed = Editor(tiny_models, EditSettings(size=SIZE, steps=STEPS), detector, progress=False)
    with pytest.warns(UserWarning, match="book"):
        result = ed.edit(EditRequest(image, PAIRS, {"cup": masks["cup"]}))
    assert detector_calls == [["book"]]
    assert result.record["mask_sources"] == {"cup": "given", "book": "missing"}
    assert result.record["background_blending"] is False and "book" in result.record["fallbacks"][0]
    assert result.masks["book"] is None
    assert not background(cap.controller).any()  # no blending at all for this edit
    assert cap.controller.guidance.restricted.tolist() == [[True, False]]


def test_detected_masks_are_used_and_recorded(tiny_models, source):
    image, masks = source

    def detector(img, phrases):
        return {p: np.asarray(Image.fromarray(masks[p]).resize(img.size, Image.NEAREST)) for p in phrases}

    ed = Editor(tiny_models, EditSettings(size=SIZE, steps=STEPS, dilation=0), detector, progress=False)
    result = ed.edit(EditRequest(image, PAIRS))
    assert result.record["mask_sources"] == {"cup": "detected", "book": "detected"}
    assert result.masks["cup"].shape == (SIZE, SIZE)


def test_masks_are_dilated_by_the_setting(tiny_models, source):
    image, masks = source
    small = make_editor(tiny_models, dilation=0).resolve_masks(EditRequest(image, PAIRS, masks),
                                                                image.resize((SIZE, SIZE)))[0]
    big = make_editor(tiny_models, dilation=0.1).resolve_masks(EditRequest(image, PAIRS, masks),
                                                                image.resize((SIZE, SIZE)))[0]
    for p in small:
        assert big[p].sum() > small[p].sum() and np.all(big[p][small[p]])


def test_working_size_keeps_aspect_in_multiples_of_64():
    assert working_size(Image.new("RGB", (1000, 1000)), 768) == (768, 768)
    assert working_size(Image.new("RGB", (1000, 750)), 768) == (768, 576)
    assert working_size(Image.new("RGB", (300, 1200)), 512) == (128, 512)


@pytest.mark.parametrize("pairs,masks,kwargs,message", [
    ([], {}, {}, "at least one"),
    ([("a", "b")] * 4, {}, {}, "at most 3"),
    ([("cup", "x"), ("cup", "y")], {}, {}, "duplicate source"),
    ([("cup", "gold cup")], {"mug": np.ones((4, 4), bool)}, {}, "not source phrases"),
    ([("cup", "")], {}, {}, "malformed pair"),
    ([("cup", "gold cup")], {}, {"edit_type": "texture"}, "unknown edit type"),
])
def test_bad_requests_are_named(tiny_models, pairs, masks, kwargs, message):
    ed = make_editor(tiny_models)
    with pytest.raises(EditInputError, match=message):
        ed.edit(EditRequest(Image.new("RGB", (64, 64)), pairs, masks, **kwargs))


def test_prompt_over_77_tokens_is_named(tiny_models):
    long_target = " ".join(["shiny"] * 80) + " cup"
    with pytest.raises(PromptTooLongError, match="at most 77"):
        make_editor(tiny_models).edit(EditRequest(Image.new("RGB", (64, 64)), [("cup", long_target)],
                                                  {"cup": np.ones((64, 64), bool)}))


def test_mask_of_another_size_is_resized_with_a_warning(tiny_models):
    ed = make_editor(tiny_models)
    mask = np.zeros((10, 10), bool)
    mask[:5] = True
    with pytest.warns(UserWarning, match="resized"):
        masks, origin = ed.resolve_masks(EditRequest(Image.new("RGB", (64, 64)), [("cup", "gold cup")],
                                                     {"cup": mask}), Image.new("RGB", (64, 64)))
    assert masks["cup"].shape == (64, 64) and origin == {"cup": "given"}


def test_rgb_cam_off_lets_object_tokens_attend_outside_their_masks(tiny_models, source, monkeypatch):
    image, masks = source
    cap = Capture(monkeypatch)
    make_editor(tiny_models, rgb_cam=False).edit(EditRequest(image, PAIRS, masks))
    assert cap.controller.guidance is None  # plain SDPA in every cross-attention layer
    cap_on = Capture(monkeypatch)
    make_editor(tiny_models).edit(EditRequest(image, PAIRS, masks))
    rm = cap_on.controller.guidance.region_masks(64, torch.device("cpu"), torch.float32)
    owner = cap_on.controller.guidance.token_owner[0]
    assert not rm.allowed[0][:, owner == 0].all()  # with RGB-CAM on, the cup's tokens are masked somewhere


def test_ore_off_conditions_on_the_plain_prompts(tiny_models, source, monkeypatch):
    from ale_edit.text import encode_prompts

    image, masks = source
    cap = Capture(monkeypatch)
    make_editor(tiny_models, ore=False).edit(EditRequest(image, PAIRS, masks))
    src, tgt = encode_prompts(tiny_models.tokenizer, tiny_models.text_encoder,
                              ["cup and book", "cup made of gold and red-colored book"])
    assert torch.equal(cap.inputs.source_cond[0], src) and torch.equal(cap.inputs.target_cond[0], tgt)
    values = cap.controller.guidance.region_values[0]
    assert all(torch.equal(values[r], tgt) for r in range(values.shape[0]))  # every region: the plain target
    cap_on = Capture(monkeypatch)
    make_editor(tiny_models).edit(EditRequest(image, PAIRS, masks))
    assert not torch.equal(cap_on.inputs.source_cond[0], src)  # ORE on: the substituted base
