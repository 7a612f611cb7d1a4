"""Trace size of one traced epoch, per-step snapshots against checkpoints (issue 11's target: at most 1/20).

    .venv/bin/python bench/trace_size.py [--images 5000 50000] [--widths 16 32 64] [--optimizer adam]

For DCGAN-32 (Radford layout, RGB) at each width: the training state's size (parameters,
the optimizer's buffers, float32), the traced steps of one epoch at batch 100, the stored
states of each trace mode (snapshots: one per step; checkpoints: the spacing rule of
`stepmap.checkpoint_spacing`), and the MB both take (the final state is stored in both).
The sizes follow from the model the engine builds and the rule it applies; the batch ids,
z and learning rates (a few MB) are the same in both modes and left out.
"""

from __future__ import annotations

import argparse
import json
import math
import os

# Before torch loads OpenMP: spinning waits starve everything else on the cores (docs/architecture.md, jobs).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

from influence.config import ModelConfig
from influence.models import build_gan
from influence.optim import OptimizerSpec
from influence.stepmap import StateLayout, TrainingRule, checkpoint_spacing


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, nargs="+", default=[5000, 50000])
    ap.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--optimizer", default="adam", choices=["sgd", "momentum", "adam"])
    ap.add_argument("--z-dim", type=int, default=100)
    args = ap.parse_args()
    rule = TrainingRule(OptimizerSpec(kind=args.optimizer))
    for width in args.widths:
        G, D = build_gan(ModelConfig(arch="dcgan-radford", width=width, z_dim=args.z_dim), channels=3, size=32)
        n_g, n_d = (sum(p.numel() for p in m.parameters()) for m in (G, D))
        layout = StateLayout.of(n_d, n_g, rule)
        state_bytes = layout.numel * torch.tensor([], dtype=torch.float32).element_size()
        for n in args.images:
            steps = math.ceil(n / 100)
            every = checkpoint_spacing(steps, "checkpoints", None, state_bytes)
            stored = {"snapshots": steps + 1, "checkpoints": math.ceil(steps / every) + 1}
            mb = {mode: count * state_bytes / 2**20 for mode, count in stored.items()}
            print(json.dumps({
                "model": f"dcgan-radford-32 w{width}", "optimizer": args.optimizer, "parameters": n_d + n_g,
                "state_mb": round(state_bytes / 2**20, 1), "images": n, "traced_steps": steps, "checkpoint_every": every,
                "stored_states": stored, "trace_mb": {k: round(v, 1) for k, v in mb.items()},
                "checkpoints_over_snapshots": round(mb["checkpoints"] / mb["snapshots"], 4),
            }), flush=True)


if __name__ == "__main__":
    main()
