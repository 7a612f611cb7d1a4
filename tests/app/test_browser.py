"""End to end in a real browser: `streamlit run app/main.py` driven by Playwright with Debian's Chromium.

Visits every page, filters the gallery by box-selecting histogram bars, ticks one image into
the removal set, switches to the 2D run from the playground, and saves a screenshot per page
to artifacts/ (git-ignored).
"""

from __future__ import annotations

import contextlib

import importlib.util
import re
import shutil
from pathlib import Path

import pytest

from apphelpers import REPO, removal_on_disk, serve_app, tiny_run_id, write_job
from influence import store

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = REPO / "artifacts"
TIMEOUT_MS = 120_000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                                                     "(apt-get install chromium)"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None,
                       reason="needs the playwright Python package (pip install playwright; no browser download)"),
]


@pytest.fixture(scope="module")
def server(rich_store, toy_store, tmp_path_factory):
    """The app on a free local port, over a store with the tiny run (cleansed, validated) and the 2D run."""
    root = tmp_path_factory.mktemp("browser") / "store"
    shutil.copytree(rich_store, root)
    shutil.copytree(toy_store, root, ignore=shutil.ignore_patterns("_jobs", "_cache"), dirs_exist_ok=True)
    store.write_json(root / "_app_state.json", {"run_id": tiny_run_id(root)})
    with serve_app(root, tmp_path_factory.mktemp("browser-log") / "streamlit.log") as url:
        yield url, root


@contextlib.contextmanager
def browser_tab(height: int = 1400):
    """A tab of Debian's headless Chromium with the tests' viewport and timeout, until the block ends."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        tab = browser.new_page(viewport={"width": 1440, "height": height})
        tab.set_default_timeout(TIMEOUT_MS)
        try:
            yield tab
        finally:
            browser.close()


@pytest.fixture(scope="module")
def page(server):
    with browser_tab() as tab:
        yield tab


def _settle(tab) -> None:
    """Wait until the script run has finished and every element has been drawn."""
    tab.wait_for_timeout(300)  # a rerun just triggered may not show its status widget yet
    tab.wait_for_selector("h1")
    tab.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
        " && !document.querySelector('[data-testid=\"stSkeleton\"]')"
        # a cached computation's spinner (e.g. the metrics' honesty check): the page is not complete yet
        " && !document.querySelector('[data-testid=\"stSpinner\"]')", timeout=TIMEOUT_MS)
    tab.wait_for_timeout(800)  # plotly draws after the elements arrive


# How the job panel shows a background job that ended without its result (app/explorer/jobpanel.py)
JOB_ENDED = re.compile(r"^Failed: |^The worker stopped before finishing")


def expect_job_result(where, text, timeout_ms: int) -> None:
    """Wait until `where` (a page or a part of one) shows `text`, a background job's result; a job that failed or
    whose worker died fails the test at once with the panel's message, not after the whole timeout."""
    from playwright.sync_api import expect

    ended = where.get_by_text(JOB_ENDED)
    expect(where.get_by_text(text).or_(ended).first).to_be_visible(timeout=timeout_ms)
    if ended.count():
        pytest.fail(f"the background job ended without its result: {ended.first.inner_text()}")


def _visit(tab, url: str, path: str, title: str, name: str) -> None:
    from playwright.sync_api import expect

    tab.goto(f"{url}/{path}")
    expect(tab.locator("h1").first).to_have_text(title, timeout=TIMEOUT_MS)
    _settle(tab)
    assert tab.locator('[data-testid="stException"]').count() == 0, f"exception shown on {name}"
    ARTIFACTS.mkdir(exist_ok=True)
    tab.screenshot(path=str(ARTIFACTS / f"app-{name}.png"))


