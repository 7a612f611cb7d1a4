"""Why did my GAN make this? in a real browser (Playwright + Debian's Chromium) over the tiny MNIST run and the
small 2D run: pick a generated sample in the grid, Explain (a background job), add its responsible images to
the removal set (checked on disk against the engine), Check by replay (before/after at the same z); on the 2D
playground click a generated point, see the pulling points' arrows and replay without them. Pixels: the
picked sample and its after-images are drawn digits, the arrows are on the chart; at 1024 px every text reads
whole at each stage. Screenshots go to artifacts/ (git-ignored); run over SAMPLES_STORE they are
assets/app-samples*.png and assets/classroom-pull.png."""

from __future__ import annotations

import io
import os
import re
import shutil

import numpy as np
import pytest
from apphelpers import removal_on_disk
from PIL import Image
from test_browser import (
    ARTIFACTS,
    TIMEOUT_MS,
    _settle,
    browser_tab,
    expect_job_result,
    pytestmark,
    reads_whole_when_narrow,
    serve_app,
)

from influence import store
from influence.samples import find
from influence.samples.pool import sample_pool

JOB_TIMEOUT_MS = 900_000  # a background job on a loaded 2-core machine: start-up, then the pass or the replays


@pytest.fixture(scope="module")
def samples_server(request, tmp_path_factory):
    """The app over the tiny MNIST run and the small 2D run, or over SAMPLES_STORE (one image run and one 2D run,
    e.g. trained by bench/explain.py; for the screenshots in assets/)."""
    root = tmp_path_factory.mktemp("samples") / "store"
    if os.environ.get("SAMPLES_STORE"):
        shutil.copytree(os.environ["SAMPLES_STORE"], root, ignore=shutil.ignore_patterns("_jobs", "_app_state.json"))
    else:
        shutil.copytree(request.getfixturevalue("tiny_store"), root, ignore=shutil.ignore_patterns("_jobs"))
        shutil.copytree(request.getfixturevalue("toy_store"), root, ignore=shutil.ignore_patterns("_jobs", "_cache"),
                        dirs_exist_ok=True)
    store.write_json(root / "_app_state.json", {"run_id": _runs(root)[0]})
    with serve_app(root, tmp_path_factory.mktemp("samples-log") / "streamlit.log") as url:
        yield url, root


def _runs(root) -> tuple[str, str]:
    """(the image run, the 2D run) of the store."""
    runs = sorted(r["run_id"] for r in store.list_runs(root))
    def is_2d(r: str) -> bool:
        return store.read_json(root / r / "config.json")["data"]["source"] == "normal2d"

    # a 2D run with influence first: the lesson's page then shows its influences, not a call to compute them
    return next(r for r in runs if not is_2d(r)), next(r for r in sorted(
        runs, key=lambda r: not (root / r / "influence").is_dir()) if is_2d(r))


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"samples-{name}.png"))


def _pixels(locator) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(locator.screenshot())).convert("RGB"), dtype=np.int16)


def _is_a_drawing(locator) -> bool:
    """The element shows an image with structure (a digit), not a blank or broken one."""
    grey = _pixels(locator).mean(2)
    return grey.std() > 20 and (grey > 128).mean() > 0.02


def _cards_fill_their_lines(grid) -> None:
    """The grid's cards reach its right edge (left-aligned, they left a blank band nearly a card wide before the
    Picked panel at 1440 px) and every line's cards stand in the first line's columns."""
    right = grid.bounding_box()["x"] + grid.bounding_box()["width"]
    boxes = [b for b in (img.bounding_box() for img in grid.locator('[data-testid="stImage"] img').all()) if b]
    assert len(boxes) >= 6
    columns = sorted({round(b["x"]) for b in boxes if abs(b["y"] - boxes[0]["y"]) < 2})
    assert len(columns) >= 2
    assert all(min(abs(b["x"] - c) for c in columns) < 2 for b in boxes), "a card out of the columns"
    # the last column's image ends a card's padding and border (17 px) before the grid's edge
    assert right - max(b["x"] + b["width"] for b in boxes) < 24


