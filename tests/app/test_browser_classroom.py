"""The 2D playground's classroom lessons in a real browser (Playwright + Debian's Chromium) over a real
toy2d run: one point (chosen by id, as a click on the chart sets it), the learning-rate lesson at two
rates, the other lessons' tabs, each readable at 1024 px too; seconds per click, and a screenshot of
each view to artifacts/ (git-ignored; copy them to assets/). CLASSROOM_STORE=<store with a toy2d run and
its influence on ALL and D-loss>."""

from __future__ import annotations

import os
import re
import shutil
import time

import pytest

from influence import store
from test_browser import (  # noqa: F401
    ARTIFACTS,
    TIMEOUT_MS,
    _settle,
    browser_tab,
    expect_job_result,
    pytestmark,
    reads_whole_when_narrow,
    serve_app,
)

LESSON_TIMEOUT_MS = 900_000  # a lesson on a loaded 2-core machine can take minutes
# A screenshot run for assets/ over a prepared store, not part of the default suite: on a loaded
# 2-core machine a lesson on the real toy takes minutes.
pytestmark = [*pytestmark, pytest.mark.skipif(not os.environ.get("CLASSROOM_STORE"),
                                              reason="set CLASSROOM_STORE to a store with a toy2d run")]
TABS = {"curate": "Cleanse", "one-point": "One point",
        "loss-vs-metric": "Loss ≠ metric", "lr": "When it breaks", "collapse": "Mode collapse"}


@pytest.fixture(scope="module")
def classroom_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("classroom") / "store"
    shutil.copytree(os.environ["CLASSROOM_STORE"], root, ignore=shutil.ignore_patterns("_jobs", "_app_state.json"))
    # the first toy2d run with its influence on ALL (bench/screenshots.py's store also holds toy2d-adam-ema, without)
    runs = sorted(r["run_id"] for r in store.list_runs(root) if r["run_id"].startswith("toy2d-"))
    run_id = next(r for r in runs if any((root / r / "influence").glob("all-*/scores.npy")))
    store.write_json(root / "_app_state.json", {"run_id": run_id})
    with serve_app(root, tmp_path_factory.mktemp("classroom-log") / "streamlit.log") as url:
        yield url, root, run_id


def test_the_classroom_lessons_in_a_real_browser(classroom_server, capsys):
    from playwright.sync_api import expect

    url, root, run_id = classroom_server
    timings = {}
    with browser_tab(height=1500) as page:
        page.goto(f"{url}/playground")
        expect(page.locator("h1").first).to_have_text("2D playground", timeout=TIMEOUT_MS)
        _settle(page)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "classroom-curate.png"))
        reads_whole_when_narrow(page, "classroom-curate")

        page.get_by_role("tab", name=TABS["one-point"]).click()
        _settle(page)
        panel = page.get_by_role("tabpanel", name=TABS["one-point"])
        chart = panel.locator(".js-plotly-plot").first
        expect(chart).to_be_visible()
        target = chart.evaluate("gd => gd._fullData[0].x.length") // 3
        started = time.perf_counter()
        panel.get_by_label("…or type a point's id").fill(str(target))  # a click on the chart sets the same
        panel.get_by_label("…or type a point's id").press("Enter")
        expect_job_result(panel, f"ALL: actual change without #{target}", LESSON_TIMEOUT_MS)
        _settle(page)
        timings["one point (click to result)"] = time.perf_counter() - started
        expect(panel.get_by_text("longer than the real shift")).to_be_visible()
        assert page.locator('[data-testid="stException"]').count() == 0
        page.screenshot(path=str(ARTIFACTS / "classroom-one-point.png"), full_page=True)
        reads_whole_when_narrow(page, "classroom-one-point")

        page.get_by_role("tab", name=TABS["loss-vs-metric"]).click()
        _settle(page)
        expect(page.get_by_text("Kendall τ between the two harmful-first rankings")).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "classroom-loss-vs-metric.png"))
        reads_whole_when_narrow(page, "classroom-loss-vs-metric")

        page.get_by_role("tab", name=TABS["lr"]).click()
        _settle(page)
        for lr in ("0.001", "1"):
            slider = page.get_by_role("tabpanel", name=TABS["lr"]).get_by_role("slider")
            slider.focus()
            for _ in range(12):  # to the left end, then right until the label reads lr
                slider.press("ArrowLeft")
            while not slider.get_attribute("aria-valuetext").startswith(lr):
                slider.press("ArrowRight")
            _settle(page)
            started = time.perf_counter()
            page.get_by_role("button", name="Retrain the epoch and check").click()
            # the results of the slider's rate (a verdict or the divergence) appear only once its lesson has run
            expect_job_result(page, re.compile(rf"^At lr {re.escape(lr)}:"), LESSON_TIMEOUT_MS)
            _settle(page)
            timings[f"learning-rate lesson at {lr} (click to result)"] = time.perf_counter() - started
        assert page.locator('[data-testid="stException"]').count() == 0
        page.screenshot(path=str(ARTIFACTS / "classroom-lr.png"), full_page=True)
        reads_whole_when_narrow(page, "classroom-lr")

        page.get_by_role("tab", name=TABS["collapse"]).click()
        _settle(page)
        expect(page.get_by_text("the generator", exact=True)).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "classroom-collapse.png"))
        reads_whole_when_narrow(page, "classroom-collapse")
    with capsys.disabled():
        for what, seconds in timings.items():
            print(f"\n[classroom, browser, {run_id}] {what}: {seconds:.1f} s")