def test_every_page_in_a_real_browser(server, page):
    from playwright.sync_api import expect

    url, root = server
    run_id = tiny_run_id(root)

    _visit(page, url, "", "Train or load a GAN", "train")
    expect(page.get_by_role("button", name="Start training")).to_be_visible()
    expect(page.get_by_text(f"Current run: {run_id}")).to_be_visible()

    _visit(page, url, "influence", "Influence of each training instance", "influence")
    expect(page.get_by_text("predicted change of FID if removed; negative = harmful").first).to_be_attached()
    expect(page.get_by_text("Stability: reliable").first).to_be_visible()
    # Drag a box over the left (harmful) bars of the FID histogram: the gallery shows just those.
    area = page.locator(".js-plotly-plot").first.locator(".nsewdrag").first.bounding_box()
    page.mouse.move(area["x"] + area["width"] * 0.03, area["y"] + area["height"] * 0.05)
    page.mouse.down()
    page.mouse.move(area["x"] + area["width"] * 0.3, area["y"] + area["height"] * 0.95, steps=8)
    page.mouse.up()
    expect(page.get_by_text("Gallery filter: FID influence between")).to_be_visible(timeout=TIMEOUT_MS)
    page.get_by_text("Open the filtered gallery").click()
    expect(page.locator("h1").first).to_have_text("Inspect and curate")
    _settle(page)
    expect(page.get_by_text("Showing only FID influence between")).to_be_visible()
    page.get_by_role("button", name="Clear filter").click()

    expect(page.locator('[data-testid="stImage"] img')).to_have_count(25)
    _settle(page)
    before = len(removal_on_disk(root, run_id))
    expect(page.locator('[data-testid="stMetricValue"]').first).to_have_text(str(before))
    unticked = page.locator('[data-testid="stCheckbox"]').filter(has=page.locator("input:not(:checked)")).first
    unticked.locator("label").click()  # the curation action: one more image into the removal set
    expect(page.locator('[data-testid="stMetricValue"]').first).to_have_text(str(before + 1), timeout=TIMEOUT_MS)
    _settle(page)
    assert len(removal_on_disk(root, run_id)) == before + 1
    assert page.locator('[data-testid="stException"]').count() == 0
    page.locator("h1").first.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "app-curate.png"))

    _visit(page, url, "cleanse", "Cleanse and compare", "cleanse")
    expect(page.get_by_text("FID after cleansing")).to_be_visible()
    expect(page.get_by_text("original run (last epoch)")).to_be_visible()

    _visit(page, url, "validate", "How accurate is the estimate?", "validate")
    expect(page.get_by_text("Kendall τ")).to_be_visible()

    _visit(page, url, "playground", "2D playground", "playground")
    page.get_by_role("button", name="Use this run").click()
    expect(page.get_by_text("selected points")).to_be_visible(timeout=TIMEOUT_MS)
    _settle(page)
    expect(page.locator(".js-plotly-plot").first).to_be_visible()
    assert page.locator('[data-testid="stException"]').count() == 0
    page.screenshot(path=str(ARTIFACTS / "app-playground.png"))


def test_issue15_views_read_cleanly(server, page):
    """The histogram legend clears the plot toolbar, influence ticks read 5e-5 (not 0.5e-4), the |u| plot
    shows the verdict's thresholds; screenshots of the fixed views go to artifacts/ (copied to assets/)."""
    import re

    from playwright.sync_api import expect

    url, root = server
    # The walk through every page ends on the 2D run; these views are the tiny run's (cleansed, validated).
    store.write_json(root / "_app_state.json", {"run_id": tiny_run_id(root)})
    _visit(page, url, "influence", "Influence of each training instance", "influence-verdict")
    hist = page.locator(".js-plotly-plot").first
    hist.hover()
    modebar, legend = hist.locator(".modebar").bounding_box(), hist.locator(".legend").bounding_box()
    assert modebar and legend
    overlap_x = min(modebar["x"] + modebar["width"], legend["x"] + legend["width"]) - max(modebar["x"], legend["x"])
    overlap_y = min(modebar["y"] + modebar["height"], legend["y"] + legend["height"]) - max(modebar["y"], legend["y"])
    assert overlap_x <= 0 or overlap_y <= 0, "the toolbar covers the histogram legend"
    ticks = [t.strip() for t in hist.locator(".xtick text").all_text_contents()]
    assert ticks and all(re.fullmatch(r"0|[−-]?[1-9](\.\d+)?e[−+-]?\d+", t) for t in ticks), ticks
    threshold = page.locator(".js-plotly-plot text").filter(has_text="doubtful from here").first
    threshold.scroll_into_view_if_needed()
    expect(threshold).to_be_attached(timeout=TIMEOUT_MS)  # the |u| plots draw the verdict's thresholds
    page.get_by_text("One instance in detail").scroll_into_view_if_needed()
    _settle(page)
    page.screenshot(path=str(ARTIFACTS / "app-influence-detail.png"))

    _visit(page, url, "cleanse", "Cleanse and compare", "cleanse-compare")
    expect(page.get_by_text("Where the samples changed")).to_be_visible(timeout=TIMEOUT_MS)
    page.get_by_text("Compare attempts side by side").scroll_into_view_if_needed()
    _settle(page)
    page.screenshot(path=str(ARTIFACTS / "app-cleanse-compare.png"))

    _visit(page, url, "", "Train or load a GAN", "train-form")
    page.get_by_text("Hyperparameters: the preset's values").click()
    expect(page.get_by_text("learning-rate schedule")).to_be_visible(timeout=TIMEOUT_MS)
    _settle(page)
    page.screenshot(path=str(ARTIFACTS / "app-train-form.png"))


