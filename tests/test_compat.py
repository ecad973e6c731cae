"""``compat: authors``: every setting of the profile, each overridable, and what each changes, on tiny models."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import ale_edit.editor as editor_module
from ale_edit.methods.ale.background_blending import foreground
from ale_edit.cli import main
from ale_edit.compat import PROFILES
from ale_edit.editor import EditRequest, Editor
from ale_edit.io import load_image, load_mask
from ale_edit.options import SettingError
from ale_edit.sampler import SamplerInputs, _noise, lcm_timesteps, virtual_inversion
from ale_edit.settings import EditSettings
from ale_edit.steps import StepController

PAIRS = [("cup", "cup made of gold"), ("book", "red-colored book")]
EDIT_KEYS = {k: v for k, v in PROFILES["authors"].items() if k.startswith(("edit.", "ale."))}
DEFAULTS = {"ale.ore_index_quirk": False, "ale.ore_zeroing": "other_phrases", "edit.vae_latent": "mode",
            "ale.bb_mask": "nearest", "ale.bb_start": 0, "edit.last_alpha": "final", "ale.final_blend": False,
            "edit.dilation": 0.01}
# A value other than the profile's for each key (final_blend is off in both: the profile names it for the record).
OTHER = {**DEFAULTS, "ale.final_blend": True}


def value(settings: EditSettings, key: str):
    section, name = key.split(".")
    return getattr(settings if section == "edit" else settings.options, name)


@pytest.mark.parametrize("key", sorted(EDIT_KEYS))
def test_each_setting_of_the_profile_resolves_and_an_explicit_one_wins(key):
    assert value(EditSettings(), key) == DEFAULTS[key]  # profile none: ale-edit's own default
    authors = EditSettings(compat="authors")
    assert value(authors, key) == EDIT_KEYS[key]
    assert authors.compat_record()["from_profile"][key] == EDIT_KEYS[key] and not authors.compat_record()["overridden"]
    section, name = key.split(".")
    explicit = {name: OTHER[key]}
    overridden = EditSettings(compat="authors", **(explicit if section == "edit" else {"options": explicit}))
    assert value(overridden, key) == OTHER[key]
    record = overridden.compat_record()
    assert record["overridden"] == {key: OTHER[key]} and key not in record["from_profile"]
    # The other settings of the profile are untouched by that override.
    assert all(value(overridden, k) == v for k, v in EDIT_KEYS.items() if k != key)


def test_profile_from_params_and_by_name():
    params = {"method": "ale", "edit": {"compat": "authors", "steps": 4}, "ale": {"bb_start": None, "bb_mask": "nearest"}}
    settings = EditSettings.from_params(params)
    assert settings.options.bb_start == 1 and settings.options.bb_mask == "nearest"  # null follows, explicit wins
    with pytest.raises(SettingError, match="edit.compat must be one of none, authors"):
        EditSettings(compat="theirs")


def nearest(m: np.ndarray, size: int) -> np.ndarray:
    """Nearest resize of a square mask as torch does it: output i reads input floor(i * in / out)."""
    index = np.floor(np.arange(size) * (m.shape[0] / size)).astype(int)
    return m[np.ix_(index, index)]


@pytest.mark.parametrize("blocks,per_scale,union,single", [
    # One pixel at (32, 32), sampled at 1/8, 1/16 and 1/32 of the 64 px side; a 7x7 block at 9..15 never sampled.
    ([((32, 33), (32, 33)), ((9, 16), (9, 16))], [1, 4, 16, 0], 16, 1),
    # Rows 8..23, cols 8..16: 1x sampling hits (1|2, 1|2); 2x hits its 16th row and column: cells (2|3, 2|3).
    ([((8, 24), (8, 17))], [4, 4, 0, 0], 7, 4),
])
def test_multiscale_foreground_is_the_or_of_four_nearest_resizes(blocks, per_scale, union, single):
    mask = torch.zeros(1, 1, 64, 64, dtype=torch.bool)  # at the working size; the latent grid is 8x8
    for (r0, r1), (c0, c1) in blocks:
        mask[0, 0, r0:r1, c0:c1] = True
    m = mask[0, 0].numpy()
    scales = [nearest(nearest(m, 8 // f), 8) for f in (1, 2, 4, 8)]
    assert [int(s.sum()) for s in scales] == per_scale
    got = foreground(mask, 8, 8, "multiscale")[0, 0].numpy()
    assert np.array_equal(got, np.logical_or.reduce(scales)) and int(got.sum()) == union
    assert int(foreground(mask, 8, 8, "nearest").sum()) == single


SAMPLER = editor_module.virtual_inversion


class Capture:
    """The editor's sampler call: its inputs, controller and the latents after each step."""

    def __init__(self, monkeypatch):
        self.steps = []
        original = SAMPLER

        def wrapped(unet, scheduler, inputs, controller, **kw):
            self.inputs, self.controller, self.kw = inputs, controller, kw
            kw["step_callback"] = lambda k, xs, xt, x0: self.steps.append((xs.clone(), xt.clone()))
            self.output = original(unet, scheduler, inputs, controller, **kw)
            return self.output

        monkeypatch.setattr(editor_module, "virtual_inversion", wrapped)


