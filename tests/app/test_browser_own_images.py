"""Your own images end to end in a real browser (Playwright + Debian's Chromium), after the CLI part of
`bench/own_images.py` (train, estimate, cleanse, export of an unlabelled 32x32 RGB folder in nested
sub-folders with unreadable files): the Influence page, a lasso drawn on the Inspect page's map into the
removal set, one more image ticked in the gallery (captions are the files' names), a cleanse from the
app, and the export of the cleaned folder, checked file by file on disk. A screenshot per view goes to
artifacts/ (git-ignored; copy them to assets/). OWN_IMAGES_STORE=<work>/store of
`bench/own_images.py --work <work>`; not part of the default suite (the cleanse takes minutes).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest

from apphelpers import removal_on_disk, shown_as
from influence import store
from test_browser import (  # noqa: F401
    ARTIFACTS,
    TIMEOUT_MS,
    _settle,
    browser_tab,
    expect_job_result,
    pytestmark,
    serve_app,
)

JOB_TIMEOUT_MS = 1_800_000
pytestmark = [*pytestmark, pytest.mark.skipif(not os.environ.get("OWN_IMAGES_STORE"),
                                              reason="set OWN_IMAGES_STORE to the store of bench/own_images.py")]


@pytest.fixture(scope="module")
def own_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("own") / "store"
    shutil.copytree(os.environ["OWN_IMAGES_STORE"], root, ignore=shutil.ignore_patterns("_jobs", "_app_state.json"))
    run_id = next(r["run_id"] for r in sorted(store.list_runs(root), key=lambda r: r["run_id"])
                  if store.read_json(root / r["run_id"] / "config.json")["data"]["labels"] == "none")
    store.write_json(root / "_app_state.json", {"run_id": run_id})
    with serve_app(root, tmp_path_factory.mktemp("own-log") / "streamlit.log") as url:
        yield url, root, run_id


def _shot(page, name: str, full: bool = False) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"own-{name}.png"), full_page=full)


def _view(page, name: str):
    """A button of the Inspect page's view switch (a segmented control)."""
    return page.locator("button").filter(has_text=re.compile(rf"^\s*{name}\s*$")).first


def _map_plot(page):
    """The map: the scatter plot with a point per training image (waits until plotly has drawn it)."""
    deadline = time.time() + TIMEOUT_MS / 1000
    while time.time() < deadline:
        for plot in page.locator(".js-plotly-plot").all():
            points = plot.evaluate("gd => (gd._fullData || []).reduce((n, t) => n + ((t.x || []).length || 0), 0)")
            if plot.is_visible() and points > 500:
                return plot
        page.wait_for_timeout(500)
    raise AssertionError("no map on the page")


