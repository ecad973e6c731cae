"""The studio in a real browser: headless Chromium driven by Selenium with real mouse actions (ActionChains) on the
mask editor's canvas, the page served on 127.0.0.1 by the test (tiny models, a detector stub).

What the mask tests assert, pixel for pixel on the saved files: a saved mask is the mask the editor was given (an
uploaded file, or a detection away from the image's corner), plus one brush stroke, minus one eraser stroke. A
stroke is the set of image pixels within the brush radius (``studio.BRUSH_RADIUS``) of the segment the pointer
moved along, mapped from the canvas to the image by the image's on-screen rectangle (found in a screenshot of the
canvas). Only pixels within ``EDGE`` of a stroke's boundary are left unchecked: there the pointer's whole-pixel
position on a zoomed canvas and the brush's antialiasing decide. Every other pixel, the given mask's own edges
included, must be exactly as expected, so a mask drawn even one pixel away from where it was given fails.
"""

from __future__ import annotations

import io
import re
import shutil
import time

import numpy as np
import pytest
from PIL import Image, ImageDraw

from ale_edit.pairs import mask_file_name

pytest.importorskip("gradio")
webdriver = pytest.importorskip("selenium.webdriver")

from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from ale_edit.studio import (  # noqa: E402
    BRUSH_RADIUS, EditCancelled, Studio, detect_phrase_masks, edit_settings,
)
from studio_helpers import served  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="Chromium and chromedriver are not installed (Debian: apt-get install -y chromium chromium-driver)")

W, H = 640, 480
IMAGE_RGB = (40, 120, 40)  # one colour, so the image's rectangle on the canvas is found in a screenshot
BOX = (slice(150, 300), slice(250, 450))  # the stub's detection on the working image: rows, columns, mid-image
SIZE = 640  # the working size the page is given
EDGE = 4.0  # unchecked band either side of a stroke's boundary, in image pixels (see the module docstring)
WAIT = 60


def box_detector(image, phrases):
    """Grounded-SAM's stand-in: finds "box" as ``BOX`` of the working image, misses everything else."""
    found = {}
    for phrase in phrases:
        if phrase == "box":
            mask = np.zeros((image.height, image.width), bool)
            mask[BOX] = True
            found[phrase] = mask
        else:
            found[phrase] = None
    return found


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("browser_files")
    Image.new("RGB", (W, H), IMAGE_RGB).save(folder / "scene.png")
    ellipse = Image.new("L", (W, H), 0)
    ImageDraw.Draw(ellipse).ellipse((80, 160, 300, 380), fill=255)  # the off-corner mask
    ellipse.save(folder / "ellipse.png")
    (folder / "notes.png").write_text("not a picture\n")
    Image.new("RGB", (300, 200), (200, 60, 60)).save(folder / "other.png")
    return folder


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    studio = Studio(None, tmp_path_factory.mktemp("browser_masks"), "tiny", device="cpu")
    studio.detector = lambda: box_detector
    with served(studio) as address:
        yield address, studio


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    # WebGL on SwiftShader (the editor's canvas is WebGL): faster here than Chromium's fallback without a GPU.
    for arg in ("--headless=new", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                "--disable-dev-shm-usage", "--window-size=1280,1000", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    options.binary_location = CHROMIUM
    driver = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page(site, browser):
    """A fresh page load."""
    browser.set_window_size(1280, 1000)
    browser.get(site[0])
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#detect"))
    return browser


def wait_for(driver, condition, timeout=WAIT):
    return WebDriverWait(driver, timeout, poll_frequency=0.05,
                         ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)).until(condition)


def element(driver, css):
    return driver.find_element(By.CSS_SELECTOR, css)


def upload(driver, css, path):
    # A file box holds its file input; an upload button's comes just before it.
    element(driver, f"{css} input[type=file], input[type=file]:has(+ {css})").send_keys(str(path))


def field(driver, css):
    return element(driver, f"{css} textarea, {css} input")


def value(driver, css) -> str:
    return field(driver, css).get_attribute("value")


def type_into(driver, css, text):
    box = field(driver, css)
    box.clear()
    box.send_keys(text)


def body_text(driver) -> str:
    return element(driver, "body").text


def load_image(driver, path):
    upload(driver, "#upload-image", path)
    wait_for(driver, lambda d: value(d, "#image-name") == path.stem)


