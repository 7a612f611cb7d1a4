"""Seconds to render each app page from cache for a 50k-instance run (Streamlit AppTest).

Usage: .venv/bin/python bench/app_render.py [--store DIR] [--n 50000] [--repeat 3] [--map]

What it builds (once per store; reused when --store points at a prepared one):
  * a real MNIST run: the tiny preset with data.n_train=50000, 1 epoch (500 steps), trace of the
    last 5 steps, and a real 2D run: toy2d with 50000 points, 1 epoch, last 5 steps traced;
  * influence results for every instance written with the engine's own writer
    (influence.estimator.results.save_result): the SCORES ARE SYNTHETIC (heavy-tailed random values),
    because a real backward pass over all 500 steps takes far longer than a benchmark should,
    and a real pass over the 5 traced steps would score only 500 instances, which understates
    the rendering work (histograms, scatter plots and per-class plots draw every instance);
  * one real cleansing attempt (replay without the 500 most harmful instances) and one real
    leave-one-out validation of 5 instances, so those pages draw their result views.
Then, per page: one warm-up run (fills st.cache_data / st.cache_resource), then `--repeat`
timed `AppTest.run()` calls; the median is reported. Times are server-side script time
(what AppTest measures); the browser's drawing of the charts comes on top.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PAGES = ["train_page", "influence_page", "curate_page", "cleanse_page", "validate_page", "playground_page"]


def build(root: Path, n: int, names: tuple[str, ...] = ("tiny", "toy2d"), extras: bool = True) -> list[str]:
    from influence.cleanse import cleanse
    from influence.config import preset
    from influence.context import RunContext, load_run_config
    from influence.estimator import EstimateOptions, harmful_order, load_result, write_table
    from influence.estimator.results import save_result
    from influence.metrics import available_metrics
    from influence.train import Trace, train
    from influence.validation import stored_validations, validate

    ids = []
    for name in names:
        base = preset(name)
        cfg = dataclasses.replace(base, data=dataclasses.replace(base.data, n_train=n),
                                  train=dataclasses.replace(base.train, epochs=1, lr_schedule=(), trace_steps=5))
        started = time.perf_counter()
        run = train(cfg, root)
        print(f"{cfg.run_id}: trained in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        options = EstimateOptions()
        trace = Trace.load(run)
        n_params = trace.final.shape[0]
        metrics = list(available_metrics(cfg.is_2d))
        rng = np.random.default_rng(0)
        if not (run.path("influence").exists() and any(run.path("influence").iterdir())):
            for metric in metrics:
                scores = rng.standard_t(3, n) * 1e-4  # synthetic, heavy-tailed like real estimates
                norms = np.abs(rng.normal(1.0, 0.1, (trace.steps + 1, 3)))  # |u_D|, |u_G|, |whole state|
                step_of = rng.integers(0, trace.steps, n)  # every instance counts as traced
                save_result(run, metric, options, n_params, scores, norms, step_of, 0.0, 0.0, 0, trace, scores,
                            trace.steps - 1)
            write_table(run, RunContext.create(load_run_config(run), root).dataset)
        removal = harmful_order(load_result(run, metrics[0], options, n_params))[:500].tolist()
        run.write_json("app/removal.json", {"ids": sorted(removal)})
        if extras:
            cleanse(run, removal)
            if not stored_validations(run):
                validate(run, metrics[:1], n=5)
        ids.append(run.run_id)
    return ids


def measure(root: Path, run_id: str, pages: list[str], repeat: int, view: str | None = None) -> dict[str, float]:
    os.environ["GAN_INFLUENCE_STORE"] = str(root)
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "app" / "main.py"), default_timeout=600)
    at.session_state["run_id"] = run_id
    if view is not None:
        at.session_state["view"] = view  # the Inspect page's Gallery / Table / Map switch
    at.run()
    out = {}
    for page in pages:
        at.switch_page(f"views/{page}.py")
        at.run()  # warm-up: loads the data set, reads results, fills the caches
        if at.exception:
            raise SystemExit(f"{page}: {at.exception[0].value}")
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            at.run()
            times.append(time.perf_counter() - started)
        out[page] = statistics.median(times)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--store", help="store folder to build in / reuse (default: a fresh temp folder)")
    p.add_argument("--n", type=int, default=50_000, help="training instances")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--map", action="store_true", help="only the Inspect page with the map of the data (PCA of the "
                   "feature-net features, 50k points): builds the MNIST run alone")
    args = p.parse_args()
    root = Path(args.store or tempfile.mkdtemp(prefix="gie-bench-")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    if args.map:
        (mnist_id,) = build(root, args.n, ("tiny",), extras=False)
        results = {f"curate_page ({view} view)": measure(root, mnist_id, ["curate_page"], args.repeat, view)["curate_page"]
                   for view in ("Map", "Gallery")}
        for page, seconds in results.items():
            print(f"{page:<28} {seconds:6.2f} s")
        return 0
    mnist_id, toy_id = build(root, args.n)
    print(f"store {root}; runs {mnist_id} (MNIST), {toy_id} (2D); median of {args.repeat} runs after a warm-up")
    results = measure(root, mnist_id, PAGES[:-1], args.repeat)
    pages_2d = ["influence_page", "curate_page", "playground_page"]
    results |= {f"{k} (2D run)": v for k, v in measure(root, toy_id, pages_2d, args.repeat).items()}
    for page, seconds in results.items():
        print(f"{page:<28} {seconds:6.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
