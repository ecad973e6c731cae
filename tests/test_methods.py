"""Baselines on the shared sampler (tiny models): what each one changes, and when; the registry and the Method
interface every front-end reads."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

import ale_edit.editor as editor_module
import ale_edit.methods as methods
import ale_edit.processors as processors_module
from ale_edit.editor import EditRequest, Editor
from ale_edit.io import load_image
from ale_edit.methods import MethodContractError, method_classes
from ale_edit.methods.fpe import FreePromptSelfAttention
from ale_edit.methods.masactrl import MasaCtrlController, MutualSelfAttention
from ale_edit.methods.plain import Plain
from ale_edit.options import SettingError
from ale_edit.processors import install_processors
from ale_edit.processors import to_heads as _to_heads
from ale_edit.sampler import SamplerInputs, virtual_inversion
from ale_edit.settings import EditSettings
from ale_edit.text import encode_prompts

ROOT = Path(__file__).resolve().parents[1]
STEPS = 5
PAIRS = [("cup", "cup made of gold"), ("book", "red-colored book")]


@pytest.fixture(scope="module")
def image(ale_bench):
    return load_image(ale_bench / "images" / "artificial_img05.jpg")


def sampler_inputs(models, seed=3):
    torch.manual_seed(seed)
    z0 = torch.randn(1, 4, 8, 8)
    e = encode_prompts(models.tokenizer, models.text_encoder, ["", "", "cup made of gold and red-colored book"])
    return SamplerInputs(z0=z0, uncond=e[:1], source_cond=e[1:2], target_cond=e[2:3],
                         generators=[torch.Generator().manual_seed(seed)])


def run(models, make_processor, controller):
    """Target latents after each step with the given processors installed."""
    steps = []
    previous = install_processors(models.unet, make_processor)
    try:
        virtual_inversion(models.unet, models.scheduler, sampler_inputs(models), controller, num_steps=STEPS,
                          progress=False, step_callback=lambda k, xs, xt, x0: steps.append(xt.clone()))
    finally:
        models.unet.set_attn_processor(previous)
    return steps


def test_mutual_self_attention_target_reads_source_keys_and_values():
    torch.manual_seed(0)
    attn = Attention(query_dim=12, heads=3, dim_head=4).eval()
    x = torch.randn(4, 6, 12)
    ctl = MasaCtrlController(num_steps=10, start_step=0, start_layer=0)
    out = MutualSelfAttention(ctl, layer=0).attend(attn, x, None)
    q, k, v = (_to_heads(attn, f(x)) for f in (attn.to_q, attn.to_k, attn.to_v))
    for src, tgt in ((0, 1), (2, 3)):
        expected = F.scaled_dot_product_attention(q[tgt], k[src], v[src]).transpose(0, 1).reshape(6, 12)
        assert torch.allclose(out[tgt], expected, atol=1e-6)
        own = F.scaled_dot_product_attention(q[src], k[src], v[src]).transpose(0, 1).reshape(6, 12)
        assert torch.allclose(out[src], own, atol=1e-6)  # the source branch is untouched
    late = MutualSelfAttention(MasaCtrlController(num_steps=10, start_step=0, start_layer=5), layer=4)
    plain = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(4, 6, 12)
    assert torch.allclose(late.attend(attn, x, None), plain, atol=1e-6)  # below the start layer: plain


def test_masactrl_equals_the_plain_target_branch_before_its_start_step(tiny_models):
    plain = run(tiny_models, lambda layer: AttnProcessor2_0(), MasaCtrlController(STEPS, 99, 0))
    ctl = MasaCtrlController(STEPS, start_step=2, start_layer=0)
    plain_cross = AttnProcessor2_0()
    masa = run(tiny_models, lambda layer: plain_cross if layer.is_cross else MutualSelfAttention(ctl, layer.index),
               ctl)
    for k in range(STEPS):
        same = torch.allclose(masa[k], plain[k], atol=1e-5)
        assert same == (k < 2), k


def test_fpe_target_self_attention_maps_equal_the_source_in_its_steps_and_layers(tiny_models, image, monkeypatch):
    seen = []  # (step, level, cond maps equal, uncond maps equal)
    original_attend = FreePromptSelfAttention.attend
    original_sdpa = F.scaled_dot_product_attention

    def attend(self, attn, hidden_states, encoder_hidden_states):
        def spy(q, k, v, *args, **kwargs):
            probs = (q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5).softmax(-1).chunk(4)
            seen.append((self.controller.step_index, self.level, torch.equal(probs[3], probs[2]),
                         torch.equal(probs[1], probs[0])))
            return original_sdpa(q, k, v, *args, **kwargs)

        monkeypatch.setattr(processors_module.F, "scaled_dot_product_attention", spy)
        try:
            return original_attend(self, attn, hidden_states, encoder_hidden_states)
        finally:
            monkeypatch.setattr(processors_module.F, "scaled_dot_product_attention", original_sdpa)

    monkeypatch.setattr(FreePromptSelfAttention, "attend", attend)
    editor = Editor(tiny_models, EditSettings(size=64, steps=STEPS, method="fpe"), progress=False)
    result = editor.edit(EditRequest(image, PAIRS, schedule=1.0))  # FPE keeps its own 0.8: steps k < 4
    assert {k for k, *_ in seen} == set(range(STEPS)) and {lv for _, lv, *_ in seen} == {0, 1}
    for k, level, cond_same, uncond_same in seen:
        if k < 4 and level >= 1:
            assert cond_same, (k, level)
        elif k > 0:  # at step 0 x_s = x_t, so the first blocks see equal inputs in any case
            assert not cond_same, (k, level)
        if k > 0:
            assert not uncond_same, (k, level)  # the unconditional branch is never touched
    assert result.record["method"] == "fpe" and result.record["background_blending"] is False


@pytest.mark.parametrize("method", ["fpe", "masactrl"])
def test_baselines_take_only_the_target_prompt(tiny_models, image, monkeypatch, method):
    captured = {}
    original = editor_module.virtual_inversion

    def wrapped(unet, scheduler, inputs, controller, **kw):
        captured["inputs"], captured["controller"] = inputs, controller
        return original(unet, scheduler, inputs, controller, **kw)

    monkeypatch.setattr(editor_module, "virtual_inversion", wrapped)
    detector_calls = []
    editor = Editor(tiny_models, EditSettings(size=64, steps=2, method=method),
                    detector=lambda im, ph: detector_calls.append(ph) or {}, progress=False)
    editor.edit(EditRequest(image, PAIRS))
    empty, target = encode_prompts(tiny_models.tokenizer, tiny_models.text_encoder,
                                   ["", "cup made of gold and red-colored book"])
    inputs = captured["inputs"]
    assert torch.equal(inputs.source_cond[0], empty) and torch.equal(inputs.target_cond[0], target)
    assert captured["controller"].blend is None and detector_calls == []  # no masks, no blending


def test_methods_differ_from_each_other(tiny_models, image):
    outputs = {}
    for method in ("ale", "fpe", "masactrl"):
        options = {"start_step": 1, "start_layer": 0} if method == "masactrl" else None
        settings = EditSettings(size=64, steps=STEPS, method=method, options=options)
        masks = {"cup": np.ones((64, 64), bool), "book": np.zeros((64, 64), bool)}
        with pytest.warns(UserWarning) if method == "ale" else _nullcontext():
            outputs[method] = np.asarray(Editor(tiny_models, settings, progress=False)
                                         .edit(EditRequest(image.resize((64, 64)), PAIRS, masks)).image)
    assert not np.array_equal(outputs["ale"], outputs["fpe"])
    assert not np.array_equal(outputs["fpe"], outputs["masactrl"])


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# -- the registry and the Method interface ----------------------------------------------------------------------

# A new method as docs/adding-a-method.md has a user write it: one package, nothing else edited. SDEdit-like: the
# target keeps the source latent until step ``start`` (a latent blend), then runs free on the target prompt.
NEW_METHOD = '''
from dataclasses import dataclass

from ...options import Options, option
from ...processors import PlainAttention
from ...sampler import LatentBlend
from ...steps import StepController, from_step
from ..base import EditBatch, Method, MethodRun, register
from ..shared import joined_conditioning, layer_processors


@dataclass(frozen=True)
class SdeditOptions(Options):
    section = "sdedit"

    start: int = option(2, "The first step at which the target leaves the source latent.", minimum=0)


class KeepSource(LatentBlend):
    def __init__(self, steps):
        self.steps = steps

    def __call__(self, state):
        return state.x_t if state.step in self.steps else state.x_s


@register
class Sdedit(Method):
    name = "sdedit"
    label = "SDEdit"
    Options = SdeditOptions

    def prepare(self, batch: EditBatch) -> MethodRun:
        attention = PlainAttention()
        blend = KeepSource(from_step(self.options.start, batch.num_steps))
        return MethodRun(joined_conditioning(batch), StepController(batch.num_steps, blend=blend),
                         layer_processors(attention, attention), records=[{}] * len(batch))
'''


def python(code: str, *args: str, path: Path = ROOT) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(path), HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, cwd=path)


def test_listing_the_methods_imports_none_and_asking_for_one_imports_it_alone():
    code = ("import sys; from ale_edit.methods import method_names, method_class; names = method_names(); "
            "loaded = lambda: sorted(m for m in sys.modules if m.count('.') == 2 "
            "and m.startswith('ale_edit.methods.')); "
            "before = loaded(); method_class('p2p'); print(names, before, loaded())")
    result = python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["('ale',", "'fpe',", "'infedit',", "'masactrl',", "'p2p',", "'plain')",
                                     "['ale_edit.methods.base']", "['ale_edit.methods.base',",
                                     "'ale_edit.methods.p2p',", "'ale_edit.methods.seq_aligner',",
                                     "'ale_edit.methods.shared']"]


def test_every_method_declares_what_the_front_ends_read():
    for name, cls in method_classes().items():
        assert cls.name == name and cls.Options.section == name and cls.label
        assert isinstance(cls.uses_masks, bool) and cls.report_label({}) == cls.label
        for f in dataclasses.fields(cls.Options):
            assert f.metadata["help"], f"{name}.{f.name} has no help"
    assert [n for n, c in method_classes().items() if c.uses_masks] == ["ale"]


def test_a_new_method_package_is_in_the_command_line_and_runs(tmp_path, ale_bench):
    shutil.copytree(ROOT / "ale_edit", tmp_path / "ale_edit", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "ale_edit" / "methods" / "sdedit").mkdir()
    (tmp_path / "ale_edit" / "methods" / "sdedit" / "__init__.py").write_text(NEW_METHOD)
    cli = "from ale_edit.cli import main; main()"
    shown = python(cli, "edit", "--help", path=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "sdedit: SDEdit" in " ".join(shown.stdout.split()) and "|sdedit]" in shown.stdout
    out = tmp_path / "out.png"
    edited = python(cli, "edit", str(ale_bench / "images" / "artificial_img05.jpg"), "-e", "cup=gold cup",
                    "--method", "sdedit", "--set", "sdedit.start=1", "--model", "tiny", "--size", "64", "--steps",
                    "2", "-o", str(out), path=tmp_path)
    assert edited.returncode == 0, edited.stderr
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["method"] == "sdedit" and record["settings"]["options"] == {"start": 1}


@pytest.fixture()
def plugin_folder(tmp_path, monkeypatch):
    """A folder searched for method packages beside ale_edit/methods; what it registers is forgotten after."""
    monkeypatch.setattr(methods, "__path__", [*methods.__path__, str(tmp_path)])
    registered, loaded = dict(methods.METHODS), set(sys.modules)
    yield tmp_path
    methods.METHODS.clear()
    methods.METHODS.update(registered)
    for name in set(sys.modules) - loaded:
        if name.startswith("ale_edit.methods."):
            del sys.modules[name]


def test_a_package_that_registers_no_method_is_named(plugin_folder):
    (plugin_folder / "empty").mkdir()
    (plugin_folder / "empty" / "__init__.py").write_text('"""Not a method yet."""\n')
    assert "empty" in methods.method_names()
    with pytest.raises(TypeError, match="ale_edit.methods.empty registers no method named 'empty'"):
        methods.method_class("empty")
    with pytest.raises(SettingError, match="unknown method 'emty' \\(did you mean 'empty'\\?\\)"):
        methods.method_class("emty")


def test_a_method_without_one_record_per_edit_is_named(tiny_models, image):
    class Truncating(Plain):
        name = "truncating"

        def prepare(self, batch):
            run = super().prepare(batch)
            return dataclasses.replace(run, records=run.records[1:])

    editor = Editor(tiny_models, EditSettings(size=64, steps=2, method="plain"), progress=False)
    editor.method = Truncating()
    request = EditRequest(image, PAIRS)
    with pytest.raises(MethodContractError, match="method 'truncating' .*: MethodRun.records holds 1 records for a "
                                                  "batch of 2 edits; it needs one per edit"):
        editor.edit_batch([request, request])