@pytest.fixture(scope="module")
def source(ale_bench):
    image = load_image(ale_bench / "images" / "artificial_img05.jpg")
    masks = {p: load_mask(ale_bench / "masks" / "artificial_img05" / f"{p}_mask.png", image.size) for p, _ in PAIRS}
    return image, masks


def edit(models, monkeypatch, source, **settings):
    cap = Capture(monkeypatch)
    image, masks = source
    Editor(models, EditSettings(size=64, steps=4, **settings), progress=False).edit(
        EditRequest(image, PAIRS, masks, edit_type="color"))
    return cap


def test_authors_background_blending_starts_after_step_one_on_the_multiscale_foreground(tiny_models, source,
                                                                                        monkeypatch):
    authors = edit(tiny_models, monkeypatch, source, compat="authors")
    unblended = edit(tiny_models, monkeypatch, source, compat="authors", options={"bb": False})
    blend = authors.controller.blend
    assert blend.steps == frozenset({1, 2, 3})
    background = blend.background.expand_as(authors.steps[0][0])
    # Step 0: x_t is the unblended one (the same as with BB off), so the background still differs from x_s.
    assert torch.equal(authors.steps[0][1], unblended.steps[0][1])
    assert not torch.equal(authors.steps[0][1][background], authors.steps[0][0][background])
    for x_s, x_t in authors.steps[1:]:  # steps >= 1: x_s outside the foreground
        assert torch.equal(x_t[background], x_s[background])
    ours = edit(tiny_models, monkeypatch, source).controller.blend.background
    assert int((~blend.background).sum()) > int((~ours).sum())  # the multiscale foreground is larger


def test_authors_sample_the_vae_latent(tiny_models, source, monkeypatch):
    mode = edit(tiny_models, monkeypatch, source).inputs.z0
    sampled = edit(tiny_models, monkeypatch, source, vae_latent="sample").inputs.z0
    again = edit(tiny_models, monkeypatch, source, compat="authors").inputs.z0
    assert not torch.equal(mode, sampled) and torch.equal(sampled, again)  # seeded: the same sample each run
    assert (sampled - mode).abs().max() < 5 * (sampled - mode).abs().mean() + 1  # a sample around the mode


def test_authors_ore_settings_reach_the_text_plan(tiny_models, source, monkeypatch):
    from ale_edit.methods.ale.ore import build_text_plan

    cap = edit(tiny_models, monkeypatch, source, compat="authors")
    plan = build_text_plan(tiny_models.tokenizer, Editor(tiny_models, progress=False).text_encoder, PAIRS,
                           zeroing="all_but_phrase", index_quirk=True)
    assert torch.equal(cap.inputs.source_cond[0], plan.source_cond)
    assert torch.equal(cap.controller.guidance.region_values[0, 1:], plan.ore)
    ours = build_text_plan(tiny_models.tokenizer, Editor(tiny_models, progress=False).text_encoder, PAIRS)
    assert not torch.equal(ours.source_cond, plan.source_cond)  # the quirk changes the second phrase's tokens


class Recorder(StepController):
    pass


