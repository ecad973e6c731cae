"""Comparison tables over scored runs (the paper's Table 1 layout)."""

import json
import math

import pandas as pd

import pytest
from click.testing import CliRunner

from ale_edit.bench.aggregate import headline_metrics
from ale_edit.bench.report import Run, attach_details, comparison_table, run_label, runs_from_dvc_experiments, te_note
from ale_edit.cli import main


def metrics(te, psnr, count=10, mse=0.001):
    group = {"count": count, "te_leakage": te, "ti_leakage": None, "structure_distance": 0.012, "edited_clip": 21.5,
             "bg_psnr": psnr, "bg_lpips": 0.05, "bg_mse": mse, "bg_ssim": 0.9}
    return {"overall": group, "by_type": {"color": dict(group, count=count // 2), "object": dict(group, count=0)},
            "by_objects": {"1": group}}


@pytest.mark.parametrize("params,label", [
    ({"method": "ale", "ale": {"ore": True, "rgb_cam": True, "bb": True, "eos": "ore"}}, "ALE-Edit"),
    ({"method": "ale", "ale": {"ore": True, "rgb_cam": False, "bb": True, "eos": "ore"}}, "ALE (ORE+BB)"),
    ({"method": "ale", "ale": {"ore": True, "rgb_cam": True, "bb": True, "eos": "zeros"}},
     "ALE-Edit, EOS zeros"),
    ({"method": "masactrl"}, "MasaCtrl"),
    ({"method": "fpe"}, "FPE"),
])
def test_run_labels(params, label):
    assert run_label(params) == label


def test_table1_values_in_the_papers_units():
    table = comparison_table([Run("A", metrics(20.0, 30.0)), Run("B", metrics(22.0, "inf"))])
    assert list(table["method"]) == ["A", "B"]
    row = table.iloc[0]
    assert row["TE (eq. 6) ↓"] == 20.0 and row["PSNR ↑"] == 30.0 and row["edits"] == 10
    assert row["Structure ×10³ ↓"] == pytest.approx(12.0) and row["LPIPS ×10³ ↓"] == pytest.approx(50.0)
    assert row["MSE ×10⁴ ↓"] == pytest.approx(10.0) and row["SSIM ×10² ↑"] == pytest.approx(90.0)
    assert math.isnan(row["TI ↓"])  # one object: no target-internal leakage
    assert table.iloc[1]["PSNR ↑"] == math.inf


def test_grouped_tables_skip_empty_groups():
    table = comparison_table([Run("A", metrics(20.0, 30.0)), Run("B", metrics(22.0, 31.0))], "by_type")
    assert list(zip(table["group"], table["method"])) == [("color", "A"), ("color", "B")]
    assert list(table["edits"]) == [5, 5]


def test_runs_from_dvc_experiments():
    def entry(rev, name, params, m):
        return {"rev": rev, "name": name, "data": {"params": {"params.yaml": {"data": params}},
                                                   "metrics": {"metrics/ale_bench.json": {"data": m}}}}

    ale = {"method": "ale", "ale": {"ore": True, "rgb_cam": True, "bb": True, "eos": "ore"}}
    shown = [
        entry("workspace", None, ale, metrics(1.0, 1.0)),
        dict(entry("abc1234def", "main", ale, metrics(2.0, 2.0)), experiments=[
            {"name": "exp-masa", "revs": [entry("111", "exp-masa", {"method": "masactrl"}, metrics(3.0, 3.0))]},
            {"name": "exp-sweep", "revs": [entry("222", "exp-sweep", ale, metrics(4.0, 4.0))]},
            {"name": "exp-failed", "revs": [{"rev": "333", "data": {"params": {}, "metrics": {}}}]},
        ]),
    ]
    runs = runs_from_dvc_experiments(shown)
    assert [r.label for r in runs] == ["ALE-Edit [main]", "MasaCtrl", "ALE-Edit [exp-sweep]"]
    assert [r.metrics["overall"]["te_leakage"] for r in runs] == [2.0, 3.0, 4.0]
    only_workspace = runs_from_dvc_experiments(shown[:1])
    assert [r.label for r in only_workspace] == ["ALE-Edit"]


def test_report_command(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(metrics(20.0, 30.0)))
    b.write_text(json.dumps(metrics(25.0, 28.0)))
    result = CliRunner().invoke(main, ["report", "--run", f"ALE-Edit={a}", "--run", f"FPE={b}", "-o",
                                       str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "by_objects.csv", "by_objects.md", "by_type.csv", "by_type.md", "table1.csv", "table1.md"]
    csv = pd.read_csv(tmp_path / "out" / "table1.csv")
    assert list(csv["method"]) == ["ALE-Edit", "FPE"] and list(csv["TE (eq. 6) ↓"]) == [20.0, 25.0]
    md = (tmp_path / "out" / "table1.md").read_text()
    assert "25.00" in md and "28.00" in md
    assert "TE: eq. 6 (mean), every run" in result.output
    bad = CliRunner().invoke(main, ["report", "--run", "nolabel", "-o", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "LABEL=METRICS_JSON" in bad.output
    missing = CliRunner().invoke(main, ["report", "--run", f"A={tmp_path / 'none.json'}", "-o", str(tmp_path / "x")])
    assert missing.exit_code == 1 and "cannot read the metrics of run 'A'" in missing.output


def test_method_grid_from_result_folders(ale_bench, tmp_path):
    from PIL import Image

    a, b = tmp_path / "ale" / "1" / "color", tmp_path / "fpe" / "1" / "color"
    for root, color in ((a, (255, 0, 0)), (b, (0, 0, 255))):
        for image in ("artificial_img05", "natural_img02"):
            (root / image).mkdir(parents=True)
            Image.new("RGB", (64, 64), color).save(root / image / "edit_0.png")
    Image.new("RGB", (64, 64)).save(tmp_path / "ale" / "1" / "color" / "natural_img02" / "edit_1.png")  # ale only
    metrics_file = tmp_path / "m.json"
    metrics_file.write_text(json.dumps(metrics(20.0, 30.0)))
    result = CliRunner().invoke(main, ["report", "--run", f"ALE={metrics_file}", "--run", f"FPE={metrics_file}",
                                       "--results", f"ALE={tmp_path / 'ale'}", "--results", f"FPE={tmp_path / 'fpe'}",
                                       "--bench", str(ale_bench), "--grid-edits", "5", "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    grid = Image.open(tmp_path / "out" / "method_grid.png")
    # Columns: source, ALE, FPE; rows: the two edits both methods have (edit_1 exists for ALE only).
    assert grid.size == (3 * 192, 20 + 2 * (192 + 28))
    assert grid.getpixel((192 + 96, 20 + 28 + 96)) == (255, 0, 0)  # ALE's column
    assert grid.getpixel((2 * 192 + 96, 20 + 28 + 96)) == (0, 0, 255)  # FPE's column


def test_method_grid_marks_missing_images():
    from PIL import Image

    from ale_edit.bench.figures import method_grid

    rows = [{"source": Image.new("RGB", (8, 8), "white"), "caption": "x", "edited": {"A": Image.new("RGB", (8, 8))}}]
    grid = method_grid(rows, ["A", "B"], tile=32)
    assert grid.size == (3 * 32, 20 + 32 + 28)
    assert grid.getpixel((2 * 32 + 16, 20 + 28 + 16)) == (200, 200, 200)  # B has no image: grey
    assert grid.getpixel((32 + 16, 20 + 28 + 16)) == (0, 0, 0)


def joined(te, te_joined, psnr):
    """Full metrics of a run that reports the joined-prompt TE (both TE columns are in a full aggregate)."""
    m = metrics(te, psnr)
    for group in (m["overall"], *m["by_type"].values(), *m["by_objects"].values()):
        group["te_leakage_joined"] = te_joined
    return {"settings": {"te_variant": "joined", "mask_weights": "soft"}, **m}


def test_te_column_names_the_variant_and_variants_are_never_mixed():
    only_joined = comparison_table([Run("A", joined(20.0, 7.0, 30.0))])
    assert "TE (joined prompt) ↓" in only_joined and "TE (eq. 6) ↓" not in only_joined
    assert only_joined.iloc[0]["TE (joined prompt) ↓"] == 7.0
    assert list(only_joined.columns[:3]) == ["method", "TE (joined prompt) ↓", "TI ↓"]
    runs = [Run("A", metrics(20.0, 30.0)), Run("B", joined(21.0, 9.0, 31.0))]
    mixed = comparison_table(runs)
    assert list(mixed.columns[:4]) == ["method", "TE (eq. 6) ↓", "TE (joined prompt) ↓", "TI ↓"]
    assert mixed.iloc[0]["TE (eq. 6) ↓"] == 20.0 and math.isnan(mixed.iloc[0]["TE (joined prompt) ↓"])
    assert math.isnan(mixed.iloc[1]["TE (eq. 6) ↓"]) and mixed.iloc[1]["TE (joined prompt) ↓"] == 9.0
    assert te_note(runs) == "TE differs between runs, shown in separate columns: eq. 6 for A; joined prompt for B"
    by_type = comparison_table(runs, "by_type")
    assert list(by_type["TE (joined prompt) ↓"].fillna(-1)) == [-1, 9.0]


def test_headline_metrics_make_table1_and_by_type_and_details_give_by_objects():
    full = joined(20.0, 7.0, 30.0)
    head = Run("A", headline_metrics(full))
    assert head.te_variant == "joined"  # read from the one TE column the headline holds
    table = comparison_table([head])
    assert table.iloc[0]["TE (joined prompt) ↓"] == 7.0 and table.iloc[0]["edits"] == 10
    assert list(comparison_table([head], "by_type")["group"]) == ["color"]
    assert comparison_table([head], "by_objects").empty
    attach_details([head], lambda run: full if run.label == "A" else None)
    assert head.detail is full and list(comparison_table([head], "by_objects")["group"]) == ["1"]
    assert comparison_table([head], "by_objects").iloc[0]["TE (joined prompt) ↓"] == 7.0


def test_report_command_on_a_headline_file_leaves_by_objects_out_with_a_note(tmp_path):
    head = tmp_path / "head.json"
    head.write_text(json.dumps(headline_metrics(metrics(20.0, 30.0))))
    result = CliRunner().invoke(main, ["report", "--run", f"H={head}", "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "by_objects: left out for H (their metrics hold no by_objects table)" in result.output
    assert list(pd.read_csv(tmp_path / "out" / "table1.csv")["TE (eq. 6) ↓"]) == [20.0]
    assert (tmp_path / "out" / "by_objects.md").is_file()
