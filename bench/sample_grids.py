"""Side-by-side sample grids of finished runs, captioned with their preset and test metrics (issue 10's
sample-quality figure).

    .venv/bin/python bench/sample_grids.py --store DIR --run RUN_ID --run RUN_ID --out assets/x.png

Each panel is the run's last-epoch grid (`grids/epoch_NNN.png`, the fixed z the run shows every
epoch), scaled up without smoothing; the caption gives the preset, model, optimizer and test FID / IS
from the run's own summary.
"""

from __future__ import annotations

import argparse
import io
import os
from pathlib import Path

# Before torch loads OpenMP: spinning waits starve everything else on the cores (docs/architecture.md, jobs).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from PIL import Image, ImageDraw

from influence import store
from influence.context import load_run_config

SCALE, CAPTION, GAP = 2, 24, 20


def panel(run: store.Run) -> tuple[Image.Image, str]:
    cfg = load_run_config(run)
    grid = Image.open(io.BytesIO(run.read_bytes(f"grids/epoch_{cfg.train.epochs:03d}.png"))).convert("RGB")
    grid = grid.resize((grid.width * SCALE, grid.height * SCALE), Image.NEAREST)
    test = run.read_json("summary.json")["test"]
    units = "" if cfg.model.activation == "default" else f"{cfg.model.activation}, "  # default: the arch's own
    text = (f"{cfg.preset} seed {cfg.seed} ({cfg.model.arch} w{cfg.model.width}, {units}{cfg.train.optimizer}, "
            f"{cfg.train.epochs} epochs): test FID {test['fid']:.2f}, IS {test['is']:.2f}")
    return grid, text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True)
    ap.add_argument("--run", action="append", required=True, help="a finished run (repeat for more panels)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    root = store.store_root(args.store)
    panels = [panel(store.open_run(root, r)) for r in args.run]
    width = max(max(g.width, 7 * len(t)) for g, t in panels)  # the default bitmap font is about 6 px a character
    height = max(g.height for g, _ in panels) + CAPTION
    sheet = Image.new("RGB", (len(panels) * width + (len(panels) - 1) * GAP, height), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (grid, text) in enumerate(panels):
        x = k * (width + GAP)
        draw.text((x, 6), text, fill="black")
        sheet.paste(grid, (x, CAPTION))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    store.write_bytes(Path(args.out), buf.getvalue())
    print(args.out)


if __name__ == "__main__":
    main()
