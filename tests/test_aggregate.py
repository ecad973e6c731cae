"""Aggregates of per-edit scores: the full detail and the Table 1 headline DVC shows."""

import json
import math
from pathlib import Path

import pytest

from ale_edit.bench.aggregate import aggregate, aggregate_tables, headline_metrics, te_variant_of, to_jsonable
from ale_edit.bench.dataset import EDIT_TYPES
from ale_edit.bench.records import EditRecord
from ale_edit.bench.scorer import empty_row, per_edit_frame

def _row(edit_type, n, error=None, **values):
    record = EditRecord(edit_id=f"{n}/{edit_type}/{len(values)}", source_image=Path("s"), edited_image=Path("e"),
                        masks={}, edits=(("a", "b"),) * n, edit_type=edit_type, n_objects=n)
    row = empty_row(record)
    row.update(values)
    row["error"] = error
    return row


def test_aggregates_skip_nan_count_and_keep_keys():
    rows = [
        _row("color", 1, te_leakage=1.0, bg_psnr=30.0),
        _row("color", 2, te_leakage=3.0, ti_leakage=2.0, bg_psnr=math.inf),
        _row("object", 2, error="image not found: x"),
        _row("object", 3, te_leakage=5.0, ti_leakage=4.0, bg_psnr=20.0),
    ]
    metrics = aggregate(per_edit_frame(rows))
    overall = metrics["overall"]
    assert overall["count"] == 4 and overall["errors"] == 1
    assert overall["te_leakage"] == pytest.approx(3.0) and overall["n"]["te_leakage"] == 3
    assert overall["ti_leakage"] == pytest.approx(3.0) and overall["n"]["ti_leakage"] == 2
    assert overall["bg_psnr"] == math.inf
    assert metrics["by_type"]["color"]["te_leakage"] == pytest.approx(2.0)
    assert metrics["by_type"]["object"]["count"] == 2 and metrics["by_type"]["object"]["te_leakage"] == 5.0
    assert metrics["by_objects"]["2"]["count"] == 2 and metrics["by_objects"]["2"]["ti_leakage"] == 2.0
    assert metrics["by_type_objects"]["object/3"]["ti_leakage"] == 4.0
    assert metrics["by_type"]["material"] == {**metrics["by_type"]["material"], "count": 0, "te_leakage": None}

    text = json.dumps(to_jsonable(metrics), allow_nan=False)
    back = json.loads(text)
    assert back["overall"]["bg_psnr"] == "inf" and back["by_type"]["material"]["te_leakage"] is None
    assert list(back["by_type"]) == list(EDIT_TYPES)
    assert list(back["by_objects"]) == ["1", "2", "3"]

    def keys(d):
        return {k: keys(v) for k, v in d.items()} if isinstance(d, dict) else None

    # a run over a different subset has the same key structure
    assert keys(aggregate(per_edit_frame(rows[:1]))) == keys(metrics)


def _rows():
    return [
        _row("color", 1, te_leakage=1.0, te_leakage_joined=10.0, ti_leakage=7.0, bg_psnr=30.0, bg_ssim=0.5),
        _row("color", 2, te_leakage=3.0, te_leakage_joined=30.0, ti_leakage=2.0, bg_psnr=20.0),
        _row("object", 2, error="image not found: x"),
    ]


def test_headline_holds_table1_overall_and_by_type():
    full = aggregate(per_edit_frame(_rows()))
    head = headline_metrics(full)
    table1 = ["te_leakage", "ti_leakage", "structure_distance", "edited_clip", "bg_psnr", "bg_lpips", "bg_mse",
              "bg_ssim"]
    assert list(head) == ["overall", "by_type"]
    assert list(head["overall"]) == ["count", "errors"] + table1
    assert list(head["by_type"]) == list(EDIT_TYPES)
    assert all(list(group) == ["count"] + table1 for group in head["by_type"].values())
    assert head["overall"]["count"] == 3 and head["overall"]["errors"] == 1
    assert head["overall"]["te_leakage"] == 2.0 and head["overall"]["ti_leakage"] == 4.5
    assert head["overall"]["bg_psnr"] == 25.0 and head["overall"]["bg_ssim"] == 0.5
    assert head["by_type"]["color"] == {**head["by_type"]["color"], "count": 2, "te_leakage": 2.0}
    assert head["by_type"]["object"]["count"] == 1 and head["by_type"]["object"]["te_leakage"] is None

    def leaves(d):
        return sum(leaves(v) for v in d.values()) if isinstance(d, dict) else 1

    assert leaves(head) == 2 + 8 + len(EDIT_TYPES) * 9 and leaves(full) > 600


def test_headline_reports_the_chosen_te_under_its_own_name():
    per_edit = per_edit_frame(_rows())
    joined = headline_metrics(aggregate(per_edit, settings={"te_variant": "joined", "mask_weights": "soft"}))
    assert "te_leakage" not in joined["overall"] and joined["overall"]["te_leakage_joined"] == 20.0
    assert list(joined["overall"])[2] == "te_leakage_joined"  # in TE's place in Table 1
    assert te_variant_of(joined) == "joined" and te_variant_of(headline_metrics(aggregate(per_edit))) == "mean"
    assert headline_metrics(aggregate(per_edit), te_variant="joined")["overall"]["te_leakage_joined"] == 20.0
    with pytest.raises(ValueError, match="unknown te_variant 'median'"):
        headline_metrics(aggregate(per_edit), te_variant="median")


def test_settings_travel_with_the_aggregate():
    a, b = per_edit_frame(_rows()[:2]), per_edit_frame(_rows()[2:])
    settings = {"mask_weights": "soft", "te_variant": "joined"}
    a.attrs["settings"] = {**settings, "inputs": {"results_dir": "results/color"}}
    b.attrs["settings"] = {**settings, "inputs": {"results_dir": "results/object"}}
    combined = aggregate_tables([a, b])
    assert list(combined)[0] == "settings"
    assert combined["settings"] == {**settings, "inputs": [{"results_dir": "results/color"},
                                                           {"results_dir": "results/object"}]}
    assert combined["overall"]["count"] == 3 and combined["by_type"]["object"]["errors"] == 1
    b.attrs["settings"] = {"mask_weights": "binary", "te_variant": "joined"}
    with pytest.raises(ValueError, match=r"different settings .*'mask_weights': \('soft', 'binary'\)"):
        aggregate_tables([a, b])
    assert "settings" not in aggregate(per_edit_frame(_rows()))
