"""Wall time of one toy2d training run: in-process (as the CLI), as a background job nobody watches,
and as a job the app follows in a real browser (the Train page polling it).

    .venv/bin/python bench/job_speed.py [--epochs 10] [--watchers 1] [--store DIR] [--threads N]
                                        [--ways cli job app] [--server-env KEY=VALUE ...]

Each way trains a fresh seed (so nothing is cached) of the toy2d preset cut to --epochs.
"app" starts `streamlit run app/main.py`, opens the Train page in `--watchers` headless
Chromium tabs (Debian's /usr/bin/chromium through Playwright), presses Start training
and waits for the job to finish. Reported per way: wall seconds from start to done and
the job's own started->updated span (the worker's time). `--threads` sets torch's thread count of
the in-process way (run it with OMP_WAIT_POLICY=PASSIVE in the environment to compare wait policies).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "app"))  # the app tests' helpers: serve_app

from apphelpers import serve_app  # noqa: E402


def _config(epochs: int, seed: int):
    from influence.config import apply_overrides, preset

    return apply_overrides(preset("toy2d"), [f"train.epochs={epochs}", f"seed={seed}"])


def in_process(root: Path, epochs: int, seed: int) -> dict:
    from influence.train import train

    started = time.perf_counter()
    train(_config(epochs, seed), root)
    return {"wall_s": time.perf_counter() - started}


def background(root: Path, epochs: int, seed: int) -> dict:
    from influence import jobs

    started = time.perf_counter()
    key = jobs.start_background(root, {"kind": "train", "params": {"config": _config(epochs, seed).to_dict()}})
    status = jobs.wait(root, key, poll_s=0.2)
    return {"wall_s": time.perf_counter() - started, "job_s": status["updated"] - status["started"],
            "state": status["state"]}


def in_app(root: Path, epochs: int, seed: int, watchers: int, server_env: dict) -> dict:
    from playwright.sync_api import sync_playwright

    from influence import jobs

    with serve_app(root, root / "job_speed_server.log", server_env) as url:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox"])
            tabs = [browser.new_page(viewport={"width": 1440, "height": 1200}) for _ in range(watchers)]
            for tab in tabs:
                tab.set_default_timeout(600_000)  # a loaded 2-core machine draws the first page slowly
                tab.goto(url)
                tab.get_by_role("button", name="Start training").wait_for()
            tab = tabs[0]
            try:
                tab.get_by_text("2D normal (the paper's toy)").click()
                tab.get_by_text("Hyperparameters: the preset's values").click()
                for label, value in (("epochs", str(epochs)), ("seed", str(seed))):
                    tab.get_by_label(label, exact=True).fill(value)
                started = time.perf_counter()
                tab.get_by_role("button", name="Start training").click()
            except Exception:
                tab.screenshot(path=str(root / "job_speed_failure.png"), full_page=True)
                raise
            key = None
            while True:
                found = [s for s in jobs.list_jobs(root) if s["spec"]["kind"] == "train"]
                if found and found[0]["state"] in ("done", "failed", "cancelled", "interrupted"):
                    key = found[0]["key"]
                    break
                time.sleep(0.2)
            wall = time.perf_counter() - started
            browser.close()
        status = jobs.read_status(root, key)
        return {"wall_s": wall, "job_s": status["updated"] - status["started"], "state": status["state"],
                "watchers": watchers}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--watchers", type=int, default=1)
    ap.add_argument("--store", default=None)
    ap.add_argument("--ways", nargs="+", default=["cli", "job", "app"])
    ap.add_argument("--server-env", nargs="*", default=[], metavar="KEY=VALUE",
                    help="environment of the app server (its job workers inherit it), e.g. OMP_NUM_THREADS=1")
    ap.add_argument("--threads", type=int, default=None, help="torch threads of the in-process (cli) way")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    root = Path(args.store or tempfile.mkdtemp(prefix="gie-jobspeed-")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    seed = int(time.time()) % 100_000
    out = {}
    for i, way in enumerate(args.ways):
        if way == "cli":
            out[way] = in_process(root, args.epochs, seed + i)
        elif way == "job":
            out[way] = background(root, args.epochs, seed + i)
        else:
            out[way] = in_app(root, args.epochs, seed + i, args.watchers,
                              dict(item.split("=", 1) for item in args.server_env))
        print(way, json.dumps(out[way]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
