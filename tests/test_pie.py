"""PIE-Bench in the pipeline: its run-length masks, load_512, the pair of each entry, the bench and prompts stages on
a fixture in the published layout, PIE-Bench's scoring conventions and the Table 14 layout."""

import dataclasses
import json
import re
import sys

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from ale_edit.bench.aggregate import aggregate, headline_metrics
from ale_edit.bench.metrics import weighted_pixels
from ale_edit.bench.dataset import BenchLayoutError
from ale_edit.bench.names import METRIC_COLUMNS
from ale_edit.bench.pie import PairError, decode_mask, edit_pair, load_512, runs_past_end
from ale_edit.bench.report import Run, comparison_table
from pie_fixture import ENTRIES, PAIRS, box_mask, encode_mask, write_pie_bench
from scoring_helpers import models, scorer_for, write_edit  # noqa: F401  (models: a fixture)
from stage_utils import DVC, ROOT, bench_stage, invoke, load_stage, make_project, project_params, ran_stages, sh, \
    write_params

sys.path.insert(0, str(ROOT / "stages"))
import params as schema  # noqa: E402  (stages/params.py: params.yaml's schema)

PIE_TYPES = ["change_object", "change_content", "change_color", "change_material"]


def pie_params(source, **sections) -> dict:
    params = project_params()
    params["bench"].update(kind="pie", source=str(source))
    params["prompts"]["edit_types"] = list(PIE_TYPES)
    params["model"]["preset"] = "tiny"
    params["masks"]["source"] = "manual"
    params["edit"].update(steps=2, size=64, batch_size=2)
    params["score"]["batch_size"] = 4
    for section, values in sections.items():
        params[section].update(values)
    return params


@pytest.fixture(scope="module")
def pie_bench(tmp_path_factory):
    return write_pie_bench(tmp_path_factory.mktemp("pie_bench"))


# ----------------------------------------------------------------------------------------------------------------
# Run-length masks and images


def test_decode_mask_against_a_mask_drawn_by_hand():
    # 5 x 6: runs at flat pixels 7-8 (row 1, columns 1-2) and 14-15 (row 2, columns 2-3), then the border.
    expected = np.array([
        [1, 1, 1, 1, 1, 1],
        [1, 1, 1, 0, 0, 1],
        [1, 0, 1, 1, 0, 1],
        [1, 0, 0, 0, 0, 1],
        [1, 1, 1, 1, 1, 1],
    ], dtype=bool)
    assert np.array_equal(decode_mask([7, 2, 14, 2], shape=(5, 6)), expected)


def test_decode_mask_runs_are_absolute_wrap_rows_and_stop_at_the_end():
    counts = [512 * 10 + 20, 5, 512 * 40 + 510, 4, 512 * 512 - 3, 10, 512 * 512 + 7, 3]
    mask = decode_mask(counts)
    expected = np.zeros((512, 512), dtype=bool)
    expected[10, 20:25] = True
    expected[40, 510:512] = expected[41, 0:2] = True  # a run crosses the end of its row
    expected[511, 509:512] = True  # cut at the image's end; the last run starts past it and sets nothing
    expected[[0, -1], :] = expected[:, [0, -1]] = True
    assert np.array_equal(mask, expected)
    assert runs_past_end(counts) == 2
    box = box_mask(120, 160, 360, 400)
    assert np.array_equal(decode_mask(encode_mask(box)), box | decode_mask([]))  # the fixture's encoder


@pytest.mark.parametrize("counts,message", [
    ([5, 2, 9], "pairs"), ([5, -2], "non-negative integers"), ([5, 2.5], "non-negative integers"), ("5 2", "pairs"),
])
def test_malformed_counts_are_named(counts, message):
    with pytest.raises(BenchLayoutError, match=message):
        decode_mask(counts)