def test_last_alpha_current_renoises_with_the_last_timesteps_alpha_and_keeps_pred_x0(tiny_models):
    torch.manual_seed(0)
    steps, d = 4, tiny_models.text_encoder.config.hidden_size
    z0 = torch.randn(1, 4, 8, 8)
    e = torch.randn(3, 1, 77, d)
    runs = {}
    for last_alpha in ("final", "current"):
        seen = []
        inputs = SamplerInputs(z0=z0, uncond=e[0], source_cond=e[1], target_cond=e[2],
                               generators=[torch.Generator().manual_seed(3)])
        out = virtual_inversion(tiny_models.unet, tiny_models.scheduler, inputs, Recorder(steps), num_steps=steps,
                                last_alpha=last_alpha, progress=False,
                                step_callback=lambda k, xs, xt, x0: seen.append(xs.clone()))
        runs[last_alpha] = (out, seen)
    assert torch.equal(runs["final"][0], runs["current"][0])  # the returned pred_x0 is the same
    assert all(torch.equal(a, b) for a, b in zip(runs["final"][1][:-1], runs["current"][1][:-1]))
    timesteps, scheduler = lcm_timesteps(tiny_models.scheduler, steps)
    a = float(scheduler.alphas_cumprod.double()[int(timesteps[-1])])
    gen = torch.Generator().manual_seed(3)
    noises = [_noise([gen], (4, 8, 8)) for _ in range(steps + 1)]  # the initial latent, then one per step
    # eta = 1: the direction term vanishes; x_s = sqrt(a') z0 + sqrt(1 - a') n with a' = 1 (final) or a_t.
    assert torch.equal(runs["final"][1][-1], z0)
    assert torch.allclose(runs["current"][1][-1], a**0.5 * z0 + (1 - a) ** 0.5 * noises[-1], atol=1e-6)


def test_cli_records_the_profile_and_the_overrides(ale_bench, tmp_path):
    image = ale_bench / "images" / "artificial_img05.jpg"
    mask = ale_bench / "masks" / "artificial_img05" / "cup_mask.png"
    out = tmp_path / "edited.png"
    result = CliRunner().invoke(main, ["edit", str(image), "-e", "cup=cup made of gold", "--mask", f"cup={mask}",
                                       "--compat", "authors", "--no-ore-index-quirk", "--model", "tiny", "--size",
                                       "64", "--steps", "2", "-o", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["settings"]["compat"] == "authors" and record["settings"]["vae_latent"] == "sample"
    assert record["settings"]["options"]["ore_index_quirk"] is False
    assert record["compat"]["overridden"] == {"ale.ore_index_quirk": False}
    assert record["compat"]["from_profile"]["ale.bb_mask"] == "multiscale"


def test_dilation_follows_the_profile():
    from ale_edit.masks import dilation_radius

    assert EditSettings().dilation == 0.01 and dilation_radius(0.01, 768) == 7  # the paper's "seven pixels" at 768
    assert EditSettings(compat="authors").dilation == 0.04 and dilation_radius(0.04, 768) == 30
    assert EditSettings(compat="authors", dilation=0.02).compat_record()["overridden"] == {"edit.dilation": 0.02}


def test_the_pipeline_segmenter_follows_edit_compat(monkeypatch):
    import sys

    from stage_utils import ROOT, project_params

    monkeypatch.syspath_prepend(str(ROOT / "stages"))
    from _models import model_name

    params = project_params()
    assert params["model"]["segmenter"] is None and params["edit"]["dilation"] is None  # both follow edit.compat
    assert model_name(params, "segmenter") == "facebook/sam-vit-huge"
    params["edit"]["compat"] = "authors"
    assert model_name(params, "segmenter") == "facebook/sam2.1-hiera-large"
    params["model"]["segmenter"] = "models/sam-vit-h"
    assert model_name(params, "segmenter") == "models/sam-vit-h"
    assert EditSettings.from_params(params).dilation == 0.04
    sys.modules.pop("_models", None)


def test_cli_records_the_segmenter_and_the_dilation(ale_bench, tmp_path):
    image = ale_bench / "images" / "artificial_img05.jpg"
    out = tmp_path / "edited.png"
    result = CliRunner().invoke(main, ["edit", str(image), "-e", "cup=cup made of gold", "--compat", "authors",
                                       "--model", "tiny", "--size", "64", "--steps", "2", "-o", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["settings"]["dilation"] == 0.04 and record["compat"]["from_profile"]["edit.dilation"] == 0.04
    assert record["grounding"] == {
        "detector": "tiny", "segmenter": "tiny", "dtype": "fp32",
        "compat": {"profile": "authors", "from_profile": {}, "overridden": {"model.segmenter": "tiny"}}}