ORANGE = (255, 127, 14)  # figures.CLEANSED: the shift arrows


def orange_pixels(png: bytes) -> int:
    """Pixels of the arrows' orange (within a small tolerance) in a screenshot."""
    import io

    import numpy as np
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)
    return int((np.abs(rgb - np.array(ORANGE)).max(axis=2) <= 40).sum())


def _plot_area(chart):
    """The plot area of a Plotly chart (its drag layer), without legend, colour bar and titles."""
    return chart.locator(".nsewdrag").first.bounding_box()


def test_the_classroom_arrows_can_be_seen(server, page):
    """The Curate and One-point lessons promise orange arrows drawn 50x; Plotly draws WebGL traces (the
    training points) above SVG ones, so the arrows must be WebGL too. Checked from the pixels of the
    plot areas, not from the DOM. Then the learning-rate lesson at lr 3 says the run diverged."""
    from playwright.sync_api import expect

    from influence.cleanse import cleanse
    from influence.estimator import cached_results, harmful_order

    url, root = server
    toy = next(r["run_id"] for r in store.list_runs(root) if r["run_id"].startswith("toytest-"))
    run = store.open_run(root, toy)
    removal = sorted(harmful_order(cached_results(run)["all"])[:40].tolist())
    cleanse(run, removal)  # the toy replays its traced epoch in about a second
    run.write_json("app/removal.json", {"ids": removal})
    store.write_json(root / "_app_state.json", {"run_id": toy})

    _visit(page, url, "playground", "2D playground", "classroom-arrows")
    expect(page.get_by_text("orange arrows: where")).to_be_visible(timeout=TIMEOUT_MS)
    chart = page.get_by_role("tabpanel", name="Cleanse").locator(".js-plotly-plot").first
    chart.scroll_into_view_if_needed()
    _settle(page)
    seen = orange_pixels(page.screenshot(clip=_plot_area(chart)))
    assert seen > 100, f"{seen} orange pixels in the curate lesson's plot area: the arrows are hidden"
    # the cleanse's finished job box reads whole at 1024 px (in the lesson's narrow side column it broke every word)
    write_job(root, {"kind": "cleanse", "params": {"run_id": toy, "removal_ids": removal, "mode": "replay"}},
              state="done", queued_at=1000.0, started=1001.0, updated=1004.0, done=1, total=1,
              stages={"loading": 1.0, "cleanse": 1.5})
    page.reload()
    expect(page.get_by_text("Finished in 4 s")).to_be_visible(timeout=TIMEOUT_MS)
    _settle(page)
    reads_whole_when_narrow(page, "classroom-cleanse-job")

    page.get_by_role("tab", name="One point").click()
    panel = page.get_by_role("tabpanel", name="One point")
    field = panel.get_by_label("…or type a point's id")
    field.fill(str(removal[0]))
    field.press("Enter")
    expect(panel.get_by_text("longer than the real shift")).to_be_visible(timeout=TIMEOUT_MS)
    _settle(page)
    chart = panel.locator(".js-plotly-plot").nth(1)  # the click chart first, then the arrows
    chart.scroll_into_view_if_needed()
    seen = orange_pixels(page.screenshot(clip=_plot_area(chart)))
    assert seen > 100, f"{seen} orange pixels in the one-point lesson's plot area: the arrows are hidden"
    page.screenshot(path=str(ARTIFACTS / "classroom-arrows.png"))

    # The learning-rate lesson at lr 3: the run diverges, and the page says so instead of a verdict and a tau.
    page.get_by_role("tab", name="When it breaks").click()
    panel = page.get_by_role("tabpanel", name="When it breaks")
    slider = panel.get_by_role("slider")
    slider.focus()
    while not slider.get_attribute("aria-valuetext").startswith("3"):
        slider.press("ArrowRight")
    _settle(page)
    panel.get_by_role("button", name="Retrain the epoch and check").click()
    expect(panel.get_by_text("Diverged at lr 3.")).to_be_visible(timeout=TIMEOUT_MS)
    assert panel.get_by_text("growth factor", exact=True).count() == 0


