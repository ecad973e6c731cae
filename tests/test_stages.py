"""Each stage command on its own, on real ALE-Bench data and tiny models, with its errors on bad input."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from stage_utils import bench_stage, invoke, load_stage, smoke_params, write_params


@pytest.fixture(scope="module")
def bench_dir(ale_bench, tmp_path_factory):
    return bench_stage(tmp_path_factory.mktemp("stages"), smoke_params(ale_bench))


def test_bench_materialises_and_validates(bench_dir, ale_bench):
    manifest = json.loads((bench_dir / "manifest.json").read_text())
    assert [e["image"] for e in manifest["images"]] == ["artificial_img05", "natural_img02"]
    peppers = manifest["images"][1]
    assert sorted(peppers["objects"]) == ["green bell pepper", "red bell pepper", "yellow bell pepper"]
    for entry in manifest["images"]:
        for file in entry["objects"].values():
            mask = Image.open(bench_dir / file)
            assert mask.mode == "L" and mask.size == (entry["width"], entry["height"])
            assert set(np.unique(np.asarray(mask))) <= {0, 255}
    copied = (bench_dir / "images" / "artificial_img05.jpg").read_bytes()
    assert copied == (ale_bench / "images" / "artificial_img05.jpg").read_bytes()  # byte for byte
    assert sorted(p.name for p in (bench_dir / "prompts").glob("*/*")) == sorted(
        ["color", "color+object", "material", "object", "object+material"] * 3)


def test_bench_records_rgba_masks_and_stray_files(ale_bench, tmp_path):
    params = smoke_params(ale_bench, bench__images=["natural_img09"])
    result = invoke("bench", ["--params", str(write_params(tmp_path / "p.yaml", params)), "--out",
                              str(tmp_path / "bench")])
    assert result.exit_code == 0, result.output
    notes = json.loads((tmp_path / "bench" / "manifest.json").read_text())["images"][0]["notes"]
    assert any(n.startswith("man_mask.png: mode RGBA") for n in notes)
    # A source with a stray file and a corrupt image.
    source = tmp_path / "messy"
    shutil.copytree(ale_bench / "images", source / "images", ignore=lambda d, names: [n for n in names if "img05" not in n])
    shutil.copytree(ale_bench / "masks" / "artificial_img05", source / "masks" / "artificial_img05")
    (source / "masks" / "artificial_img05" / "notes.txt").write_text("stray")
    (source / "masks" / ".DS_Store").write_bytes(b"\0")
    params = smoke_params(source, bench__images=[])
    result = invoke("bench", ["--params", str(write_params(tmp_path / "p.yaml", params)), "--out", str(tmp_path / "b2")])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "b2" / "manifest.json").read_text())
    assert manifest["skipped"] == ["masks/artificial_img05/notes.txt"]
    (source / "images" / "artificial_img05.jpg").write_bytes(b"garbage")
    result = CliRunner().invoke(load_stage("bench"), ["--params", str(tmp_path / "p.yaml"), "--out", str(tmp_path / "b2")])
    assert result.exit_code == 1 and "cannot be read" in result.output and "artificial_img05.jpg" in result.output
    assert (tmp_path / "b2" / "manifest.json").is_file()  # the previous output is not lost


@pytest.mark.parametrize("source,message", [
    ("/nonexistent/ale_bench", "not a folder"),
    ("https://github.com/ml-postech/ALE.git", "bench.source"),
    ("--upload-pack=touch pwned;.git", "bench.source='--upload-pack=touch pwned;.git' starts with '-'"),
])
def test_bench_source_errors(ale_bench, tmp_path, source, message):
    params = smoke_params(ale_bench, bench__source=source)
    result = CliRunner().invoke(load_stage("bench"), ["--params", str(write_params(tmp_path / "p.yaml", params)),
                                                      "--out", str(tmp_path / "bench")])
    assert result.exit_code == 1 and message in result.output
    assert not (tmp_path / "bench").exists()


def test_bench_unknown_image(ale_bench, tmp_path):
    params = smoke_params(ale_bench, bench__images=["natural_img99"])
    result = CliRunner().invoke(load_stage("bench"), ["--params", str(write_params(tmp_path / "p.yaml", params)),
                                                      "--out", str(tmp_path / "bench")])
    assert result.exit_code == 1 and "natural_img99" in result.output


@pytest.mark.parametrize("mode", ["official", "generated"])
def test_prompts(ale_bench, bench_dir, tmp_path, mode):
    params = write_params(tmp_path / "p.yaml", smoke_params(ale_bench, prompts__mode=mode, prompts__instances=2))
    out = tmp_path / "edits.parquet"
    result = invoke("prompts", ["--params", str(params), "--bench", str(bench_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(out)
    assert len(table) == 2 * 2 * 2 * 2  # images x types x counts x instances
    assert set(table["edit_type"]) == {"color", "object"} and table["edit_id"].is_unique
    if mode == "official":
        first = table[table["edit_id"] == "1/color/natural_img02/0"].iloc[0]
        assert list(first["sources"]) == ["green bell pepper"] and list(first["targets"]) == ["red-colored bell pepper"]


def test_prompts_bad_mode(ale_bench, bench_dir, tmp_path):
    params = write_params(tmp_path / "p.yaml", smoke_params(ale_bench, prompts__mode="handmade"))
    result = CliRunner().invoke(load_stage("prompts"), ["--params", str(params), "--bench", str(bench_dir),
                                                        "--out", str(tmp_path / "e.parquet")])
    assert result.exit_code == 1 and "prompts.mode" in result.output


@pytest.fixture(scope="module")
def edits_file(ale_bench, bench_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("edits")
    params = write_params(tmp / "p.yaml", smoke_params(ale_bench))
    assert invoke("prompts", ["--params", str(params), "--bench", str(bench_dir), "--out",
                              str(tmp / "edits.parquet")]).exit_code == 0
    return tmp / "edits.parquet"


@pytest.mark.parametrize("source", ["manual", "auto", "manual-then-auto"])
def test_masks(ale_bench, bench_dir, edits_file, tmp_path, source):
    params = write_params(tmp_path / "p.yaml", smoke_params(ale_bench, masks__source=source))
    out = tmp_path / "masks"
    result = invoke("masks", ["--params", str(params), "--bench", str(bench_dir), "--edits", str(edits_file),
                              "--out", str(out)])
    assert result.exit_code == 0, result.output
    records = json.loads((out / "masks.json").read_text())
    table = pd.read_parquet(edits_file)
    needed = {(r.image, p) for r in table.itertuples() for p in r.sources}
    assert {(r["image"], r["phrase"]) for r in records} == needed
    origins = {r["origin"] for r in records}
    if source == "manual":
        assert origins == {"manual"}
    elif source == "auto":
        assert origins <= {"detected", "missing"}
    for r in records:
        if r["file"]:
            assert Image.open(out / r["file"]).size == (64, 64)  # the working size the editor sees
        else:
            assert r["origin"] == "missing"


def test_embed_cache_is_reused(ale_bench, edits_file, tmp_path):
    params = write_params(tmp_path / "p.yaml", smoke_params(ale_bench))
    out = tmp_path / "text.parquet"
    first = invoke("embed", ["--params", str(params), "--edits", str(edits_file), "--out", str(out)])
    assert first.exit_code == 0 and " 0 were cached" in first.output
    second = invoke("embed", ["--params", str(params), "--edits", str(edits_file), "--out", str(out)])
    assert second.exit_code == 0 and ", 0 encoded now" in second.output
