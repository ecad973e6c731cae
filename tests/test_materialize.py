"""Materialising ALE-Bench: masks in any mode, git sources that cannot inject options or escape, file modes."""

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ale_edit.bench.materialize import BenchSourceError, bench_source, materialize
from ale_edit.errors import EditInputError

GRADIENT_8 = np.arange(256, dtype=np.uint8).reshape(16, 16)


def _bench(root: Path, image: Image.Image, masks: dict[str, Image.Image], image_name: str = "img_a.png") -> Path:
    """A minimal ALE-layout bench: one image and its masks."""
    (root / "images").mkdir(parents=True)
    image.save(root / "images" / image_name)
    (root / "masks" / Path(image_name).stem).mkdir(parents=True)
    for phrase, mask in masks.items():
        mask.save(root / "masks" / Path(image_name).stem / f"{phrase}_mask.png")
    return root


def test_16bit_mask_is_materialised_like_its_8bit_version(tmp_path):
    masks = {"cup": Image.fromarray(GRADIENT_8.astype(np.uint16) * 257), "plate": Image.fromarray(GRADIENT_8, "L")}
    root = _bench(tmp_path / "src", Image.new("RGB", (16, 16)), masks)
    manifest = materialize(root, tmp_path / "out", ["img_a"])
    entry = manifest["images"][0]
    cup = np.asarray(Image.open(tmp_path / "out" / entry["objects"]["cup"]))
    plate = np.asarray(Image.open(tmp_path / "out" / entry["objects"]["plate"]))
    np.testing.assert_array_equal(cup, np.where(GRADIENT_8 >= 128, 255, 0))
    np.testing.assert_array_equal(cup, plate)
    assert "cup_mask.png: mode I;16, 256 grey levels, binarised at 0.5" in entry["notes"]


def test_benchmark_image_without_an_8bit_reading_is_refused_by_name(tmp_path):
    root = _bench(tmp_path / "src", Image.fromarray(np.array([[0.0, 300.0]], np.float32)), {}, "img_a.tif")
    (root / "images" / "img_a.tif").rename(root / "images" / "img_a.png")  # a TIFF named .png, as it happens
    with pytest.raises(EditInputError, match=r"img_a\.png: image mode 'F' .*\[0\.0, 300\.0\]"):
        materialize(root, tmp_path / "out", ["img_a"])


# -- git sources: no option injection, no path escape ------------------------------------------------------------

def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture
def bench_repo(tmp_path) -> Path:
    """A local git repository holding a tiny bench in ``ale_bench/``: commit 1 has images/a.txt "one", a tag
    ``v1`` on it; branch ``dev`` (not the default) has "dev"; the default branch's head has "two"."""
    repo = tmp_path / "repo"
    (repo / "ale_bench" / "images").mkdir(parents=True)
    _git(tmp_path, "init", "--quiet", "-b", "main", str(repo))
    marker = repo / "ale_bench" / "images" / "a.txt"
    marker.write_text("one")
    _git(repo, "add", ".")
    _git(repo, "commit", "--quiet", "-m", "one")
    _git(repo, "tag", "v1")
    _git(repo, "checkout", "--quiet", "-b", "dev")
    marker.write_text("dev")
    _git(repo, "commit", "--quiet", "-am", "dev")
    _git(repo, "checkout", "--quiet", "main")
    marker.write_text("two")
    _git(repo, "commit", "--quiet", "-am", "two")
    return repo


def _read_marker(source: str, rev=None, subdir: str = "ale_bench") -> str:
    with bench_source(source, rev, subdir) as root:
        return (root / "images" / "a.txt").read_text()


def test_git_source_by_path_and_file_url_at_each_kind_of_rev(bench_repo):
    first = _git(bench_repo, "rev-parse", "v1")
    assert _read_marker(f"{bench_repo}/.git") == "two"  # HEAD of the default branch
    assert _read_marker(f"file://{bench_repo}/.git", "v1") == "one"
    assert _read_marker(f"{bench_repo}/.git", first) == "one"
    assert _read_marker(f"{bench_repo}/.git", first[:10]) == "one"
    assert _read_marker(f"{bench_repo}/.git", "dev") == "dev"  # a branch of the origin only


def test_option_like_source_is_refused_and_runs_nothing(tmp_path):
    pwned = tmp_path / "pwned"
    with pytest.raises(BenchSourceError, match=r"bench\.source='--upload-pack=touch .*' starts with '-'"):
        _read_marker(f"--upload-pack=touch {pwned};.git")
    assert not pwned.exists()
    with pytest.raises(BenchSourceError, match=r"bench\.source='-c' starts with '-'"):
        _read_marker("-c")


def test_command_running_transport_is_refused(tmp_path):
    pwned = tmp_path / "pwned.git"
    with pytest.raises(BenchSourceError, match="cannot fetch ALE-Bench from ext::"):
        _read_marker(f"ext::touch {pwned}")
    assert not pwned.exists()


@pytest.mark.parametrize("rev", ["--help", "-c", "-ccore.hooksPath=/tmp", "--orphan=evil", "-"])
def test_option_like_rev_is_refused(bench_repo, rev):
    with pytest.raises(BenchSourceError, match=rf"bench\.rev='{re.escape(rev)}' starts with '-'"):
        _read_marker(f"{bench_repo}/.git", rev)


def test_unknown_rev_is_named(bench_repo):
    with pytest.raises(BenchSourceError, match=r"bench\.rev='no-such-branch' is not a commit, tag or branch"):
        _read_marker(f"{bench_repo}/.git", "no-such-branch")


@pytest.mark.parametrize("subdir", ["../../../etc", "ale_bench/../../x", "/etc"])
def test_subdir_outside_the_clone_is_refused(bench_repo, subdir):
    with pytest.raises(BenchSourceError, match=rf"bench\.subdir='{re.escape(subdir)}' must be a folder inside"):
        _read_marker(f"{bench_repo}/.git", None, subdir)


def test_subdir_escaping_through_a_symlink_is_refused(bench_repo, tmp_path):
    outside = tmp_path / "outside"
    (outside / "images").mkdir(parents=True)
    (outside / "images" / "a.txt").write_text("not the repository's")
    (bench_repo / "linked").symlink_to(outside)
    _git(bench_repo, "add", "linked")
    _git(bench_repo, "commit", "--quiet", "-m", "a link out")
    with pytest.raises(BenchSourceError, match=r"bench\.subdir='linked' leads outside the repository"):
        _read_marker(f"{bench_repo}/.git", None, "linked")


def test_symlink_out_of_the_clone_inside_the_bench_is_refused(bench_repo, tmp_path):
    secret = tmp_path / "secret.json"
    secret.write_text("{}")
    (bench_repo / "ale_bench" / "prompts" / "1" / "color").mkdir(parents=True)
    (bench_repo / "ale_bench" / "prompts" / "1" / "color" / "a_prompts.json").symlink_to(secret)
    _git(bench_repo, "add", ".")
    _git(bench_repo, "commit", "--quiet", "-m", "a link out")
    with pytest.raises(BenchSourceError, match=r"ale_bench/prompts/1/color/a_prompts\.json .* symbolic link outside"):
        _read_marker(f"{bench_repo}/.git")
