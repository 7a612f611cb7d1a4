"""What train.trace_mode=auto chooses for each preset, and the disk its trace takes (nothing is trained).

    .venv/bin/python bench/trace_mode.py [--presets tiny quick mnist-adam ...] [--budget-mb 1024]

For each preset (built-in data only: the folder presets need a folder of images) the engine's own decision,
`stepmap.trace_storage`, from the preset's traced steps, its state's size (parameters and optimizer buffers in
the training dtype) and the steps' inputs: the mode, the spacing of stored states, the snapshots' size and the
stored size. One JSON line per preset.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

# Before torch loads OpenMP: spinning waits starve everything else on the cores (docs/architecture.md, jobs).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from influence.config import PRESETS, apply_overrides, preset  # noqa: E402
from influence.context import RunContext  # noqa: E402
from influence.stepmap import StateLayout  # noqa: E402
from influence.train import initial_train_state, step_input_bytes, storage_for, traced_step_range  # noqa: E402

BUILT_IN = [name for name, cfg in PRESETS.items() if cfg.data.source != "folder"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=BUILT_IN, choices=BUILT_IN)
    ap.add_argument("--budget-mb", type=int, default=None, help="train.trace_budget_mb (default: the config's)")
    ap.add_argument("--store", default="runs")
    args = ap.parse_args()
    for name in args.presets:
        cfg = preset(name, 0)
        if args.budget_mb is not None:
            cfg = apply_overrides(cfg, [f"train.trace_budget_mb={args.budget_mb}"])
        ctx = RunContext.create(cfg, Path(args.store))
        state = initial_train_state(ctx)
        layout = StateLayout.of(state.theta_d.numel(), state.theta_g.numel(), ctx.rule)
        first, total = traced_step_range(cfg, ctx.dataset.n_train)
        state_bytes = layout.numel * state.theta_d.element_size()
        steps = total - first
        storage = storage_for(ctx, state, steps)
        stored = steps + 1 if storage.mode == "snapshots" else math.ceil(steps / storage.every) + 1
        print(json.dumps({"preset": name, "parameters": state.theta_d.numel() + state.theta_g.numel(),
                          "state_mb": round(state_bytes / 2**20, 2), "traced_steps": steps, **storage.as_dict(),
                          "stored_states": stored,
                          "trace_mb": round((stored * state_bytes + steps * step_input_bytes(cfg)) / 2**20, 1)}),
              flush=True)


if __name__ == "__main__":
    main()
