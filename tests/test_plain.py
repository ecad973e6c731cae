"""The plain sampler (method ``plain``): exactly the two-branch sampler with diffusers' own attention processors."""

import dataclasses
import json

import torch
from click.testing import CliRunner
from diffusers.models.attention_processor import AttnProcessor2_0

import ale_edit.editor as editor_module
from ale_edit.cli import main
from ale_edit.editor import EditRequest, Editor
from ale_edit.io import load_image
from ale_edit.methods import method_names
from ale_edit.sampler import virtual_inversion
from ale_edit.settings import EditSettings

PAIRS = [("cup", "cup made of gold"), ("book", "red-colored book")]


def test_plain_equals_the_sampler_with_stock_processors(tiny_models, ale_bench, monkeypatch):
    image = load_image(ale_bench / "images" / "artificial_img05.jpg")
    captured = {}

    def wrapped(unet, scheduler, inputs, controller, **kw):
        captured.update(inputs=inputs, controller=controller, kw=kw)
        captured["latents"] = virtual_inversion(unet, scheduler, inputs, controller, **kw)
        return captured["latents"]

    monkeypatch.setattr(editor_module, "virtual_inversion", wrapped)
    result = Editor(tiny_models, EditSettings(method="plain", size=64, steps=4), progress=False).edit(
        EditRequest(image, PAIRS, edit_type="color"))
    previous = dict(tiny_models.unet.attn_processors)
    tiny_models.unet.set_attn_processor(AttnProcessor2_0())
    try:
        # The same inputs with fresh generators (the editor's run consumed its own): seed 42, the request's.
        inputs = dataclasses.replace(captured["inputs"], generators=[torch.Generator().manual_seed(42)])
        stock = virtual_inversion(tiny_models.unet, tiny_models.scheduler, inputs, captured["controller"],
                                  **captured["kw"])
    finally:
        tiny_models.unet.set_attn_processor(previous)
    assert torch.allclose(captured["latents"], stock, atol=1e-6)
    source, target = captured["inputs"].source_cond[0], captured["inputs"].target_cond[0]
    assert not torch.equal(source, target)  # the source branch takes the joined source phrases
    assert result.record["method"] == "plain" and result.record["background_blending"] is False


def test_plain_is_registered_and_runs_from_the_command_line(ale_bench, tmp_path):
    assert "plain" in method_names()
    out = tmp_path / "plain.png"
    result = CliRunner().invoke(main, ["edit", str(ale_bench / "images" / "artificial_img05.jpg"), "-e",
                                       "cup=cup made of gold", "--method", "plain", "--set",
                                       "plain.source_prompt=false", "--model", "tiny", "--size", "64", "--steps", "2",
                                       "-o", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["method"] == "plain" and record["settings"]["options"] == {"source_prompt": False}
