"""``ale-edit clean-work``: work files of assembled edits are removed, the others kept for a resumed run."""

import pandas as pd
from click.testing import CliRunner

from ale_edit.cli import main


def test_clean_work_removes_exactly_the_assembled_edits(tmp_path):
    work, results = tmp_path / ".ale-edit-work" / "edit", tmp_path / "results"
    (results / "color").mkdir(parents=True)
    pd.DataFrame({"fingerprint": ["aaa", "bbb"]}).to_parquet(results / "color" / "edits.parquet")
    for folder, stems in (("color", ["aaa", "bbb", "ccc"]), ("object", ["ddd"])):
        (work / folder).mkdir(parents=True)
        for stem in stems:
            for suffix in (".png", ".json"):
                (work / folder / f"{stem}{suffix}").write_text(stem)
    result = CliRunner().invoke(main, ["clean-work", "--work", str(work), "--results", str(results)])
    assert result.exit_code == 0, result.output
    assert "removed 4 files of assembled edits" in result.output and "kept 4" in result.output
    left = sorted(p.relative_to(work).as_posix() for p in work.rglob("*") if p.is_file())
    # ccc is in no results table (an unfinished run may still need it); object has no results at all.
    assert left == ["color/ccc.json", "color/ccc.png", "object/ddd.json", "object/ddd.png"]
