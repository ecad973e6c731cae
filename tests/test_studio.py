"""The studio (``ale-edit studio``): its functions on tiny models and real ALE-Bench data, the masks it saves
imported by the real ``masks`` stage, and the page driven by gradio_client (tests/test_studio_browser.py drives
it in a real browser)."""

import dataclasses
import json
import sys

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from ale_edit import grounding
from ale_edit.cli import main
from ale_edit.errors import EditInputError
from ale_edit.grounding import Detection
from ale_edit.images import working_image, working_size
from ale_edit.io import load_image
from ale_edit.masks import dilate_mask, dilation_radius
from ale_edit.methods import method_names
from ale_edit.pairs import mask_file_name
from ale_edit.bench.dataset import load_prompt_instances
from ale_edit.studio import (
    MAX_PAIRS, NO_TYPE, STUDIO_EXTRA, Studio, detect_phrase_masks, dvc_command, edit_settings, given_options,
    instance_label, mask_from_layers, mask_layer, option_fields, options_by_method, parse_pairs, parse_schedule,
    save_masks, typed_number, whole_number,
)
from stage_utils import load_stage, smoke_params, write_params
from studio_helpers import served as served_page

IMAGE = "artificial_img05"
SIZE, STEPS = 64, 2


def invoke_stage(stage, args):
    return CliRunner().invoke(load_stage(stage), args, catch_exceptions=False)


def found_only(phrase, box):
    """A detector stub (Grounding DINO's half) that finds ``phrase`` in ``box`` of the working image and nothing
    else; SAM (tiny, real) still segments the box."""
    return lambda *args, **kwargs: [Detection(phrase, 0.9, box)]


@pytest.fixture(scope="module")
def studio(ale_bench, tmp_path_factory):
    return Studio(ale_bench, tmp_path_factory.mktemp("refined"), "tiny", device="cpu")


@pytest.fixture(scope="module")
def image(ale_bench):
    return load_image(ale_bench / "images" / f"{IMAGE}.jpg")


# ---------------------------------------------------------------------------------------------------------------
# Functions


def test_bad_pairs_give_the_cli_s_own_errors(ale_bench, tmp_path, image):
    source = str(ale_bench / "images" / f"{IMAGE}.jpg")
    one_line = ("cup", "cup= ", "ball -> red ballbox=wooden box", "cup=a=b", "cup -> a -> b")
    for text, cli_args in (*((line, ["-e", line]) for line in one_line),
                           ("cup=a\ncup=b", ["-e", "cup=a", "-e", "cup=b"])):
        with pytest.raises(EditInputError) as raised:
            parse_pairs(text, image)
        cli = CliRunner().invoke(main, ["edit", source, *cli_args, "--model", "tiny", "-o", str(tmp_path / "o.png")])
        assert cli.exit_code != 0
        assert str(raised.value) in " ".join(cli.output.split()), (str(raised.value), cli.output)
    with pytest.raises(EditInputError, match="at most 3 objects"):
        parse_pairs("a=b\nc=d\ne=f\ng=h", image)
    with pytest.raises(EditInputError, match="at least one"):
        parse_pairs("\n \n", image)
    assert parse_pairs(" cup = golden cup \n\nbook=red book", image) == [("cup", "golden cup"), ("book", "red book")]
    # The paper's notation too. A line with both separators, or one twice, is two pairs run together or a typo:
    # refused, by the CLI's -e as well (above), rather than read into a target (and a mask's file name).
    assert parse_pairs("cup -> golden cup\nbook=red book", image) == [("cup", "golden cup"), ("book", "red book")]
    for line, message in (("cup=arrow -> sign", "holds both '->' and '='"), ("a=b=c", "holds '=' more than once"),
                          ("a -> b -> c", "holds '->' more than once")):
        with pytest.raises(EditInputError, match=message):
            parse_pairs(line, image)


