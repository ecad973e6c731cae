"""The runner's one code path for a batch of edits: a batch that raises is edited one by one, an edit that still
raises is an error outcome (never a failed stage), written to the work folder without an image, collected as an
error row and tried again by the next run."""

import json
from pathlib import Path

import numpy as np
from PIL import Image

from ale_edit.bench.runner import (
    EditJob, collect, edit_jobs, encode_png, is_done, job_files, pending_jobs, record_outcome, run_jobs,
)
from ale_edit.editor import EditResult
from ale_edit.errors import EditInputError
from ale_edit.io import ShippedFiles


class StubEditor:
    """Paints each edit the colour its target names; raises for the target "boom" (in a batch or alone)."""

    COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}

    def __init__(self):
        self.batches = []

    def edit_batch(self, requests):
        targets = [r.pairs[0][1] for r in requests]
        self.batches.append(targets)
        if "boom" in targets:
            raise EditInputError("the target cannot be placed")
        record = {"fallbacks": [], "warnings": [], "background_blending": True, "seconds": 0.5}
        return [EditResult(Image.new("RGB", (8, 8), self.COLOURS[t]), {}, dict(record)) for t in targets]


def make_job(tmp_path: Path, index: int, target: str, *, mask: bool = True) -> EditJob:
    image, mask_file = tmp_path / "image.png", tmp_path / f"cup_{index}.png"
    Image.new("RGB", (8, 8), (9, 9, 9)).save(image)
    if mask:
        Image.fromarray(np.full((8, 8), 255, np.uint8)).save(mask_file)
    return EditJob(f"1/color/img/{index}", "img", "color", 1, index, [("cup", target)], image,
                   {"cup": mask_file}, {"cup": "manual"}, 1.0, 42, fingerprint=f"fp{index}")


def test_a_failing_batch_is_edited_one_by_one_and_the_failure_is_an_outcome(tmp_path):
    jobs = [make_job(tmp_path, 0, "red"), make_job(tmp_path, 1, "boom"), make_job(tmp_path, 2, "blue"),
            make_job(tmp_path, 3, "green", mask=False)]  # its mask file is missing: it never reaches the editor
    editor = StubEditor()
    outcomes = edit_jobs(editor, jobs)
    assert editor.batches == [["red", "boom", "blue"], ["red"], ["boom"], ["blue"]]
    assert [o.error for o in outcomes] == [None, "EditInputError: the target cannot be placed", None,
                                           f"EditInputError: mask for 'cup' not found: {jobs[3].masks['cup']}"]
    assert outcomes[0].png == encode_png(Image.new("RGB", (8, 8), (255, 0, 0))) and outcomes[1].png is None
    assert outcomes[2].record["edit_id"] == "1/color/img/2" and outcomes[2].record["mask_origins"] == {"cup": "manual"}


def test_shipped_files_are_read_as_the_disk_and_a_file_not_shipped_is_missing(tmp_path):
    jobs = [make_job(tmp_path, 0, "red"), make_job(tmp_path, 1, "blue")]
    contents = {str(f): f.read_bytes() for job in jobs for f in job_files(job)}
    del contents[str(jobs[1].masks["cup"])]
    for f in {f for job in jobs for f in job_files(job)}:
        f.unlink()  # nothing left on this disk: only what was shipped can be read
    shipped = edit_jobs(StubEditor(), jobs, ShippedFiles(contents))
    assert shipped[0].error is None
    assert shipped[1].error == f"EditInputError: mask for 'cup' not found: {jobs[1].masks['cup']}"


def test_failed_edits_are_error_rows_without_images_and_the_next_run_retries_only_them(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    jobs = [make_job(tmp_path, 0, "red"), make_job(tmp_path, 1, "boom"), make_job(tmp_path, 2, "blue")]
    assert run_jobs(StubEditor(), jobs, work, batch_size=3, progress=False) == 3
    assert [is_done(j, work) for j in jobs] == [True, False, True]
    assert not (work / "fp1.png").exists() and json.loads((work / "fp1.json").read_text())["error"]
    results = collect(jobs, work, out)
    assert list(results["error"]) == [None, "EditInputError: the target cannot be placed", None]
    assert [(out / p).is_file() for p in results["path"]] == [True, False, True]

    # The next run edits exactly the failed one; once it succeeds its failure record is gone.
    jobs[1].pairs = [("cup", "green")]
    editor = StubEditor()
    assert pending_jobs(jobs, work) == [jobs[1]]
    assert run_jobs(editor, jobs, work, batch_size=3, progress=False) == 1
    assert editor.batches == [["green"]]
    assert list(collect(jobs, work, tmp_path / "again")["error"]) == [None, None, None]


def test_a_failure_never_leaves_an_image_that_reads_as_done(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (job,) = [make_job(tmp_path, 0, "boom")]
    (work / "fp0.png").write_bytes(b"an image whose record a killed run never wrote")
    record_outcome(work, job, edit_jobs(StubEditor(), [job])[0])
    assert not is_done(job, work) and not (work / "fp0.png").exists()