def test_load_512_takes_the_centred_square():
    wide = Image.fromarray(np.random.default_rng(0).integers(0, 255, (512, 600, 3), dtype=np.uint8))
    assert np.array_equal(np.asarray(load_512(wide)), np.asarray(wide)[:, 44:556])
    tall = Image.fromarray(np.random.default_rng(1).integers(0, 255, (700, 512, 3), dtype=np.uint8))
    assert np.array_equal(np.asarray(load_512(tall)), np.asarray(tall)[94:606])
    small = Image.new("RGB", (300, 200), (10, 20, 30))
    assert load_512(small).size == (512, 512) and load_512(small).getpixel((7, 7)) == (10, 20, 30)


# ----------------------------------------------------------------------------------------------------------------
# Pairs


@pytest.mark.parametrize("original,editing,blend,pair,prompts", [
    ("a slanted mountain bicycle on the road", "a slanted [rusty] mountain bicycle on the road", "bicycle bicycle",
     ("bicycle", "rusty mountain bicycle"),
     ("a slanted mountain [bicycle] on the road", "a slanted [rusty mountain bicycle] on the road")),
    ("a [red] heart, on a table", "a [pink] heart, on a table", "heart heart", ("heart", "pink heart"),
     ("a red [heart], on a table", "a [pink heart], on a table")),
    ("a cat next to a [cat]", "a cat next to a [tiger]", "cat tiger", ("cat", "tiger"),
     ("a cat next to a [cat]", "a cat next to a [tiger]")),
    ("a [teddy bear] on a bed", "a [panda bear] on a bed", "teddy bear panda bear", ("teddy bear", "panda bear"),
     ("a [teddy bear] on a bed", "a [panda bear] on a bed")),
])
def test_the_pair_and_marked_prompts_of_an_entry(original, editing, blend, pair, prompts):
    found = edit_pair(original, editing, blend)
    assert (found.source, found.target) == pair and (found.source_prompt, found.target_prompt) == prompts


@pytest.mark.parametrize("original,editing,blend,message", [
    ("a cat", "a dog", "", "blended_word is empty"),
    ("a cat", "a dog", "cat", "is one word"),
    ("a cat", "a dog", "horse dog", "is not a source phrase of the original prompt followed by a target phrase"),
    ("a cat next to a cat", "a cat next to a tiger", "cat tiger", "occurs 2 times in the original prompt"),
    ("a red heart", "a red heart", "heart heart", "both 'heart'"),
    ("a snake_toy", "a [big] snake_toy", "snake_toy snake_toy", "holds '_'"),
])
def test_an_entry_without_a_pair_says_why(original, editing, blend, message):
    with pytest.raises(PairError, match=re.escape(message)):
        edit_pair(original, editing, blend)


# ----------------------------------------------------------------------------------------------------------------
# The bench and prompts stages


@pytest.fixture(scope="module")
def pie_dir(pie_bench, tmp_path_factory):
    return bench_stage(tmp_path_factory.mktemp("pie_stages"), pie_params(pie_bench))


def test_bench_materialises_pie_bench(pie_dir, pie_bench):
    manifest = json.loads((pie_dir / "manifest.json").read_text())
    assert manifest["kind"] == "pie" and manifest["skipped"] == []
    assert manifest["types_in_mapping_file"] == {"1 (change_object)": 2, "2 (add_object)": 1, "4 (change_content)": 1,
                                                 "6 (change_color)": 1, "7 (change_material)": 1}
    entries = {e["image"]: e for e in manifest["images"]}
    assert sorted(entries) == sorted(PAIRS)  # the add-object entry is not a type ALE-Edit edits
    for key, _, folder, original, editing, blend, box, size in ENTRIES[:5]:
        entry, pair = entries[key], PAIRS[key]
        assert (entry["width"], entry["height"]) == (512, 512)
        assert Image.open(pie_dir / entry["file"]).size == (512, 512)
        assert entry["pie"]["original_prompt"] == original and entry["pie"]["blended_word"] == blend
        if pair is None:
            assert entry["objects"] == {} and "blended_word is empty" in entry["pie"]["error"]
            continue
        assert entry["pie"]["pair"] == list(pair) and entry["pie"]["error"] is None
        mask = np.asarray(Image.open(pie_dir / entry["objects"][pair[0]])) > 0
        assert np.array_equal(mask, decode_mask(encode_mask(box_mask(*box)))) and mask[0, 0]  # the border rule
        assert entry["source_objects"] == entry["objects"]
    copied = (pie_dir / entries["111000000000"]["file"]).read_bytes()
    assert copied == (pie_bench / "annotation_images" / ENTRIES[0][2] / "111000000000.jpg").read_bytes()
    assert entries["411000000000"]["file"] == "images/411000000000.png"
    assert "image 640x512 centre-cropped and resized to 512x512 (load_512)" in entries["411000000000"]["notes"]