# Text the page shows cut off: a leaf element whose text overflows itself (an ellipsis) or a clipping ancestor
# (a squeezed column), outside collapsed expanders and the tab strip (which scrolls, with an arrow); Plotly axis,
# subplot and annotation titles that stick out of their chart; legend entries that stick out or lie under a colour
# bar; words broken across lines other than after a hyphen, slash, underscore or dot (a column too narrow for its
# words: "instanc|es", the sample grid's captions a letter a line at 1024 px); text that lies over other text or an
# image (a metric's label ran into the next one, the check's images over its figures).
CLIPPED_JS = """
(scope) => {
  scope = scope || '[data-testid="stMain"], [data-testid="stSidebar"]';  // or the elements given, e.g. a popover's
  const broken = [], overlaps = [], boxes = [];
  const range = document.createRange();
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const el = n.parentElement;
    if (!el || !el.offsetParent || el.closest('details:not([open]), .js-plotly-plot')) continue;
    if (!el.closest(scope) || !n.textContent.trim()) continue;
    range.selectNodeContents(n);
    for (const r of range.getClientRects()) if (r.width > 0) boxes.push([n, r, n.textContent.trim()]);
    for (const m of n.textContent.matchAll(/\\S{2,}/g)) {
      range.setStart(n, m.index); range.setEnd(n, m.index + m[0].length);
      if ([...range.getClientRects()].filter(r => r.width > 0).length < 2) continue;
      if (/^[0-9a-f]{32,}$/i.test(m[0])) continue;  // a hash (a data set's fingerprint) has no word to break
      let top = null;
      for (let i = 0; i < m[0].length; i++) {  // where the word breaks: after a break character is fine
        range.setStart(n, m.index + i); range.setEnd(n, m.index + i + 1);
        const r = range.getBoundingClientRect();
        if (!r.width) continue;
        if (top !== null && r.top > top + 2 && !'-/_.,=()'.includes(m[0][i - 1])) { broken.push(m[0]); break; }
        top = r.top;
      }
    }
  }
  for (const img of document.querySelectorAll(scope.split(',').map(s => s + ' img').join(','))) {
    const r = img.getBoundingClientRect();
    if (img.offsetParent && r.width > 0 && !img.closest('details:not([open]), .js-plotly-plot')) boxes.push([img, r, 'an image']);
  }
  for (let i = 0; i < boxes.length; i++) {  // line boxes of different texts, or a text and an image, that overlap
    for (let j = i + 1; j < boxes.length; j++) {
      const [a, p, what] = boxes[i], [b, q, other] = boxes[j];
      if (a === b || a.contains(b) || b.contains(a)) continue;
      const w = Math.min(p.right, q.right) - Math.max(p.left, q.left), h = Math.min(p.bottom, q.bottom) - Math.max(p.top, q.top);
      if (w > 3 && h > 3) overlaps.push(what + ' / ' + other);
    }
  }
  const cut = [];
  for (const e of document.querySelectorAll(scope.split(',').map(s => s + ' *').join(','))) {
    if (!e.offsetParent || e.children.length || !e.textContent.trim()) continue;
    const r = e.getBoundingClientRect();
    if (r.width < 1 || r.height < 1 || getComputedStyle(e).visibility === 'hidden') continue;
    if (e.closest('details:not([open])')) continue;  // inside a collapsed expander: not shown
    if (e.closest('[role="tablist"]')) continue;
    const right = r.left + Math.max(r.width, e.scrollWidth);
    let clipped = getComputedStyle(e).overflowX !== 'visible' && e.scrollWidth > e.clientWidth + 1;
    for (let a = e.parentElement; a && !clipped; a = a.parentElement) {
      if (getComputedStyle(a).overflowX === 'visible') continue;
      const b = a.getBoundingClientRect();
      clipped = right > b.right + 1 || r.left < b.left - 1;
    }
    if (clipped) cut.push(e.textContent.trim());
  }
  const titles = [];
  for (const plot of document.querySelectorAll('.js-plotly-plot')) {
    const svg = plot.querySelector('.main-svg'); if (!svg) continue;
    const box = svg.getBoundingClientRect();
    for (const t of plot.querySelectorAll('.g-xtitle text, .g-ytitle text, .g-y2title text, .infolayer .annotation text')) {
      const r = t.getBoundingClientRect();
      if (r.width && (r.left < box.left - 1 || r.right > box.right + 1 || r.top < box.top - 1 || r.bottom > box.bottom + 1))
        titles.push(t.textContent);
    }
    const texts = [...plot.querySelectorAll('text')].map(t => [t, t.getBoundingClientRect()]).filter(([t, r]) => r.width && t.textContent.trim());
    for (let i = 0; i < texts.length; i++) {  // a title, tick label or legend entry over another
      for (let j = i + 1; j < texts.length; j++) {
        const [a, p] = texts[i], [b, q] = texts[j];
        const w = Math.min(p.right, q.right) - Math.max(p.left, q.left), h = Math.min(p.bottom, q.bottom) - Math.max(p.top, q.top);
        if (w > 2 && h > 2 && !a.contains(b) && !b.contains(a)) titles.push(a.textContent + ' over ' + b.textContent);
      }
    }
    const bars = [...plot.querySelectorAll('.colorbar')].map(c => c.getBoundingClientRect());
    for (const t of plot.querySelectorAll('.legend text')) {
      const r = t.getBoundingClientRect();
      const under = bars.some(b => r.right > b.left && r.left < b.right && r.bottom > b.top && r.top < b.bottom);
      if (r.width && (r.left < box.left - 1 || r.right > box.right + 1 || under)) titles.push('legend: ' + t.textContent);
    }
  }
  return {cut, titles, broken, overlaps};
}
"""
READABLE = {"cut": [], "titles": [], "broken": [], "overlaps": []}  # CLIPPED_JS on a page where every text reads whole