def test_pick_explain_add_and_check_in_a_real_browser(samples_server):
    from playwright.sync_api import expect

    url, root = samples_server
    run_id = _runs(root)[0]
    run = store.open_run(root, run_id)
    with browser_tab(height=1500) as page:
        page.goto(f"{url}/samples")
        expect(page.locator("h1").first).to_have_text("Generated samples", timeout=TIMEOUT_MS)
        _settle(page)
        assert page.locator('[data-testid="stException"]').count() == 0
        # the grid opens sorted by clarity, lowest first: pick the least clear sample, its checkbox found by its widget
        # key, which names the sample (st-key-<key>; not by place: a grid still rendering under load once gave
        # another card there); the key's last part is whether the sample is picked
        pool = sample_pool(run)
        least_clear = int(pool.table.sort_values("clarity", kind="stable")["sample"].iloc[0])
        page.locator(f".st-key-samples-pick-{run_id}-{least_clear}-0 label").click()
        expect(page.get_by_text("press Explain")).to_be_visible(timeout=TIMEOUT_MS)
        _settle(page)
        expect(page.locator(f".st-key-samples-pick-{run_id}-{least_clear}-1 input")).to_be_checked()
        picked = page.locator('[data-testid="stMetricValue"]').first
        expect(picked).to_have_text("1")
        # how long Explain will take, said before it is pressed
        expect(page.get_by_text(re.compile(r"Takes roughly \d+ (s|min) here for 1 sample"))).to_be_visible()
        grid_image = page.locator('[data-testid="stImage"] img').first
        assert _is_a_drawing(grid_image)
        _cards_fill_their_lines(page.locator(".st-key-samples-grid"))
        _shot(page, "grid")
        reads_whole_when_narrow(page, "samples-grid")

        page.get_by_role("button", name="Explain").click()
        expect_job_result(page, "Responsible: removing them", JOB_TIMEOUT_MS)
        _settle(page)
        assert page.locator('[data-testid="stException"]').count() == 0
        page.get_by_role("heading", name="Explain").scroll_into_view_if_needed()
        _shot(page, "explain")
        reads_whole_when_narrow(page, "samples-explain")

        explanation = find(run, "clarity", pool.z[[least_clear]])
        assert explanation is not None
        strength = explanation.strength(0)
        responsible = [int(j) for j in explanation.responsible(0, 12) if strength[j] > 0]
        before = set(removal_on_disk(root, run_id))
        page.get_by_role("button", name=f"Add these {len(responsible)} to the removal set").first.click()
        expect(page.get_by_text(f"All {len(responsible)} are in the removal set")).to_be_visible(timeout=TIMEOUT_MS)
        _settle(page)
        assert set(removal_on_disk(root, run_id)) == before | set(responsible)

        page.get_by_role("button", name="Check by replay").click()
        expect_job_result(page, "top-k moved as predicted", JOB_TIMEOUT_MS)
        _settle(page)
        assert page.locator('[data-testid="stException"]').count() == 0
        # the section at the top of the view, its before/after images below it (Streamlit scrolls an inner
        # container, so a full-page shot would not show more)
        page.get_by_role("heading", name="Check").evaluate("e => e.scrollIntoView({block: 'start'})")
        _settle(page)
        _shot(page, "check")
        reads_whole_when_narrow(page, "samples-check")
        k = max(1, round(0.01 * run.read_json("summary.json")["n_train"]))  # the page's default
        for caption in ("the run", f"without its top {k}", f"without {k} random"):
            card = page.locator('[data-testid="stImage"]').filter(has=page.get_by_text(caption)).last
            assert _is_a_drawing(card.locator("img")), caption


def test_the_pull_on_a_generated_point_in_a_real_browser(samples_server):
    from playwright.sync_api import expect

    url, root = samples_server
    toy_id = _runs(root)[1]
    store.write_json(root / "_app_state.json", {"run_id": toy_id})
    with browser_tab(height=1400) as page:
        page.goto(f"{url}/playground")
        expect(page.locator("h1").first).to_have_text("2D playground", timeout=TIMEOUT_MS)
        _settle(page)
        page.get_by_role("tab", name="Pull a point").click()
        _settle(page)
        panel = page.get_by_role("tabpanel", name="Pull a point")
        chart = panel.locator(".js-plotly-plot").first
        expect(chart).to_be_visible()
        reads_whole_when_narrow(page, "samples-pull-unclicked")
        # click generated point 0 where plotly draws it (trace 1 of the chart)
        x, y = chart.evaluate("""gd => {
            const t = gd._fullData[1], xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
            const box = gd.querySelector('.nsewdrag').getBoundingClientRect();
            return [box.left + xa.l2p(t.x[0]), box.top + ya.l2p(t.y[0])];
        }""")
        page.mouse.click(x, y)
        expect_job_result(panel, "predicted displacement of point", JOB_TIMEOUT_MS)
        _settle(page)
        panel.get_by_role("button", name="Replay without them").click()
        expect_job_result(panel, "cosine, predicted vs actual", JOB_TIMEOUT_MS)
        _settle(page)
        assert page.locator('[data-testid="stException"]').count() == 0
        rgb = _pixels(panel.locator(".js-plotly-plot").first)
        orange = (np.abs(rgb - np.array([255, 127, 14])).sum(2) < 60).sum()  # the predicted displacement arrow
        black = (rgb.sum(2) < 80).sum()  # the actual one (and the chosen point's outline)
        red = (np.abs(rgb - np.array([214, 39, 40])).sum(2) < 90).sum()  # the pulling points and their arrows
        assert orange > 30 and black > 30 and red > 100, (orange, black, red)
        cosine = float(panel.locator('[data-testid="stMetric"]').filter(has_text="cosine").locator(
            '[data-testid="stMetricValue"]').inner_text())
        assert cosine > 0.9
        _shot(page, "pull")
        reads_whole_when_narrow(page, "samples-pull")
