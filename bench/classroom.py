"""The 2D playground's classroom lessons on a real toy2d run: seconds per click, in the app and in the engine.

    .venv/bin/python bench/classroom.py --store DIR [--seed 0] [--compare-set model.bias=true ...]

Trains (or reuses) the toy2d run of the seed and its influence on ALL and D-loss, then:
  * in the app (Streamlit AppTest, server-side script time): one click on a point ("one point,
    predicted vs actual") and one click on "Retrain the epoch and check" per learning rate;
  * in the engine: the learning-rate lesson's growth factor, verdict and Kendall tau per rate;
  * mode collapse: the coverage of the last epoch's samples (and of the --compare-set run's).
Prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

# Before torch loads OpenMP: spinning waits starve everything else on the cores (docs/architecture.md, jobs).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--store", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--points", type=int, nargs="+", default=[0, 1234, 5678])
    ap.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 1e-2, 1e-1, 3e-1, 1.0])
    ap.add_argument("--compare-set", action="append", default=[], metavar="KEY=VALUE",
                    help="another toy2d configuration whose generator's coverage is reported too")
    args = ap.parse_args()

    from influence import classroom, store
    from influence.config import apply_overrides, preset
    from influence.context import RunContext, load_run_config
    from influence.estimator import estimate
    from influence.train import Trace, train

    root = Path(args.store)
    runs = {"toy2d": train(preset("toy2d", args.seed), root)}
    if args.compare_set:
        runs["compared"] = train(apply_overrides(preset("toy2d", args.seed), args.compare_set), root)
    for name, run in runs.items():
        ctx = RunContext.create(load_run_config(run), run.root)
        last = sorted(p.name for p in run.path("grids").glob("*.npy"))[-1]
        cov = classroom.coverage(ctx.dataset.train.x.numpy(), run.read_npy(f"grids/{last}"))
        print(json.dumps({"coverage": name, "run_id": run.run_id, "verdict": cov.verdict, "spread": cov.spread,
                          "offset": cov.offset, "test": run.read_json("summary.json")["test"]}), flush=True)

    run = runs["toy2d"]
    estimate(run, ["all", "dloss"])
    ctx = RunContext.create(load_run_config(run), run.root)
    trace = Trace.load(run)
    for lr in args.lrs:
        lesson = classroom.lr_lesson(ctx, trace, lr)
        print(json.dumps({"engine": "lr lesson", "lr": lr, "diverged": lesson.diverged, "growth": lesson.growth,
                          "verdict": lesson.verdict, "kendall_tau": lesson.kendall_tau, "n_checked": len(lesson.ids),
                          "seconds": lesson.seconds}), flush=True)

    os.environ[store.ENV_STORE] = str(root)
    sys.path.insert(0, str(REPO / "app"))
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "app" / "main.py"), default_timeout=600)
    at.session_state["run_id"] = run.run_id
    at.run()
    at.switch_page("views/playground_page.py").run()
    clicks = []
    for j in args.points:
        at.session_state["pg-point"] = j
        started = time.perf_counter()
        at.run()
        clicks.append(time.perf_counter() - started)
        assert not at.exception, at.exception
    print(json.dumps({"app": "one point, predicted vs actual", "seconds_per_click": clicks,
                      "median": statistics.median(clicks)}), flush=True)
    for lr in args.lrs:
        at.select_slider(key="pg-lr").set_value(lr)
        started = time.perf_counter()
        next(b for b in at.button if b.label == "Retrain the epoch and check").click().run()
        assert not at.exception, at.exception
        print(json.dumps({"app": "learning-rate lesson", "lr": lr, "seconds_per_click": time.perf_counter() - started}),
              flush=True)


if __name__ == "__main__":
    main()
