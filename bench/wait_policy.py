"""Seconds per training step and per backward step under OpenMP wait settings, idle and beside a busy core.

    .venv/bin/python bench/wait_policy.py [--presets quick mnist-adam toy2d] [--steps 20] [--rounds 2] [--json FILE]

The CLI, the app's job workers, the tests and the benches start torch with `OMP_WAIT_POLICY=PASSIVE` unless it is
set (docs/architecture.md, jobs). Spinning threads starve everything else on the cores; sleeping ones pay a wake-up at
every parallel region, which small nets' many small kernels feel. The setting changes no bits, only the time. Each setting runs in a fresh process (libgomp reads its
environment when torch loads it), idle and beside one core kept busy by a spinning process (the app's server and
browser, another job), in rounds that alternate the settings. Per preset: a training step as `bench/train.py` times
it, and one backward step of the influence pass (`stepmap.state_vjp`, one adjoint row) at the preset's dtype.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# name -> environment (the settings' variables removed first, so each runs exactly as named)
SETTINGS = {
    "PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "ACTIVE": {"OMP_WAIT_POLICY": "ACTIVE"},
    "libgomp default": {},
    "GOMP_SPINCOUNT=1000": {"GOMP_SPINCOUNT": "1000"},
    "GOMP_SPINCOUNT=10000": {"GOMP_SPINCOUNT": "10000"},
    "GOMP_SPINCOUNT=100000": {"GOMP_SPINCOUNT": "100000"},
}
VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def worker(presets: list[str], steps: int) -> dict:
    """In this process (its wait setting already in the environment): seconds per step of each preset."""
    import torch

    from influence import store
    from influence.config import preset
    from influence.context import RunContext
    from influence.stepmap import KIND_BOTH, KIND_D, KIND_G, StepInputs, state_vjp, step
    from influence.train import initial_train_state

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = store.store_root(tmp)
        for name in presets:
            ctx = RunContext.create(preset(name), root)
            state = initial_train_state(ctx)
            b = ctx.cfg.train.batch_size
            gen = torch.Generator().manual_seed(0)
            inputs = [StepInputs(kind, ctx.train_x[:b], torch.randn(b, ctx.cfg.model.z_dim, generator=gen).to(ctx.dtype),
                                 torch.ones(b, dtype=ctx.dtype), 1e-4, 1e-4, 5, 5)
                      for kind in ([KIND_BOTH] if ctx.cfg.train.scheme == "simultaneous" else [KIND_D, KIND_G])]
            adjoint = [torch.randn(1, t.numel(), generator=gen).to(ctx.dtype) for t in state.tensors()]

            def train_step():
                for inp in inputs:
                    step(ctx.gan, ctx.rule, state, inp)

            def backward_step():
                for inp in inputs:
                    state_vjp(ctx.gan, ctx.rule, state, inp, adjoint)

            out[name] = {}
            for what, fn in (("train", train_step), ("backward", backward_step)):
                for _ in range(3):
                    fn()
                start = time.perf_counter()
                for _ in range(steps):
                    fn()
                out[name][what] = (time.perf_counter() - start) / steps
    return out


def _measure(setting: str, presets: list[str], steps: int, busy: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES} | SETTINGS[setting]
    env["PYTHONPATH"] = f"{REPO}:{env.get('PYTHONPATH', '')}"
    load = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        done = subprocess.run([sys.executable, __file__, "--worker", "--steps", str(steps), "--presets", *presets],
                              env=env, capture_output=True, text=True, check=True)
    finally:
        if load is not None:
            load.kill()
            load.wait()
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["quick", "mnist-adam", "toy2d"])
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2, help="each setting this many times, the settings alternating")
    ap.add_argument("--json", default=None, help="write every measurement here")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.presets, args.steps)))
        return
    rows = []
    for busy in (False, True):
        for r in range(args.rounds):
            for setting in args.settings:
                got = _measure(setting, args.presets, args.steps, busy)
                rows.append({"setting": setting, "busy_core": busy, "round": r, "seconds": got})
                print(json.dumps(rows[-1]), flush=True)
    print(f"\nmedian seconds per step over {args.rounds} rounds (train / backward), {os.cpu_count()} cores")
    import statistics
    for busy in (False, True):
        print("beside a busy core" if busy else "idle")
        for setting in args.settings:
            mine = [row["seconds"] for row in rows if row["setting"] == setting and row["busy_core"] == busy]
            cells = [f"{p} {statistics.median(m[p]['train'] for m in mine):.4f} / "
                     f"{statistics.median(m[p]['backward'] for m in mine):.4f}" for p in args.presets]
            print(f"  {setting:24s} " + "   ".join(cells))
    if args.json:
        Path(args.json).write_text(json.dumps({"cores": os.cpu_count(), "steps": args.steps, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
