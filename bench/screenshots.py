"""Refresh the app's screenshots (assets/app-*.png, assets/classroom-*.png) from a store, in a real browser.

    .venv/bin/python bench/screenshots.py --store DIR --prepare      # fill DIR first (minutes), then shoot
    .venv/bin/python bench/screenshots.py --store DIR [--only app-influence classroom-lr] [--out assets]
    .venv/bin/python bench/screenshots.py --store DIR --width 1024 --out /tmp/narrow   # a laptop's width: layouts

Starts `streamlit run app/main.py` over the store and drives Debian's headless Chromium with Playwright (as
tests/app/test_browser.py does). Every shot waits until the page has finished running (no running status,
skeleton or spinner: the old hero showed "Checking what the metrics can mean ..."), its own result text is
visible and every Plotly chart on the page has drawn; a shot whose result does not appear fails, it is
never saved half drawn.

--prepare trains what the shots need, where missing: mnist-adam seed 0 (as a background job, so its
start-up is recorded) with influence on FID, IS and D-loss and its spot check, a group validation (16 random
groups of 5%, the cleansing curve at 1% and 5%), a cleanse of its 50 most harmful instances by FID and a
20-instance validation; toy2d seed 0 with influence on ALL and D-loss, its spot check and a cleanse of its 100
most harmful points by ALL; toy2d-adam-ema seed 0 (the mode-collapse lesson's generator that covers the
data). On 2 CPU cores that takes about 20 minutes (measured 2026-12-04: 19 min 45 s, of which the training 5
min and the group validation's 21 replays 7 min 36 s); the shots about 3.

The Generated samples page and the playground's pull (assets/app-samples*.png, classroom-pull.png) are shot by
their browser test over the prepared runs: SAMPLES_STORE=DIR pytest tests/app/test_browser_samples.py (its
artifacts/ copied to assets/).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

# Before torch loads OpenMP: spinning waits starve everything else on the cores (docs/architecture.md, jobs).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "app"))  # the app tests' helpers: serve_app

from apphelpers import serve_app  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 600_000  # a lesson or a cached computation on a loaded 2-core machine can take minutes


# ---------------------------------------------------------------- the store
def prepare(root: Path) -> None:
    """The runs and results the shots show (cached ones are reused)."""
    from influence import jobs, store
    from influence.classroom import covering_toy
    from influence.cleanse import cleanse
    from influence.config import preset
    from influence.estimator import cached_results, estimate, harmful_order
    from influence.train import train
    from influence.validation import validate
    from influence.validation.groups import GroupSpec, validate_groups
    from influence.validation.spotcheck import spot_check

    root.mkdir(parents=True, exist_ok=True)
    mnist_cfg = preset("mnist-adam", 0)
    if not store.Run(root, mnist_cfg.run_id).exists("summary.json"):
        key = jobs.start_background(root, {"kind": "train", "params": {"config": mnist_cfg.to_dict()}})
        print(f"training {mnist_cfg.run_id} as job {key} ...", flush=True)
        final = jobs.wait(root, key, timeout_s=7200)
        if final["state"] != "done":
            raise SystemExit(f"training failed: {final.get('message')}")
    mnist = store.open_run(root, mnist_cfg.run_id)
    estimate(mnist, ["fid", "is", "dloss"])
    spot_check(mnist, ["fid", "is", "dloss"], level="auto")  # the trust card
    validate_groups(mnist, ["fid", "is"], GroupSpec(groups=16, fractions=(0.05,), curve=(0.01, 0.05)))
    removal = sorted(harmful_order(cached_results(mnist)["fid"])[:50].tolist())
    cleanse(mnist, removal)
    mnist.write_json("app/removal.json", {"ids": removal})
    validate(mnist, ["fid"], n=20)

    toy = train(preset("toy2d", 0), root)
    estimate(toy, ["all", "dloss"])
    spot_check(toy, ["all", "dloss"], level="auto")
    removal = sorted(harmful_order(cached_results(toy)["all"])[:100].tolist())
    cleanse(toy, removal)
    toy.write_json("app/removal.json", {"ids": removal})
    train(covering_toy(0), root)  # the mode-collapse lesson's comparison


def runs_of(root: Path) -> dict[str, str]:
    """{'mnist': run id, 'toy': run id}: the newest finished MNIST and 2D runs with influence results."""
    from influence import store

    out = {}
    for r in sorted(store.list_runs(root), key=lambda r: r["modified"]):
        if r.get("summary") and (root / r["run_id"] / "influence" / "table.csv").exists():
            out["toy" if r["config"]["data"]["source"] == "normal2d" else "mnist"] = r["run_id"]
    return out


# ---------------------------------------------------------------- the shots
@dataclass
class Shot:
    name: str
    run: str  # "mnist" or "toy"
    path: str  # the page's url path
    wait_for: str  # text that appears only once the result is drawn
    steps: list = field(default_factory=list)  # (action, argument) pairs, see `act`
    height: int = 1400  # the viewport: Streamlit scrolls inside the page, so a long view needs a tall window


SHOTS = [
    Shot("app-train", "mnist", "", "Training curves"),
    Shot("app-train-form", "mnist", "", "Training curves",
         [("click", "Hyperparameters: the preset's values"), ("wait", "learning-rate schedule")]),
    Shot("app-train-finetune", "mnist", "", "Training curves",
         [("click", "a trained GAN (fine-tune and trace)"), ("wait", "Keep its final optimizer state")]),
    Shot("app-influence", "mnist", "influence", "Trust —"),
    Shot("app-influence-verdict", "mnist", "influence", "Trust —", [("scroll", "u is the metric's gradient")]),
    Shot("app-influence-detail", "mnist", "influence", "One instance in detail", [("scroll", "One instance in detail")]),
    Shot("app-influence-replays", "toy", "influence", "Trust —",
         [("click", "replays, predicted against actual"), ("top", "replays, predicted against actual")]),
    Shot("app-curate", "mnist", "curate", "Removal set"),
    Shot("app-cleanse", "mnist", "cleanse", "Where the samples changed"),
    Shot("app-cleanse-compare", "mnist", "cleanse", "Where the samples changed",
         [("scroll", "Compare attempts side by side")]),
    Shot("app-validate", "mnist", "validate", "Do estimate and truth"),
    Shot("app-validate-groups", "mnist", "validate", "Estimate in the scatter",
         [("top", "Groups: do summed estimates predict")]),
    Shot("app-samples-map", "mnist", "samples", "Sort by",
         [("tab", "Map"), ("wait", "Draw a lasso or a box around samples")]),
    Shot("app-playground", "toy", "playground", "orange arrows: where"),
    Shot("classroom-curate", "toy", "playground", "orange arrows: where", height=1500),
    Shot("classroom-one-point", "toy", "playground", "Click a training point",
         [("tab", "One point"), ("point", "1234"), ("wait", "longer than the real shift")],
         height=2000),
    Shot("classroom-loss-vs-metric", "toy", "playground", "Kendall τ between the two harmful-first rankings",
         [("tab", "Loss ≠ metric")], height=1500),
    Shot("classroom-lr", "toy", "playground", "When it breaks",
         [("tab", "When it breaks"), ("lr", "3"), ("lr", "1")], height=2000),
    Shot("classroom-collapse", "toy", "playground", "the generator",
         [("tab", "Mode collapse"), ("click", "Switch to toy2d-adam-ema"), ("tab", "Mode collapse"),
          ("wait", "covers")], height=1500),
]


def settle(tab) -> None:
    """Until the script run has finished and every element and chart has been drawn."""
    tab.wait_for_timeout(500)  # a rerun just triggered may not show its status widget yet
    tab.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
        " && !document.querySelector('[data-testid=\"stSkeleton\"]')"
        " && !document.querySelector('[data-testid=\"stSpinner\"]')"
        " && [...document.querySelectorAll('.js-plotly-plot')].every(p => p.querySelector('.main-svg'))",
        timeout=TIMEOUT_MS)
    tab.wait_for_timeout(1500)  # plotly's transitions, images decoding


def act(tab, action: str, arg: str) -> None:
    from playwright.sync_api import expect

    shown = tab.get_by_text(arg).locator("visible=true").first  # not the same words in a hidden tab
    if action == "click":
        shown.click()
    elif action == "wait":
        expect(shown).to_be_visible(timeout=TIMEOUT_MS)
    elif action in ("scroll", "top"):  # "top": the element at the top of the view ("if needed" leaves it lower)
        target = tab.get_by_text(arg).first
        expect(target).to_be_attached(timeout=TIMEOUT_MS)
        if action == "top":
            target.evaluate("e => e.scrollIntoView({block: 'start'})")
        else:
            target.scroll_into_view_if_needed()
    elif action == "tab":
        tab.get_by_role("tab", name=arg).click()
    elif action == "point":  # the one-point lesson, as a click on the chart sets it
        field_ = tab.get_by_label("…or type a point's id")
        field_.fill(arg)
        field_.press("Enter")
    elif action == "lr":  # the learning-rate lesson at rate `arg`
        panel = tab.get_by_role("tabpanel", name="When it breaks")
        slider = panel.get_by_role("slider")
        slider.focus()
        for _ in range(12):
            slider.press("ArrowLeft")
        while not slider.get_attribute("aria-valuetext").startswith(arg):
            slider.press("ArrowRight")
        settle(tab)
        panel.get_by_role("button", name="Retrain the epoch and check").click()
        expect(panel.get_by_text(f"at lr {arg}").first).to_be_visible(timeout=TIMEOUT_MS)
    settle(tab)


def shoot(root: Path, out: Path, only: list[str] | None, width: int = 1440) -> None:
    from playwright.sync_api import expect, sync_playwright

    from influence import store

    runs = runs_of(root)
    shots = [s for s in SHOTS if not only or s.name in only]
    missing = {s.run for s in shots} - set(runs)
    if missing:
        raise SystemExit(f"the store has no finished {' or '.join(sorted(missing))} run with influence results: "
                         "run with --prepare first")
    out.mkdir(parents=True, exist_ok=True)
    log = Path(tempfile.gettempdir()) / "screenshots-streamlit.log"
    with serve_app(root, log) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        for shot in shots:
            store.write_json(root / "_app_state.json", {"run_id": runs[shot.run]})
            tab = browser.new_page(viewport={"width": width, "height": shot.height})
            tab.set_default_timeout(TIMEOUT_MS)
            started = time.perf_counter()
            tab.goto(f"{url}/{shot.path}")
            tab.wait_for_selector("h1")
            settle(tab)
            expect(tab.get_by_text(shot.wait_for).first).to_be_attached(timeout=TIMEOUT_MS)
            for job in tab.get_by_role("button", name="Dismiss").all():  # finished jobs' boxes: results, not chores
                job.click()
                settle(tab)
            for action, arg in shot.steps:
                act(tab, action, arg)
            if tab.locator('[data-testid="stException"]').count():
                raise SystemExit(f"{shot.name}: the page shows an exception")
            if shot.steps and shot.steps[-1][0] not in ("scroll", "top"):
                tab.evaluate("window.scrollTo(0, 0)")  # a tab or a lesson: from the page's top
                tab.locator("h1").first.scroll_into_view_if_needed()
            tab.screenshot(path=str(out / f"{shot.name}.png"))
            print(f"{shot.name}.png ({runs[shot.run]}, {time.perf_counter() - started:.0f} s)", flush=True)
            tab.close()
        browser.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True, type=Path)
    ap.add_argument("--out", type=Path, default=REPO / "assets")
    ap.add_argument("--only", nargs="+", help="shot names, e.g. app-influence classroom-lr")
    ap.add_argument("--prepare", action="store_true", help="train and compute what the shots need first")
    ap.add_argument("--width", type=int, default=1440, help="the browser's width in px (assets/ are shot at 1440)")
    args = ap.parse_args()
    root = args.store.resolve()
    os.environ["GAN_INFLUENCE_STORE"] = str(root)
    if args.prepare:
        prepare(root)
    shoot(root, args.out, args.only, args.width)


if __name__ == "__main__":
    main()