def test_prompts_stage_makes_one_edit_per_entry_and_keeps_the_failed_one(pie_dir, tmp_path, pie_bench):
    params = write_params(tmp_path / "p.yaml", pie_params(pie_bench))
    out = tmp_path / "edits.parquet"
    result = invoke("prompts", ["--params", str(params), "--bench", str(pie_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(out).set_index("edit_id")
    assert sorted(table.index) == ["1/change_color/611000000000/0", "1/change_content/411000000000/0",
                                   "1/change_material/711000000000/0", "1/change_object/111000000000/0",
                                   "1/change_object/112000000001/0"]
    color = table.loc["1/change_color/611000000000/0"]
    assert list(color["sources"]) == ["heart"] and list(color["targets"]) == ["pink heart"]
    assert color["source_prompt"] == "a red [heart] on a white table"
    assert color["target_prompt"] == "a [pink heart] on a white table" and pd.isna(color["error"])
    failed = table.loc["1/change_object/112000000001/0"]
    assert list(failed["sources"]) == [] and pd.isna(failed["source_prompt"])
    assert failed["error"] == "blended_word is empty: the entry names no object to edit"


def test_bench_errors_are_named(pie_bench, tmp_path):
    def run(params):
        return CliRunner().invoke(load_stage("bench"), ["--params", str(write_params(tmp_path / "p.yaml", params)),
                                                        "--out", str(tmp_path / "bench")])

    result = run(pie_params("https://github.com/cure-lab/PnPInversion.git"))
    assert result.exit_code == 1 and "PIE-Bench is not published in a git repository" in result.output
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mapping_file.json").write_text("{}")
    result = run(pie_params(tmp_path))
    assert result.exit_code == 1 and f"it is in {tmp_path / 'data'}: set bench.source to that folder" in result.output
    broken = tmp_path / "broken"
    write_pie_bench(broken)
    mapping = json.loads((broken / "mapping_file.json").read_text())
    mapping["611000000000"]["mask"] = [3, 4, 5]
    mapping["999000000000"] = dict(mapping["111000000000"], editing_type_id="12")
    (broken / "mapping_file.json").write_text(json.dumps(mapping))
    result = run(pie_params(broken))
    assert result.exit_code == 1 and "entry '611000000000': mask counts must be a list of (start, length) pairs" \
        in result.output
    mapping["611000000000"]["mask"] = [3, 4]
    (broken / "mapping_file.json").write_text(json.dumps(mapping))
    result = run(pie_params(broken))
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "bench" / "manifest.json").read_text())
    assert manifest["skipped"] == ["mapping_file.json: 999000000000: editing_type_id '12' is none of PIE-Bench's 0-9"]
    assert "mask: empty inside the border (the decoded mask is the image border only)" in \
        next(e for e in manifest["images"] if e["image"] == "611000000000")["notes"]


@pytest.mark.parametrize("kind,types,message", [
    ("pie", ["color"], "bench.kind is pie: prompts.edit_types must name PIE-Bench types that bench.pie_types keeps"),
    ("ale", ["change_color"], "prompts.edit_types names PIE-Bench types (change_color), which need bench.kind pie"),
])
def test_types_of_the_other_benchmark_are_refused(pie_bench, kind, types, message):
    params = pie_params(pie_bench)
    params["bench"]["kind"], params["prompts"]["edit_types"] = kind, types
    with pytest.raises(schema.SettingError, match=re.escape(message)):
        schema.check_params(params)


# ----------------------------------------------------------------------------------------------------------------
# Scoring and the table


def test_pie_edited_reads_the_region_against_the_whole_target_prompt(tmp_path, models):  # noqa: F811
    rng = np.random.default_rng(0)
    source, edited = (rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(2))
    mask = decode_mask(encode_mask(box_mask(16, 16, 48, 48, shape=(64, 64))), shape=(64, 64))  # border included
    prompt = "a pink heart on a white table"
    record = dataclasses.replace(write_edit(tmp_path, "e", source, edited, {"heart": mask}, ["pink heart"],
                                            edit_type="change_color"), target_prompt=prompt)
    scorer = scorer_for(models)
    row = scorer.score_records([record]).iloc[0]
    region, background = weighted_pixels(edited, mask), weighted_pixels(edited, ~mask)
    scores = scorer.clip_scores([region, background], [prompt, "pink heart"])
    assert row["edited_clip"] == pytest.approx(scores[0, 0], abs=1e-4)  # the region against the whole prompt
    assert row["edited_clip"] != pytest.approx(scores[0, 1], abs=1e-4)  # not against the phrase
    assert row["te_leakage"] == pytest.approx(scores[1, 1], abs=1e-4)  # the background against the phrase
    assert np.isnan(row["ti_leakage"]) and row["error"] is None
    assert row["bg_fraction"] == pytest.approx((~mask).mean())


def test_pie_headline_and_table_have_table_14s_columns():
    group = {"count": 4, "errors": 1, "te_leakage": 20.0, "te_leakage_joined": 20.0, "ti_leakage": None,
             "structure_distance": 0.01, "edited_clip": 25.0, "bg_psnr": 28.0, "bg_lpips": 0.05, "bg_mse": 0.002,
             "bg_ssim": 0.8}
    values = {m: np.nan if group.get(m) is None else group[m] for m in METRIC_COLUMNS}
    per_edit = pd.DataFrame([{"edit_type": "change_color", "n_objects": 1, "error": None, **values}])
    detail = aggregate(per_edit, {"benchmark": "pie", "te_variant": "mean"})
    assert detail["overall"]["edited_clip"] == 25.0 and detail["overall"]["ti_leakage"] is None
    assert list(detail["by_type"]) == PIE_TYPES and list(detail["by_objects"]) == ["1"]
    headline = headline_metrics(detail)
    assert headline["settings"] == {"benchmark": "pie"} and "ti_leakage" not in headline["overall"]
    table = comparison_table([Run("ALE-Edit", headline)])
    assert list(table.columns) == ["method", "TE (eq. 6) ↓", "Structure ×10³ ↓", "Edited ↑", "PSNR ↑",
                                   "LPIPS ×10³ ↓", "MSE ×10⁴ ↓", "SSIM ×10² ↑", "edits"]
    assert table.iloc[0]["Edited ↑"] == 25.0 and table.iloc[0]["MSE ×10⁴ ↓"] == pytest.approx(20.0)
    with pytest.raises(ValueError, match="do not share a table"):
        comparison_table([Run("ALE-Edit", headline), Run("ALE-Edit", {"overall": group})])


# ----------------------------------------------------------------------------------------------------------------
# The pipeline


@pytest.mark.slow
def test_pie_bench_pipeline_and_table_14_over_methods(tmp_path):
    """`dvc repro` with bench.kind pie (ALE-Edit, PIE-Bench's annotation masks), a P2P experiment on the whole
    prompts, and Table 14 over both from the DVC experiments."""
    params = pie_params(write_pie_bench(tmp_path / "pie"))
    params["prompts"]["edit_types"] = ["change_object"]  # one type keeps the test short: an edit and an error row
    project = make_project(tmp_path, params)
    out = sh(DVC + ["repro"], project)
    assert ran_stages(out) == {"bench", "prompts", "masks", "embed", "edit@change_object", "score@change_object",
                               "report"}
    headline = json.loads((project / "metrics" / "ale_bench.json").read_text())
    assert headline["settings"] == {"benchmark": "pie"} and "ti_leakage" not in headline["overall"]
    assert (headline["overall"]["count"], headline["overall"]["errors"]) == (2, 1)
    assert headline["by_type"]["change_object"]["count"] == 2 and headline["by_type"]["change_content"]["count"] == 0
    masks = json.loads((project / "data" / "masks" / "masks.json").read_text())
    assert [(r["phrase"], r["origin"]) for r in masks] == [("cat", "manual")]
    scores = pd.read_parquet(project / "scores" / "change_object" / "per_edit.parquet").set_index("edit_id")
    assert scores.loc["1/change_object/112000000001/0", "error"].startswith("blended_word is empty")
    scored = scores.loc["1/change_object/111000000000/0"]
    assert pd.isna(scored["error"]) and np.isfinite(scored["edited_clip"]) and pd.isna(scored["ti_leakage"])
    sh(["git", "add", "-A"], project)
    sh(["git", "commit", "-qm", "ALE-Edit on PIE-Bench"], project)

    exp = sh(DVC + ["exp", "run", "-S", "method=p2p"], project)
    assert ran_stages(exp) == {"edit@change_object", "score@change_object", "report"}
    sh([sys.executable, "-m", "ale_edit.cli", "report", "--dvc-experiments", "--bench", "data/bench",
        "--grid-edits", "2", "-o", "reports"], project)
    table = pd.read_csv(project / "reports" / "table14.csv")
    assert list(table.columns) == ["method", "TE (eq. 6) ↓", "Structure ×10³ ↓", "Edited ↑", "PSNR ↑",
                                   "LPIPS ×10³ ↓", "MSE ×10⁴ ↓", "SSIM ×10² ↑", "edits"]
    assert sorted(table["method"].str.split(" ").str[0]) == ["ALE-Edit", "P2P"] and set(table["edits"]) == {2}
    assert not (project / "reports" / "table1.csv").exists()
    assert len(pd.read_csv(project / "reports" / "table14_by_type.csv")) == 2  # two methods, one type
    assert (project / "reports" / "method_grid.png").is_file()


def test_auto_masks_that_miss_take_the_fallback(pie_bench, pie_dir, tmp_path, monkeypatch):
    """Grounded-SAM (tiny) with the blend word's source phrase, forced to miss (no box scores above 1.0): the edit
    runs without masking and without background blending, says so, and is scored."""
    monkeypatch.chdir(tmp_path)
    params = write_params(tmp_path / "params.yaml", pie_params(
        pie_bench, prompts={"edit_types": ["change_color"]}, masks={"source": "auto", "box_threshold": 1.0}))
    for stage, args in (("prompts", []), ("masks", []), ("embed", []), ("edit", ["--edit-type", "change_color"]),
                        ("score", ["--edit-type", "change_color"])):
        bench = [] if stage == "embed" else ["--bench", str(pie_dir)]
        result = invoke(stage, ["--params", str(params), *bench, *args])
        assert result.exit_code == 0, result.output
    records = json.loads((tmp_path / "data" / "masks" / "masks.json").read_text())
    assert [(r["phrase"], r["origin"], r["file"]) for r in records] == [("heart", "missing", None)]
    results = pd.read_parquet(tmp_path / "results" / "change_color" / "edits.parquet")
    row = results.iloc[0]
    assert json.loads(row["mask_sources"]) == {"heart": "missing"} and not row["background_blending"]
    assert list(row["fallbacks"]) == ["no mask for 'heart': edited without masking and without background blending"]
    assert row["target_prompt"] == "a [pink heart] on a white table" and row["schedule"] == 1.0
    scores = pd.read_parquet(tmp_path / "scores" / "change_color" / "per_edit.parquet")
    assert pd.isna(scores.iloc[0]["error"]) and np.isfinite(scores.iloc[0]["te_leakage"])