def test_detect_gives_each_phrase_its_mask_dilated_as_the_editor_does_and_flags_a_miss(studio, image, monkeypatch):
    monkeypatch.setattr(grounding, "run_detector", found_only("cup", (8.0, 8.0, 56.0, 56.0)))
    # The authors' dilation, 0.04: 2 px at this size (the default 0.01 is 0 px below 100 px).
    settings = dataclasses.replace(edit_settings("ale", steps=STEPS, size=SIZE), dilation=0.04)
    found = studio.detect(image, "cup=golden cup\nbook=red book", settings)
    assert list(found.masks) == ["cup", "book"]
    cup = found.masks["cup"]
    assert cup.dtype == bool and cup.shape == (image.height, image.width) and cup.any()
    assert found.masks["book"] is None and found.dilated["book"] is None
    assert found.missed == ["book"] and "NOT FOUND by the detector: book" in found.status()
    # The dilated mask is the editor's: the detector's working-size mask dilated by dilation * size, then resized.
    work = working_image(image, SIZE)
    small = grounding.detect_masks(work, ["cup", "book"], studio.grounding)["cup"]
    expected = dilate_mask(small, dilation_radius(settings.dilation, SIZE))
    assert np.array_equal(found.dilated["cup"],
                          np.asarray(Image.fromarray(expected).resize(image.size, Image.NEAREST)))
    assert found.dilated["cup"].sum() > cup.sum()


def test_detect_with_every_phrase_missed_flags_them_all(image):
    found = detect_phrase_masks(image, ["cup", "book"], lambda im, phrases: {p: None for p in phrases},
                                edit_settings("ale", size=SIZE))
    assert found.missed == ["cup", "book"] and "found" not in found.status()


def test_a_mask_goes_through_the_page_s_layer_and_back(image):
    mask = np.zeros((image.height, image.width), bool)
    mask[10:40, 20:90] = True
    layer = mask_layer(mask, image.size)
    assert layer.mode == "RGBA" and layer.size == image.size
    assert np.array_equal(mask_from_layers([layer, None], image.size), mask)
    erased = np.asarray(layer).copy()
    erased[10:20, :, 3] = 0  # the eraser clears alpha
    assert np.array_equal(mask_from_layers([erased], image.size), mask & (np.arange(image.height) >= 20)[:, None])