def test_own_images_in_a_real_browser(own_server, tmp_path):
    from playwright.sync_api import expect

    url, root, run_id = own_server
    table = pd.read_csv(root / run_id / "influence" / "table.csv")
    with browser_tab(height=1500) as page:
        page.goto(f"{url}/influence")
        expect(page.locator("h1").first).to_have_text("Influence of each training instance", timeout=TIMEOUT_MS)
        _settle(page)
        # the histogram's x title, in two lines (its second: "negative = harmful")
        title = page.locator(".js-plotly-plot .g-xtitle text").filter(has_text="predicted change of FID if removed")
        expect(title.filter(has_text="negative = harmful").first).to_be_attached()
        assert page.locator('[data-testid="stException"]').count() == 0
        _shot(page, "influence")

        # Inspect: a lasso on the map puts the images inside it into the removal set.
        page.goto(f"{url}/curate")
        expect(page.locator("h1").first).to_have_text("Inspect and curate", timeout=TIMEOUT_MS)
        _settle(page)
        for name in ("Gallery", "Table", "Map"):  # the view switch once overflowed its column and hid 'Gallery'
            button = _view(page, name)
            box = button.bounding_box()
            column = button.locator("xpath=ancestor::div[@data-testid='stColumn'][1]").bounding_box()
            assert column["x"] - 1 <= box["x"] and box["x"] + box["width"] <= column["x"] + column["width"] + 1, name
        _view(page, "Map").click()
        expect(page.get_by_text("Each dot is a training image")).to_be_visible(timeout=TIMEOUT_MS)
        _settle(page)
        area = _map_plot(page).locator(".nsewdrag").first.bounding_box()
        corners = [(0.4, 0.4), (0.6, 0.4), (0.6, 0.6), (0.4, 0.6), (0.4, 0.41)]  # a lasso round the middle
        page.mouse.move(area["x"] + area["width"] * 0.4, area["y"] + area["height"] * 0.4)
        page.mouse.down()
        for fx, fy in corners[1:]:
            page.mouse.move(area["x"] + area["width"] * fx, area["y"] + area["height"] * fy, steps=6)
        page.mouse.up()
        add = page.get_by_role("button", name=re.compile(r"^Add the \d+ selected to the removal set"))
        expect(add).to_be_visible(timeout=TIMEOUT_MS)
        # the whole label shows (issue 15: labels cut off with an ellipsis)
        assert add.evaluate("b => [b, ...b.querySelectorAll('*')].every(e => e.scrollWidth <= e.clientWidth + 1)")
        boxed = int(re.search(r"Add the (\d+)", add.inner_text()).group(1))
        _settle(page)
        _shot(page, "map")
        add.click()
        _settle(page)
        deadline = time.time() + 60
        while len(removal_on_disk(root, run_id)) != boxed and time.time() < deadline:
            time.sleep(0.5)
        assert len(removal_on_disk(root, run_id)) == boxed > 0

        # Gallery: every image is captioned with its file's name (its path on hover); tick one more.
        _view(page, "Gallery").click()
        _settle(page)
        captions = page.locator('[data-testid="stCaptionContainer"]').all_inner_texts()
        assert sum(shown_as(c.strip(), table["path"]) for c in captions) >= 20, captions[:5]
        unticked = page.locator('[data-testid="stCheckbox"]').filter(has=page.locator("input:not(:checked)")).first
        unticked.locator("label").click()
        deadline = time.time() + 60
        while len(removal_on_disk(root, run_id)) != boxed + 1 and time.time() < deadline:
            time.sleep(0.5)
        removal = removal_on_disk(root, run_id)
        assert len(removal) == boxed + 1
        _settle(page)
        page.locator("h1").first.scroll_into_view_if_needed()
        _shot(page, "gallery")

        # Cleanse from the app (replay of the traced epochs without the set), then export the cleaned folder.
        page.goto(f"{url}/cleanse")
        expect(page.locator("h1").first).to_have_text("Cleanse and compare", timeout=TIMEOUT_MS)
        _settle(page)
        page.get_by_role("button", name="Cleanse in the background").click()
        # the store holds the CLI's attempt (50 removed): the page must show the one just computed
        expect_job_result(page, f"replay, {len(removal)} removed (replay-", JOB_TIMEOUT_MS)
        expect(page.get_by_text("FID after cleansing")).to_be_visible()
        _settle(page)
        assert page.locator('[data-testid="stException"]').count() == 0
        _shot(page, "cleanse", full=True)

        target = tmp_path / "cleaned"
        page.get_by_text("Export the cleaned data set").click()
        page.get_by_label("New folder to write").fill(str(target))
        page.get_by_label("New folder to write").press("Enter")
        _settle(page)
        page.get_by_role("button", name="Export", exact=True).click()
        n_train = len(table)
        expect(page.get_by_text(f"Exported {n_train - len(removal)} of {n_train} training images")).to_be_visible(
            timeout=TIMEOUT_MS)
        expect(page.get_by_text("The manifest records the estimate's trust: FID: ")).to_be_visible()
        _settle(page)
        _shot(page, "export", full=True)

    kept = set(table["path"]) - set(table.loc[table["id"].isin(removal), "path"])
    written = {q.relative_to(target).as_posix() for q in Path(target).rglob("*") if q.is_file()}
    assert written == kept | {"manifest.json", "removed.csv"}  # exactly the kept files, none missing
    source = Path(store.read_json(root / run_id / "config.json")["data"]["root"])
    assert all((target / rel).read_bytes() == (source / rel).read_bytes() for rel in kept)  # the originals, as they were
