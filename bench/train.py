"""Seconds per training step for each preset, and the quick preset end to end.

    .venv/bin/python bench/train.py [--steps 20] [--skip-quick] [--store DIR]

Per-step times come from timing `stepmap.step` on each preset's model, optimizer, batch and dtype
(after warm-up). The end-to-end figure trains the quick preset from scratch in a
fresh store (the feature classifier is built beforehand and not counted), then
reports its test IS/FID, the classifier's test accuracy, and IS/FID of real test
images for scale.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

# Before torch loads OpenMP: spinning waits starve everything else on the cores (docs/architecture.md, jobs).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

from influence import store
from influence.classifier import classifier_accuracy
from influence.config import PRESETS, preset
from influence.context import RunContext
from influence.metrics import real_reference
from influence.stepmap import KIND_BOTH, KIND_D, KIND_G, StepInputs, step
from influence.train import initial_train_state, train


def seconds_per_step(name: str, root: Path, steps: int) -> float:
    """Seconds per minibatch: one simultaneous step, or a D and a G half-step (alternating)."""
    ctx = RunContext.create(preset(name), root)
    state = initial_train_state(ctx)
    b = ctx.cfg.train.batch_size
    x = ctx.train_x[:b]
    z = torch.randn(b, ctx.cfg.model.z_dim, dtype=ctx.dtype)
    w = torch.ones(b, dtype=ctx.dtype)
    kinds = [KIND_BOTH] if ctx.cfg.train.scheme == "simultaneous" else [KIND_D, KIND_G]

    def one(state):
        for kind in kinds:
            state = step(ctx.gan, ctx.rule, state, StepInputs(kind, x, z, w, 1e-4, 1e-4, 5, 5))[0]
        return state

    for _ in range(3):
        one(state)
    start = time.perf_counter()
    for _ in range(steps):
        one(state)
    return (time.perf_counter() - start) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--skip-quick", action="store_true")
    ap.add_argument("--store", default=None, help="store for the quick run (default: a fresh temp folder)")
    args = ap.parse_args()
    out: dict = {"threads": torch.get_num_threads(), "seconds_per_step": {}}
    with tempfile.TemporaryDirectory() as tmp:
        root = store.store_root(args.store or tmp)
        for name in PRESETS:
            if preset(name).data.source == "folder":  # no images of its own: bench/folder32.py times it
                print(f"{name:<16} skipped (a folder preset: needs data.root)", flush=True)
                continue
            out["seconds_per_step"][name] = seconds_per_step(name, root, args.steps)
            print(f"{name:<16} {out['seconds_per_step'][name]:.4f} s/step", flush=True)
        if not args.skip_quick:
            cfg = preset("quick")
            ctx = RunContext.create(cfg, root)
            ctx.evaluator("test")  # classifier trained/cached outside the timing
            start = time.perf_counter()
            run = train(cfg, root)
            summary = run.read_json("summary.json")
            out["quick"] = {"wall_seconds": time.perf_counter() - start, "test": summary["test"],
                            "steps": summary["steps"], "run_id": run.run_id}
            out["classifier_test_accuracy"] = classifier_accuracy(ctx.dataset, cfg.data.__dict__, store.cache_dir(root))
            out["real_test_reference"] = real_reference(ctx.features, ctx.dataset.test.x.to(torch.float64))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
