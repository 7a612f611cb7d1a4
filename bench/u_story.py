"""The |u| plot and the verdict side by side for stable and exploding runs (issue 15's check).

    .venv/bin/python bench/u_story.py --store DIR [--case NAME=PRESET:METRIC[:key=value,...]] ... [--png PATH]
    .venv/bin/python bench/u_story.py --result NAME=RUN/influence/RESULT_DIR ... [--png PATH]   (stored results, read only)

Default cases: quick and toy2d (stable: the traced epoch at lr 1e-3) and quick with lr 1e-2 in every
epoch (the recursion explodes); `--epochs N` cuts every case to N epochs (the traced epoch keeps its lr).
Each case is trained and estimated in the store (cached runs and results are reused). Prints per case:
the growth factor, the verdict, |u_D|'s rise from its first non-zero value (the accumulation a
newcomer read as instability) and the peak of |u_D| relative to |u| at the start; writes the app's
|u| figures side by side as one PNG (headless Chromium).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

# Before torch loads OpenMP: spinning waits starve everything else on the cores (docs/architecture.md, jobs).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "app"))
DEFAULT_CASES = ["quick (stable)=quick:fid", "toy2d (stable)=toy2d:all",
                 "quick, lr 1e-2 traced (exploding)=quick:fid:train.lr_schedule="]


def run_case(root: Path, spec: str, epochs: int | None) -> dict:
    from influence.config import apply_overrides, preset
    from influence.estimator import EstimateOptions, estimate
    from influence.train import train
    from shorten import cut

    name, rest = spec.split("=", 1)
    bits = rest.split(":", 2)
    preset_name, metric = bits[0], bits[1]
    sets = [s for s in (bits[2].split(",") if len(bits) > 2 else []) if s]
    cfg = preset(preset_name)
    cfg = apply_overrides(cfg, cut(cfg, epochs) + sets)
    run = train(cfg, root)
    result = estimate(run, [metric], EstimateOptions())[metric]
    u = result.u_norms
    u_d = u[:, 0]
    nonzero = u_d[u_d > 0]
    whole = getattr(result, "state_norms", None)
    start = (whole[-1] if whole is not None else np.hypot(u[-1, 0], u[-1, 1]))
    return {"case": name, "run": run.run_id, "metric": metric, "growth": result.meta["growth"],
            "verdict": result.meta["verdict"], "traced_steps": result.meta["traced_steps"],
            "u_D_rise_from_first_nonzero": float(nonzero.max() / nonzero[-1]) if nonzero.size else None,
            "u_D_peak_over_start": float(np.nanmax(u_d) / start), "result": result}


def stored_case(spec: str) -> dict:
    """A finished result folder (u_norms.npy, meta.json, state_norms.npy when written), read only."""
    from types import SimpleNamespace

    name, folder = spec.split("=", 1)
    folder = Path(folder)
    meta = json.loads((folder / "meta.json").read_text())
    u = np.load(folder / "u_norms.npy")
    whole = np.load(folder / "state_norms.npy") if (folder / "state_norms.npy").exists() else None
    start = whole[-1] if whole is not None else np.hypot(u[-1, 0], u[-1, 1])
    nonzero = u[:, 0][u[:, 0] > 0]
    return {"case": name, "run": folder.parents[1].name, "metric": meta["metric"], "growth": meta["growth"],
            "verdict": meta["verdict"], "traced_steps": meta["traced_steps"],
            "u_D_rise_from_first_nonzero": float(nonzero.max() / nonzero[-1]) if nonzero.size else None,
            "u_D_peak_over_start": float(np.nanmax(u[:, 0]) / start),
            "result": SimpleNamespace(u_norms=u, state_norms=whole)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", help="store to train and estimate the --case runs in")
    ap.add_argument("--result", action="append", default=[], help="NAME=FOLDER of a stored result (repeatable)")
    ap.add_argument("--case", action="append", help="NAME=PRESET:METRIC[:key=value,...] (repeatable)")
    ap.add_argument("--epochs", type=int, default=None, help="cut every case to this many epochs")
    ap.add_argument("--png", default=str(REPO / "assets" / "u-verdict-cases.png"))
    args = ap.parse_args()
    from explorer import figures
    from influence import store
    from influence.estimator import verdict_for

    cases = [stored_case(r) for r in args.result]
    if args.case or not args.result:
        root = store.store_root(args.store)
        cases += [run_case(root, c, args.epochs) for c in (args.case or DEFAULT_CASES)]
    html = []
    for i, c in enumerate(cases):
        r = c.pop("result")
        print(json.dumps(c), flush=True)
        fig = figures.u_norm_figure(r.u_norms, getattr(r, "state_norms", None), height=360)
        verdict, message = verdict_for(c["growth"])
        fig.update_layout(width=560, title=dict(text=f"{c['case']}<br><sup>{message[:110]}...</sup>", font_size=13),
                          margin=dict(l=10, r=10, t=70, b=10))
        html.append(f"<div style='display:inline-block;vertical-align:top'>"
                    f"{fig.to_html(full_html=False, include_plotlyjs='inline' if i == 0 else False)}</div>")
    page = Path(args.png).with_suffix(".html")
    page.write_text("<html><body style='margin:0;width:1700px'>" + "".join(html) + "</body></html>")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox"])
        tab = browser.new_page(viewport={"width": 1700, "height": 480})
        tab.goto(page.resolve().as_uri())
        tab.wait_for_timeout(2000)
        tab.screenshot(path=args.png, full_page=True)
        browser.close()
    page.unlink()
    print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