def start(driver, files, pairs, size=SIZE):
    load_image(driver, files / "scene.png")
    type_into(driver, "#pairs", pairs)
    type_into(driver, "#size", str(size))


def detect(driver, n_pairs):
    element(driver, "#detect").click()
    wait_for(driver, lambda d: value(d, "#status") and all(element(d, f"#mask-editor-{k + 1}").is_displayed()
                                                          for k in range(n_pairs)))
    time.sleep(1.0)  # the editor loads its background and layer after it is shown


class Canvas:
    """A mask editor and where the image lies in it (from a screenshot of the editor: the image is ``IMAGE_RGB``).
    The pointer is placed relative to the editor's box, over its canvas."""

    def __init__(self, driver, slot: int):
        self.driver = driver
        self.editor = f"#mask-editor-{slot}"
        self.element = element(driver, self.editor)
        shot = np.asarray(Image.open(io.BytesIO(self.element.screenshot_as_png)).convert("RGB")).astype(int)
        image = np.abs(shot - np.array(IMAGE_RGB)).sum(-1) < 30
        ys, xs = np.nonzero(image)
        self.x0, self.y0 = xs.min(), ys.min()
        self.scale = (xs.max() + 1 - xs.min()) / W
        assert abs((ys.max() + 1 - ys.min()) / H - self.scale) < 0.01, "the whole image is not in view"
        self.width, self.height = self.element.size["width"], self.element.size["height"]

    def offset(self, x, y) -> tuple[tuple[int, int], tuple[float, float]]:
        """Selenium's whole-pixel pointer offset from the editor's centre nearest image pixel (x, y), and the image
        pixel that offset lands on (pixel centres are whole numbers, so a pointer at CSS x is pixel
        (x - x0) / scale - 0.5)."""
        cx, cy = self.width // 2, self.height // 2
        ox = round(self.x0 + (x + 0.5) * self.scale - cx)
        oy = round(self.y0 + (y + 0.5) * self.scale - cy)
        return (ox, oy), ((cx + ox - self.x0) / self.scale - 0.5, (cy + oy - self.y0) / self.scale - 0.5)

    def stroke(self, tool: str, start, end, steps=6) -> list[tuple[float, float]]:
        """Drag the pointer with ``tool`` from image pixel ``start`` to ``end``; the image pixels it passed."""
        element(self.driver, f"{self.editor} button[aria-label='{tool}']").click()
        points = [self.offset(start[0] + k / steps * (end[0] - start[0]), start[1] + k / steps * (end[1] - start[1]))
                  for k in range(steps + 1)]
        actions = ActionChains(self.driver, duration=10)  # ms per pointer move (Selenium's default: 250)
        actions.move_to_element_with_offset(self.element, *points[0][0])
        actions.click_and_hold()
        for move, _ in points[1:]:
            actions.move_to_element_with_offset(self.element, *move)
        actions.release().perform()
        time.sleep(0.3)
        return [at for _, at in points]


def path_distance(points) -> np.ndarray:
    """Each image pixel's distance to the polyline through ``points`` (pixel centres)."""
    yy, xx = np.mgrid[0:H, 0:W]
    distance = np.full((H, W), np.inf)
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:]):
        dx, dy = x1 - x0, y1 - y0
        t = np.clip(((xx - x0) * dx + (yy - y0) * dy) / max(dx * dx + dy * dy, 1e-9), 0, 1)
        distance = np.minimum(distance, np.hypot(xx - (x0 + t * dx), yy - (y0 + t * dy)))
    return distance


def check_saved(path, given: np.ndarray, painted, erased):
    """The saved mask is ``given`` | painted stroke & ~erased stroke, except within ``EDGE`` of a stroke's edge."""
    with Image.open(path) as f:
        assert f.mode == "L" and f.size == (W, H)
        saved = np.asarray(f) == 255
    paint, erase = path_distance(painted), path_distance(erased)
    expected = (given | (paint <= BRUSH_RADIUS)) & ~(erase <= BRUSH_RADIUS)
    edges = (np.abs(paint - BRUSH_RADIUS) <= EDGE) | (np.abs(erase - BRUSH_RADIUS) <= EDGE)
    wrong = (saved != expected) & ~edges
    assert not wrong.any(), f"{wrong.sum()} pixels differ, within x {np.nonzero(wrong)[1].min()}-" \
                            f"{np.nonzero(wrong)[1].max()}, y {np.nonzero(wrong)[0].min()}-{np.nonzero(wrong)[0].max()}"
    # The strokes did something: the painted core is in, the erased core is out.
    assert saved[paint <= BRUSH_RADIUS - EDGE].all() and not saved[erase <= BRUSH_RADIUS - EDGE].any()
    return saved


