"""Issue 26 in a real browser (Playwright + Debian's Chromium): a folder of 600 synthetic RGB shapes
(`bench/own_images.py`) through the Train form with nothing chosen but the folder, except what keeps the test
fast (one epoch, whose schedule row follows) and the split sizes, entered as a user would. The form states
RGB at 32 px, as read from the images; the run is named after the folder; the run holds the split sizes
entered; and "metric uninformative" shows wherever such a metric's numbers do: the sidebar, the Train page
(its verdicts and the training curves' titles), the Influence page and the gallery's cards. Screenshots go to artifacts/own-form-*.png."""

from __future__ import annotations

import re
import sys
import time

import pytest

from apphelpers import REPO
from test_browser import ARTIFACTS, TIMEOUT_MS, _settle, browser_tab, pytestmark, serve_app  # noqa: F401

sys.path.insert(0, str(REPO / "bench"))
from own_images import shapes_folder  # noqa: E402

JOB_MS = 600_000


@pytest.fixture(scope="module")
def own_form_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("own-form")
    images = base / "shapes600"
    unreadable = shapes_folder(images, 600)
    with serve_app(base / "store", base / "streamlit.log") as url:
        yield url, base / "store", images, unreadable


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"own-form-{name}.png"), full_page=True)


def _field(page, label: str):
    return page.get_by_role("textbox", name=label, exact=True)


def _first_schedule_cell(page, text: str) -> None:
    """Type into the schedule editor's first cell (a canvas grid: select, Enter to edit, replace, Enter)."""
    grid = page.locator('[data-testid="stDataFrameResizable"]').last
    grid.scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    box = grid.bounding_box()
    page.mouse.click(box["x"] + 100, box["y"] + 52)  # below the header row (35 px)
    for key in ("Enter", "Control+A"):
        page.wait_for_timeout(300)
        page.keyboard.press(key)
    page.keyboard.type(text)
    page.wait_for_timeout(300)
    page.keyboard.press("Enter")
    page.wait_for_timeout(300)


def _alerts(page) -> str:
    return " ".join(page.locator('[data-testid="stAlert"]').all_inner_texts())


def test_own_images_through_the_train_form(own_form_server):
    from playwright.sync_api import expect

    url, root, images, unreadable = own_form_server
    with browser_tab(height=1600) as page:
        page.goto(url)
        expect(page.locator("h1").first).to_have_text("Train or load a GAN", timeout=TIMEOUT_MS)
        _settle(page)
        page.get_by_text("Your images: a folder on this machine").click()
        _settle(page)
        folder = _field(page, "Folder of PNG/JPEG images")
        folder.fill(str(images))
        folder.press("Enter")
        detected = page.locator('[data-testid="stAlert"]').filter(has_text="Detected in your images")
        expect(detected).to_be_visible(timeout=TIMEOUT_MS)
        _settle(page)
        said = detected.inner_text()
        assert "600 readable images (32x32 px, in colour)" in said and "RGB at 32 px" in said, said
        assert f"{unreadable} unreadable files skipped" in said
        assert "Runs on them are named shapes600-mnist-adam-s<seed>-" in said
        expect(page.get_by_text("Held-out images.")).to_be_visible()
        page.get_by_text("Hyperparameters: the preset's values").click()
        _settle(page)
        for label in ("image_size", "n_valid", "n_test"):  # the images decide: nothing typed
            expect(_field(page, label)).to_have_value("auto")
        _first_schedule_cell(page, "1")  # the preset's traced-epoch row, moved to the one epoch
        _field(page, "n_valid").fill("100")
        _field(page, "n_test").fill("100")
        _field(page, "epochs").fill("1")
        _shot(page, "train")
        started = time.time()
        page.get_by_role("button", name="Start training").click()
        # the job panel and the sidebar's progress line may both name it: either will do
        expect(page.get_by_text(re.compile(r"Training shapes600-mnist-adam-s0-|Not started")).first).to_be_visible(
            timeout=TIMEOUT_MS)
        assert page.get_by_text("Not started").count() == 0, _alerts(page)
        expect(page.get_by_text(re.compile(r"Current run: shapes600-mnist-adam-s0-"))).to_be_visible(timeout=JOB_MS)
        _settle(page)
        assert page.locator('[data-testid="stException"]').count() == 0
        expect(page.get_by_text("400 train, 100 validation and 100 test images")).to_be_visible()
        alerts = _alerts(page)
        for metric in ("IS", "FID", "D-loss"):
            assert f"{metric}: metric uninformative - the validation split has only 100 instances" in alerts, alerts
        for metric in ("IS", "FID"):  # the training curves' titles
            title = page.locator(".js-plotly-plot text").filter(has_text=f"test {metric}")
            expect(title.filter(has_text="(uninformative)")).to_be_attached()  # its second line
        sidebar = page.locator('[data-testid="stSidebar"]').inner_text()
        assert "(uninformative)" in sidebar and "metric uninformative" in sidebar, sidebar
        _shot(page, "trained")
        print(f"\nown-images form: trained in {time.time() - started:.0f} s")

        page.goto(f"{url}/influence")
        expect(page.locator("h1").first).to_have_text("Influence of each training instance", timeout=TIMEOUT_MS)
        _settle(page)
        page.get_by_role("button", name="Compute in the background").click()
        expect(page.get_by_text("Metric uninformative:").first).to_be_visible(timeout=JOB_MS)
        _settle(page)
        assert page.get_by_text("Metric uninformative:").count() == 3  # one per metric shown
        _shot(page, "influence")
        print(f"own-images form: estimated, {time.time() - started:.0f} s after the start")

        page.goto(f"{url}/curate")
        expect(page.locator("h1").first).to_have_text("Inspect and curate", timeout=TIMEOUT_MS)
        _settle(page)
        captions = page.locator('[data-testid="stCaptionContainer"]').all_inner_texts()
        cards = [c for c in captions if c.startswith("FID ")]  # the gallery's score lines
        assert len(cards) == 25 and all(c.endswith("metric uninformative") for c in cards), cards[:3]
        assert page.locator('[data-testid="stException"]').count() == 0
        _shot(page, "gallery")