def test_saved_masks_are_exactly_what_the_masks_stage_imports(ale_bench, tmp_path):
    params = smoke_params(ale_bench, bench__images=[IMAGE])
    bench = tmp_path / "bench"
    assert invoke_stage("bench", ["--params", str(write_params(tmp_path / "p.yaml", params)),
                                  "--out", str(bench)]).exit_code == 0
    edits = tmp_path / "edits.parquet"
    assert invoke_stage("prompts", ["--params", str(tmp_path / "p.yaml"), "--bench", str(bench),
                                    "--out", str(edits)]).exit_code == 0
    phrases = sorted({p for row in pd.read_parquet(edits).itertuples() for p in row.sources})
    image = load_image(bench / "images" / f"{IMAGE}.jpg")
    # Rectangles, unlike the benchmark's own masks: only an import from the studio's folder gives them.
    masks = {}
    for k, phrase in enumerate(phrases):
        mask = np.zeros((image.height, image.width), bool)
        mask[20 * k: 20 * k + image.height // 3, 10 * k: 10 * k + image.width // 2] = True
        masks[phrase] = mask
    refined = tmp_path / "refined"
    written = save_masks(refined, IMAGE, image.size, masks)
    assert sorted(p.name for p in (refined / IMAGE).iterdir()) == sorted(mask_file_name(p) for p in phrases)
    for phrase, path in written.items():
        assert path == refined / IMAGE / mask_file_name(phrase)
        with Image.open(path) as saved:
            assert saved.mode == "L" and saved.size == image.size
            values = np.asarray(saved)
        assert set(np.unique(values)) <= {0, 255}
        assert np.array_equal(values == 255, masks[phrase])
    assert dvc_command(refined) == f"dvc exp run -S masks.source=manual-then-auto -S masks.manual_dir={refined}"

    params = smoke_params(ale_bench, bench__images=[IMAGE], masks__source="manual", masks__manual_dir=str(refined))
    out = tmp_path / "masks"
    result = invoke_stage("masks", ["--params", str(write_params(tmp_path / "p2.yaml", params)), "--bench",
                                    str(bench), "--edits", str(edits), "--out", str(out)])
    assert result.exit_code == 0, result.output
    records = json.loads((out / "masks.json").read_text())
    assert {r["phrase"] for r in records} == set(phrases)
    assert {r["origin"] for r in records} == {"manual"}
    work = working_size(image, params["edit"]["size"])
    for r in records:
        imported = np.asarray(Image.open(out / r["file"])) == 255
        assert np.array_equal(imported, np.asarray(Image.fromarray(masks[r["phrase"]]).resize(work, Image.NEAREST)))


def test_save_refuses_masks_the_stage_would_not_import_and_writes_nothing(tmp_path, image):
    full = np.ones((image.height, image.width), bool)
    with pytest.raises(EditInputError, match="'cup' is empty"):
        save_masks(tmp_path, IMAGE, image.size, {"book": full, "cup": np.zeros_like(full)})
    with pytest.raises(EditInputError, match="'cup' is empty"):
        save_masks(tmp_path, IMAGE, image.size, {"cup": None})
    with pytest.raises(EditInputError, match=r"the mask for 'cup' is 10x10"):
        save_masks(tmp_path, IMAGE, image.size, {"cup": np.ones((10, 10), bool)})
    with pytest.raises(EditInputError, match="which the masks stage reads as the phrase 'tea-cup-"):
        save_masks(tmp_path, IMAGE, image.size, {"tea_cup": full})
    with pytest.raises(EditInputError, match="one folder's name"):
        save_masks(tmp_path, "../elsewhere", image.size, {"cup": full})
    assert list(tmp_path.iterdir()) == []


def test_edit_and_compare_run_every_method_on_the_same_input(studio, image, monkeypatch):
    monkeypatch.setattr(grounding, "run_detector", found_only("cup", (8.0, 8.0, 56.0, 56.0)))
    masks = {"book": np.ones((image.height, image.width), bool)}
    settings = edit_settings("ale", steps=STEPS, size=SIZE, options={"bb": False})
    result = studio.edit(image, "cup=golden cup\nbook=red book", masks, settings, edit_type="color", seed=3)
    assert result.image.size == (SIZE, SIZE)
    record = result.record
    assert record["method"] == "ale" and record["pairs"] == [["cup", "golden cup"], ["book", "red book"]]
    assert record["mask_sources"] == {"book": "given", "cup": "detected"}
    assert record["settings"]["options"]["bb"] is False and record["schedule"] == 1.0
    again = studio.edit(image, "cup=golden cup\nbook=red book", masks, settings, edit_type="color", seed=3)
    assert np.array_equal(np.asarray(result.image), np.asarray(again.image))
    assert studio.diffusion is studio.diffusion  # loaded once per studio

    compared = studio.compare(image, "cup=golden cup", {}, steps=STEPS, size=SIZE,
                              options={"ale": {"ore": False}, "p2p": {"cross_replace": 0.5}}, seed=3)
    assert [m for m, _ in compared] == list(method_names())
    for method, r in compared:
        assert r.record["method"] == method and r.image.size == (SIZE, SIZE)
    ale = dict(compared)["ale"].record
    assert ale["settings"]["options"]["ore"] is False
    assert dict(compared)["p2p"].record["settings"]["options"]["cross_replace"] == 0.5
    # Every method's settings are checked before the first edit runs.
    with pytest.raises(EditInputError, match="unknown setting p2p.ore"):
        studio.compare(image, "cup=golden cup", {}, steps=STEPS, size=SIZE, options={"p2p": {"ore": False}},
                       track=lambda methods: pytest.fail("an edit ran"))


def test_a_blank_schedule_means_the_edit_type_s_and_a_word_is_named():
    assert parse_schedule("") is None and parse_schedule(" 0.6 ") == 0.6
    with pytest.raises(EditInputError, match="schedule 'half' is not a number"):
        parse_schedule("half")


def test_a_blank_or_fractional_count_is_named():
    assert whole_number(64, "size") == 64 and whole_number(15.0, "steps") == 15
    for value in (None, "", 2.5):
        with pytest.raises(EditInputError, match="steps must be a whole number"):
            whole_number(value, "steps")


def test_typed_numbers_follow_the_settings_numeric_rule():
    """NaN and infinity are named like any other bad number, as on the command line and in params.yaml."""
    for value in ("nan", "inf", float("nan"), float("-inf")):
        with pytest.raises(EditInputError, match="steps must be a whole number"):
            whole_number(value, "steps")
    with pytest.raises(EditInputError, match="schedule must be a finite number; got nan"):
        parse_schedule("nan")
    with pytest.raises(EditInputError, match="schedule must be <= 1"):
        parse_schedule("1.5")
    with pytest.raises(EditInputError, match="seed must be <= 9223372036854775807"):
        whole_number(2**63, "seed", 0, 2**63 - 1)
    assert whole_number(str(2**63 - 1), "seed", 0, 2**63 - 1) == 2**63 - 1


def page_values(method, **changed):
    """The values of ``method``'s option widgets as the page first shows them, with ``changed`` ones."""
    shown = {f.name: "" if f.metadata["default"] is None else f.metadata["default"] for f in option_fields(method)}
    shown = {k: v if isinstance(v, (bool, str)) or option_fields_choices(method, k) else str(v)
             for k, v in shown.items()}
    return [changed.get(k, v) for k, v in shown.items()]


def option_fields_choices(method, name):
    return next(f.metadata.get("choices") for f in option_fields(method) if f.name == name)


OPTIONS = [v for m in method_names() for v in page_values(m)]  # every method's option widgets, as first shown


def test_each_method_s_options_come_from_its_declaration_and_only_changes_are_passed():
    from ale_edit.methods import method_class

    for method in method_names():
        names = [f.name for f in option_fields(method)]
        assert names and set(names) <= {f.name for f in __import__("dataclasses").fields(method_class(method).Options)}
        assert given_options(method, page_values(method)) == {}  # as shown: nothing given, defaults apply
    assert given_options("ale", page_values("ale", bb=False, bb_start="1")) == {"bb": False, "bb_start": 1}
    assert given_options("p2p", page_values("p2p", cross_replace=" 0.6 ")) == {"cross_replace": 0.6}
    assert given_options("p2p", page_values("p2p", cross_replace="")) == {}  # blank: the default
    with pytest.raises(EditInputError, match="p2p.cross_replace must be a number, got 'most'"):
        given_options("p2p", page_values("p2p", cross_replace="most"))
    with pytest.raises(EditInputError, match="ale.bb_start must be a whole number, got 1.5"):
        given_options("ale", page_values("ale", bb_start="1.5"))
    flat = [v for m in method_names() for v in page_values(m, **({"ore": False} if m == "ale" else {}))]
    assert options_by_method(flat) == {m: ({"ore": False} if m == "ale" else {}) for m in method_names()}
    assert typed_number(" 3 ", int, "n") == 3 and typed_number("", float, "x") is None


def test_settings_take_the_method_s_own_options_and_bad_values_give_the_settings_message():
    assert edit_settings("ale", options={"ore": False, "bb": True}).options.ore is False
    assert edit_settings("p2p", options={"cross_replace": 0.6}).options.cross_replace == 0.6
    with pytest.raises(EditInputError, match="unknown setting p2p.ore"):
        edit_settings("p2p", options={"ore": False})
    with pytest.raises(EditInputError, match="multiple of 64"):
        edit_settings("ale", size=100)


def test_studio_without_gradio_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio raises ImportError
    result = CliRunner().invoke(main, ["studio", "--model", "tiny"])
    assert result.exit_code == 1
    assert STUDIO_EXTRA in result.output and "gradio" in result.output


def test_a_folder_that_is_not_ale_bench_is_named_before_serving(tmp_path):
    pytest.importorskip("gradio")
    result = CliRunner().invoke(main, ["studio", "--bench", str(tmp_path), "--model", "tiny"])
    assert result.exit_code == 1 and "no images folder" in result.output


# ---------------------------------------------------------------------------------------------------------------
# The page, served on a free localhost port, driven by gradio_client


@pytest.fixture(scope="module")
def served(ale_bench, tmp_path_factory):
    pytest.importorskip("gradio")
    studio = Studio(ale_bench, tmp_path_factory.mktemp("served_masks"), "tiny", device="cpu")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(grounding, "run_detector", found_only("cup", (8.0, 8.0, 56.0, 56.0)))
        with served_page(studio) as address:
            yield address, studio


@pytest.fixture(scope="module")
def client(served):
    from gradio_client import Client

    return Client(served[0], verbose=False)


def test_page_detects_saves_and_edits(served, client, ale_bench):
    from gradio_client import handle_file

    source = handle_file(str(ale_bench / "images" / f"{IMAGE}.jpg"))
    pairs = "cup=golden cup\nbook=red book"
    status, detected, *updates = client.predict(source, pairs, STEPS, SIZE, api_name="/detect")
    # gradio_client leaves out the rows that show a pair's editor (the browser tests check them); one editor per
    # pair, labelled with its phrase, the third emptied.
    editor_updates = updates[:MAX_PAIRS]
    assert [u.get("label") for u in editor_updates] == ["mask 1: cup", "mask 2: book", None]
    assert editor_updates[2]["value"] is None
    cup_editor, book_editor = (u["value"] for u in editor_updates[:2])
    assert "NOT FOUND by the detector: book" in status
    image = load_image(ale_bench / "images" / f"{IMAGE}.jpg")
    assert Image.open(detected).size == image.size
    cup = mask_from_layers([Image.open(layer) for layer in cup_editor["layers"]], image.size)
    assert cup.any() and not mask_from_layers([Image.open(book_editor["layers"][0])], image.size).any()

    # The missed phrase gets a mask painted in: its layer, sent back as the page sends it.
    painted = np.zeros((image.height, image.width), bool)
    painted[5:30, 5:60] = True
    layer_file = served[1].masks_dir.parent / "book_layer.png"
    mask_layer(painted, image.size).save(layer_file)

    def editor(value, layers):
        return {"background": handle_file(value["background"]), "layers": [handle_file(p) for p in layers],
                "composite": None}

    editors = [editor(cup_editor, cup_editor["layers"]),
               editor(book_editor, [str(layer_file)]), None]
    saved = client.predict(source, IMAGE, pairs, *editors, api_name="/save")
    masks_dir = served[1].masks_dir
    assert dvc_command(masks_dir) in saved
    with Image.open(masks_dir / IMAGE / "cup_mask.png") as f:
        assert f.size == image.size and np.array_equal(np.asarray(f) == 255, cup)
    with Image.open(masks_dir / IMAGE / "book_mask.png") as f:
        assert np.array_equal(np.asarray(f) == 255, painted)

    shown_source, shown_masks, result, record = client.predict(
        source, pairs, "ale", "color", "", STEPS, SIZE, 7, *OPTIONS, *editors, api_name="/edit")
    assert Image.open(result).size == (SIZE, SIZE) and Image.open(shown_source).size == (SIZE, SIZE)
    assert record["method"] == "ale" and record["mask_sources"] == {"cup": "given", "book": "given"}
    assert record["seed"] == 7 and record["settings"]["steps"] == STEPS


def test_page_takes_an_uploaded_mask_into_the_phrase_s_editor(served, client, ale_bench, tmp_path):
    from gradio_client import handle_file

    image = load_image(ale_bench / "images" / f"{IMAGE}.jpg")
    mask = np.zeros((image.height, image.width), bool)
    mask[100:300, 200:700] = True
    mask_file = tmp_path / "book.png"
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(mask_file)
    update = client.predict(handle_file(str(ale_bench / "images" / f"{IMAGE}.jpg")), handle_file(str(mask_file)),
                            "cup=golden cup\nbook=red book", api_name="/upload_mask_2")
    assert np.array_equal(mask_from_layers([Image.open(p) for p in update["value"]["layers"]], image.size), mask)


def test_page_compares_every_method(client, ale_bench):
    from gradio_client import handle_file

    source = handle_file(str(ale_bench / "images" / f"{IMAGE}.jpg"))
    gallery, records = client.predict(source, "cup=golden cup", "color", "", STEPS, SIZE, 7, *OPTIONS,
                                      None, None, None, api_name="/compare")
    assert [item["caption"] for item in gallery] == ["source", *method_names()]
    assert sorted(records) == sorted(method_names())


def test_page_shows_the_cli_s_error_for_a_bad_pair(client, ale_bench, image):
    from gradio_client import handle_file

    source = handle_file(str(ale_bench / "images" / f"{IMAGE}.jpg"))
    with pytest.raises(EditInputError) as expected:
        parse_pairs("cup", image)
    with pytest.raises(Exception) as raised:
        client.predict(source, "cup", "ale", NO_TYPE, "", STEPS, SIZE, 7, *OPTIONS, None, None, None,
                       api_name="/edit")
    assert str(expected.value) in str(raised.value)


def test_page_lists_a_bench_image_s_official_edits(client, ale_bench):
    path, name, instances = client.predict(IMAGE, api_name="/pick_image")
    assert name == IMAGE and Image.open(path).size == load_image(ale_bench / "images" / f"{IMAGE}.jpg").size
    official = [instance_label(i) for i in load_prompt_instances(ale_bench, images=IMAGE)]
    assert official and [label for label, _ in instances["choices"]] == official
    chosen = load_prompt_instances(ale_bench, images=IMAGE, n_objects=2)[0]
    pairs, edit_type = client.predict(IMAGE, instance_label(chosen), api_name="/pick_instance")
    assert parse_pairs(pairs) == list(chosen.edits) and edit_type == chosen.edit_type


def test_the_dvc_line_names_a_folder_the_masks_stage_finds(tmp_path, monkeypatch):
    line = "dvc exp run -S masks.source=manual-then-auto -S masks.manual_dir="
    monkeypatch.chdir(tmp_path)  # not a project: a relative folder is named absolutely
    assert dvc_command("masks/refined") == line + str(tmp_path / "masks/refined")
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")  # the project: relative to it, as params.yaml holds it
    assert dvc_command("masks/refined") == line + "masks/refined"
    assert dvc_command(tmp_path / "my masks") == line + f"'{tmp_path / 'my masks'}'"