def test_refined_masks_are_saved_exactly_where_they_were_given_painted_and_erased(page, site, files):
    _, studio = site
    start(page, files, "ball=red ball\nbox=wooden box")
    detect(page, 2)
    assert "NOT FOUND by the detector: ball" in value(page, "#status")
    # The uploaded mask for ball lies off the corner (x 80-300, y 160-380).
    upload(page, "#mask-upload-1", files / "ellipse.png")
    time.sleep(2.0)
    ball = Canvas(page, 1)
    ball_paint = ball.stroke("Brush", (420, 80), (560, 110))
    ball_erase = ball.stroke("Erase", (120, 270), (250, 300))
    # The detected box lies mid-image: rows 150-299, columns 250-449.
    box = Canvas(page, 2)
    box_paint = box.stroke("Brush", (80, 60), (200, 90))
    box_erase = box.stroke("Erase", (300, 220), (420, 240))

    element(page, "#save-masks").click()
    wait_for(page, lambda d: "Saved 2 mask(s)" in element(d, "#saved").text)
    folder = studio.masks_dir / "scene"
    ellipse = np.asarray(Image.open(files / "ellipse.png")) == 255
    check_saved(folder / mask_file_name("ball"), ellipse, ball_paint, ball_erase)
    # The detection as the page made it: the stub's box on the working image, brought to the image's size.
    image = Image.open(files / "scene.png").convert("RGB")
    detected = detect_phrase_masks(image, ["box"], box_detector, edit_settings("ale", size=SIZE)).masks["box"]
    rows, columns = np.nonzero(detected)
    assert rows.min() > 100 and columns.min() > 200  # far from the corner
    check_saved(folder / mask_file_name("box"), detected, box_paint, box_erase)


def progress_counts(driver) -> list[tuple[int, int]]:
    return [(int(a), int(b)) for a, b in re.findall(r"(\d+)/(\d+)", element(driver, "#result").text)]


def test_an_edit_s_progress_advances_with_its_time_left_and_cancel_stops_it(page, site, files, monkeypatch):
    studio, outcomes = site[1], []
    edit = studio.edit

    def recorded(*args, **kwargs):
        try:
            outcomes.append(edit(*args, **kwargs))
        except Exception as exc:
            outcomes.append(exc)
            raise

    monkeypatch.setattr(studio, "edit", recorded)
    start(page, files, "ball=red ball", size=320)
    type_into(page, "#steps", "50")  # the sampler's most
    element(page, "#edit").click()
    seen, texts = set(), []
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline and len(seen) < 3:
        text = element(page, "#result").text
        texts.append(text)
        seen.update(re.findall(r"(\d+)/50 steps", text))
        time.sleep(0.05)
    assert len(seen) >= 3, texts[-5:]  # several different step counts shown while it runs
    assert any(re.search(r"about \d+ (s|min) left", t) for t in texts), texts[-5:]
    element(page, "#cancel").click()
    wait_for(page, lambda d: outcomes)
    # The edit stopped at its next step (not just the page's wait for it), and no result is shown.
    assert [type(o) for o in outcomes] == [EditCancelled]
    assert "sampling" not in element(page, "#result").text and not page.find_elements(By.CSS_SELECTOR, "#result img")


def test_a_new_image_clears_what_belonged_to_the_last_one(page, files):
    start(page, files, "ball=red ball", size=64)
    detect(page, 1)
    upload(page, "#mask-upload-1", files / "ellipse.png")
    time.sleep(1.0)
    load_image(page, files / "other.png")
    wait_for(page, lambda d: not any(e.is_displayed() for e in d.find_elements(By.CSS_SELECTOR, "#mask-slot-1")))
    assert value(page, "#pairs") == ""
    assert value(page, "#status") == ""
    assert value(page, "#image-name") == "other"