def reads_whole_when_narrow(page, name: str) -> None:
    """At 1024 px (a small laptop, a projector) no text of the page is cut, broken mid-word or under other text (the
    sample grid's captions ran a letter a line there, the check's images lay over its figures); a screenshot of it
    goes to artifacts/<name>-1024.png, and the window back to its width."""
    size = page.viewport_size
    page.set_viewport_size({"width": 1024, "height": size["height"]})
    page.wait_for_timeout(800)  # the layout and the charts follow the window
    found = page.evaluate(CLIPPED_JS)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}-1024.png"))
    page.set_viewport_size(size)
    page.wait_for_timeout(800)
    assert found == READABLE, f"{name}: {found}"


def open_every_expander(page) -> None:
    """Open the page's expanders one at a time, each after the last has opened: clicked in a row, some closed again
    (the Inspect page's "Import a CSV of ids" stayed shut, so the rule never saw its cut upload box)."""
    closed = '[data-testid="stMain"] details:not([open]) > summary'
    for _ in range(30):
        shown = [s for s in page.locator(closed).all() if s.is_visible()]
        if not shown:
            break
        shown[0].click()
        _settle(page)
    assert not [s for s in page.locator(closed).all() if s.is_visible()], "an expander does not stay open"


NARROW = (1200, 1024)  # a small laptop's window, and a projector's


def _at_width(page, width: int) -> None:
    """The window at `width`: Streamlit never learns the width, the browser lays the page out again."""
    if page.viewport_size["width"] != width:
        page.set_viewport_size({"width": width, "height": page.viewport_size["height"]})
        page.wait_for_timeout(800)  # the layout and the charts follow the window