def test_moved_images_are_pointed_to_in_the_browser(own_form_server):
    """After the run above: its folder moved, an app started afresh (the running one keeps the images it read)
    says on a page that reads them where they were and asks where they are now; the new place typed into the form
    brings the gallery back (artifacts/own-form-moved*.png)."""
    from playwright.sync_api import expect

    from influence import store
    from influence.data.locations import LOCATIONS

    _, root, images, _ = own_form_server
    runs = [r for r in root.iterdir() if r.name.startswith("shapes600-")]
    assert runs, "the run of the test above"
    # An earlier session of this test recorded where these same images went (the locations live in the user-level
    # cache the tests share); while pytest keeps that folder, the app would find them there and ask nothing.
    fingerprint = store.read_json(runs[0] / "config.json")["data"]["fingerprint"]
    path = store.cache_dir() / LOCATIONS
    with store.exclusive(path.with_name(LOCATIONS + ".lock"), "the images' locations"):
        if path.exists():
            store.write_json(path, {k: v for k, v in store.read_json(path).items() if k != fingerprint})
    moved = images.with_name("shapes600-moved")
    images.rename(moved)
    with serve_app(root, root.parent / "streamlit-moved.log") as url, browser_tab(height=1000) as page:
        page.goto(f"{url}/curate")
        missing = page.locator('[data-testid="stAlert"]').filter(has_text="the images of this run are not at")
        expect(missing).to_be_visible(timeout=TIMEOUT_MS)
        assert str(images) in missing.inner_text()
        field = page.get_by_role("textbox", name=re.compile("Where are the images now"))
        expect(field).to_be_visible()
        page.wait_for_timeout(800)
        field.fill(str(moved))
        _shot(page, "moved")
        page.get_by_role("button", name="Point the runs there").click()
        done = page.locator('[data-testid="stAlert"]').filter(has_text="they are read from there from now on")
        expect(done).to_be_visible(timeout=TIMEOUT_MS)
        _settle(page)
        assert str(moved) in done.inner_text() and missing.count() == 0
        expect(page.locator("h1").first).to_have_text("Inspect and curate")
        captions = page.locator('[data-testid="stCaptionContainer"]').all_inner_texts()
        assert len([c for c in captions if c.startswith("FID ")]) == 25  # the gallery, read from the new place
        assert page.locator('[data-testid="stException"]').count() == 0
        _shot(page, "moved-found")