@pytest.mark.parametrize("pairs, message", [
    ("ball -> red ballbox=wooden box", "holds both '->' and '='"),
    ("ball=red=ball", "holds '=' more than once"),
    ("ball", "is not of the form SOURCE=TARGET"),
    ("a=b\nc=d\ne=f\ng=h", "at most 3 objects"),
])
def test_each_bad_pair_line_shows_its_message(page, files, pairs, message):
    start(page, files, pairs, size=64)
    element(page, "#detect").click()
    wait_for(page, lambda d: message in body_text(d))


def test_an_unreadable_upload_gets_a_plain_message_and_the_page_keeps_its_image(page, files):
    load_image(page, files / "scene.png")
    upload(page, "#upload-image", files / "notes.png")
    wait_for(page, lambda d: "notes.png is not a picture the studio can read" in body_text(d))
    assert "UnidentifiedImageError" not in body_text(page) and "gradio/" not in body_text(page)
    assert value(page, "#image-name") == "scene"


def test_bad_numbers_show_their_message(page, files):
    start(page, files, "ball=red ball", size=100)
    element(page, "#detect").click()
    wait_for(page, lambda d: "multiple of 64" in body_text(d))


def test_screenshots_at_1280_and_600_px_wide_show_the_whole_page(page, files, tmp_path):
    start(page, files, "ball=red ball\nbox=wooden box", size=64)
    detect(page, 2)
    for width in (1280, 600):
        page.set_window_size(width, 1000)
        time.sleep(0.5)
        shot = tmp_path / f"studio_{width}.png"
        page.save_screenshot(str(shot))
        with Image.open(shot) as png:
            assert png.size[0] == width
            pixels = np.asarray(png.convert("L"))
        assert len(np.unique(pixels)) > 20 and pixels.std() > 10  # text and widgets, not a blank page
        for button in ("Detect", "Save masks", "Edit", "Compare every method", "Cancel"):  # drawn by the scripts
            assert any(e.text.startswith(button) for e in page.find_elements(By.TAG_NAME, "button")), button
        # Nothing wider than the window: no horizontal scrolling at either width.
        assert page.execute_script("return document.documentElement.scrollWidth") <= width, width


def shown_options(driver) -> dict[str, list[str]]:
    from ale_edit.methods import method_names
    from ale_edit.studio import option_fields

    return {name: [f.name for f in option_fields(name)
                   if any(e.is_displayed() for e in driver.find_elements(By.ID, f"option-{name}-{f.name}"))]
            for name in method_names()}


def choose(driver, css, text):
    """Pick ``text`` in the dropdown ``css`` with the mouse (the chosen option is listed with a check mark)."""
    element(driver, "h1").click()
    field(driver, css).click()
    option = wait_for(driver, lambda d: [o for o in d.find_elements(By.CSS_SELECTOR, "ul[role=listbox] li")
                                         if o.text.split("\n")[-1].strip() == text])
    option[0].click()


def choose_method(driver, name):
    from ale_edit.methods import method_class

    choose(driver, "#method", f"{method_class(name).label} ({name})")


def test_method_options_and_masks_follow_the_chosen_method(page):
    from ale_edit.methods import method_class, method_names
    from ale_edit.studio import default_method, option_fields

    for name in [*[m for m in method_names() if m != default_method()], default_method()]:
        choose_method(page, name)
        expected = {m: [f.name for f in option_fields(m)] if m == name else [] for m in method_names()}
        wait_for(page, lambda d: shown_options(d) == expected)
        masks_shown = any(e.is_displayed() for e in page.find_elements(By.CSS_SELECTOR, "#masks-panel"))
        assert masks_shown == method_class(name).uses_masks, name


def test_picking_the_same_benchmark_image_again_starts_it_afresh(browser, ale_bench, tmp_path):
    with served(Studio(ale_bench, tmp_path, "tiny", device="cpu")) as address:
        browser.get(address)
        wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#detect"))
        choose(browser, "#bench-image", "artificial_img05")
        wait_for(browser, lambda d: value(d, "#image-name") == "artificial_img05")
        time.sleep(1.0)  # the reset that follows the pick has run: what is typed now stays
        type_into(browser, "#pairs", "cup=golden cup")
        time.sleep(1.0)
        assert value(browser, "#pairs") == "cup=golden cup"
        choose(browser, "#bench-image", "artificial_img05")
        wait_for(browser, lambda d: value(d, "#pairs") == "")