def test_no_label_or_axis_title_is_cut_off_in_a_narrow_window(server, page):
    """At 1200 px the Inspect page cut 'helpful', 'Map', 'Add page to set', 'Undo', 'Cleanse without this
    set'; the |u| plot's and the lr scatter's x-titles, the box plot's y-title and the training curves'
    'test FID' stuck out of their charts; the Plotly toolbar covered the curves' subplot titles; the table
    view ended in an empty row. At 1024 px (a small laptop, a projector) the histograms' and the |u| plot's
    x-titles lost 'negative = harmful' and 'right to left', the influence numbers and 'Export CSV' were cut, the
    playground's legend ran under its colour bar, the validation forms broke 'instances' and 'groups' in two, the
    sample grid's captions ran a letter a line, Train's hyperparameters broke their names, the sweep's methods
    were cut and the playground's lesson tabs scrolled. Each page is visited once and read at both widths, the
    window resized in between."""
    from playwright.sync_api import expect

    url, root = server
    tiny = tiny_run_id(root)
    toy = next(r["run_id"] for r in store.list_runs(root) if r["run_id"].startswith("toytest-"))
    page.set_viewport_size({"width": NARROW[0], "height": 2600})
    try:
        for run_id, path, title in ((tiny, "curate", "Inspect and curate"),
                                    (tiny, "influence", "Influence of each training instance"),
                                    (tiny, "validate", "How accurate is the estimate?"),
                                    (tiny, "samples", "Generated samples"),
                                    (tiny, "", "Train or load a GAN"), (toy, "playground", "2D playground")):
            name = path or "train"
            store.write_json(root / "_app_state.json", {"run_id": run_id})
            _at_width(page, NARROW[0])
            _visit(page, url, path, title, f"narrow{NARROW[0]}-{name}")
            if path == "playground":
                page.get_by_role("tab", name="When it breaks").click()
                page.get_by_role("button", name="Retrain the epoch and check").click()
                expect(page.get_by_text("Kendall τ, 16 replays")).to_be_visible(timeout=TIMEOUT_MS)
                _settle(page)
            # every expander open (the rule skips closed ones): Train's hyperparameters broke their names at 1024 px
            open_every_expander(page)
            for width in NARROW:
                _at_width(page, width)
                page.screenshot(path=str(ARTIFACTS / f"app-narrow{width}-{name}.png"))
                found = page.evaluate(CLIPPED_JS)
                assert found == READABLE, f"{name} at {width} px: {found}"
                strips = page.evaluate("() => [...document.querySelectorAll('[role=tablist]')]"
                                       ".map(t => t.scrollWidth - t.clientWidth)")
                assert max(strips, default=0) <= 1, f"{name} at {width} px: a tab strip scrolls, {strips} px hidden"
                if path == "curate":
                    # the import's upload box (cut at 1024 and 1200 px in the set's column) reads whole
                    page.get_by_role("button", name="Import a CSV of ids").click()
                    expect(page.locator('[data-testid="stPopoverBody"] [data-testid="stFileUploader"]')).to_be_visible()
                    found = page.evaluate(CLIPPED_JS, '[data-testid="stPopoverBody"]')
                    assert found == READABLE, f"the import's popover at {width} px: {found}"
                    page.keyboard.press("Escape")
                if path == "":
                    curves = page.locator(".js-plotly-plot").filter(has_text="test FID").first
                    curves.hover()
                    bar = curves.locator(".modebar").bounding_box()
                    for note in curves.locator(".infolayer .annotation").all():
                        box = note.bounding_box()
                        apart = (bar["x"] + bar["width"] <= box["x"] or box["x"] + box["width"] <= bar["x"]
                                 or bar["y"] + bar["height"] <= box["y"] or box["y"] + box["height"] <= bar["y"])
                        assert apart, f"at {width} px the toolbar covers '{note.text_content()}'"
            if path == "curate":
                # the table view holds its 25 rows and header, without an empty row below
                page.get_by_text("Table", exact=True).first.click()
                _settle(page)
                for width in reversed(NARROW):
                    _at_width(page, width)
                    height = page.locator(".dvn-scroller").first.evaluate("e => e.clientHeight")
                    rows = 25 * (84 + 6)  # cache.THUMB_PX + 6 per row
                    assert rows < height <= rows + 36 + 2, f"at {width} px the table is {height} px for {rows} px of rows"
    finally:
        page.set_viewport_size({"width": 1440, "height": 1400})
