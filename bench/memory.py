"""Peak memory (RSS) of training, the influence pass and one leave-one-out replay, per preset (issue 11).

    .venv/bin/python bench/memory.py --store DIR [--presets tiny quick ...] [--epochs 2] [--set KEY=VALUE ...]

Each phase runs in a fresh Python process (so one phase's peak does not hide in another's) and
reports its own ru_maxrss: `train` trains the preset (cut to --epochs: the last one traced, at the
preset's traced learning rate; the trace of one epoch, which the memory depends on, is the
preset's), `influence` runs the estimate of the preset's first metric, `loo` one leave-one-out
replay of the first traced instance. `import` is the floor: a process that imports torch and the
engine. Every phase has the engine's allocator settings, as the CLI (influence/allocator.py);
GAN_INFLUENCE_MALLOC=default measures with glibc's own. Prints one JSON line per preset and phase,
then a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

# Before torch loads OpenMP: spinning waits starve everything else on the cores (docs/architecture.md, jobs).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from influence.config import preset
from shorten import cut

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys
import numpy as np
import torch
from influence import allocator, store
allocator.tune_this_process()  # as the CLI (GAN_INFLUENCE_MALLOC=default: glibc's own settings)
from influence.config import apply_overrides, preset
from influence.estimator import EstimateOptions, estimate
from influence.train import Trace, train
from influence.validation import leave_one_out

phase, root, name, sets = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
torch.set_num_threads(int(sys.argv[5]))
cfg = apply_overrides(preset(name), sets)
metric = "all" if cfg.is_2d else "fid"
if phase == "train":
    train(cfg, root)
elif phase in ("influence", "loo"):
    run = store.open_run(root, cfg.run_id)
    if phase == "influence":
        estimate(run, [metric], EstimateOptions())
    else:
        first = int(Trace.load(run).batch(0)[0])
        leave_one_out(run, [metric], np.array([first]), workers=1)
print(json.dumps({"run_id": cfg.run_id, "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def phase(what: str, root: Path, name: str, sets: list[str], threads: int) -> dict:
    code = CHILD if what != "import" else ("import resource, torch, influence.train, influence.estimator; "
                                          "print('{\"maxrss_mb\": %f}' % (resource.getrusage(resource.RUSAGE_SELF)"
                                          ".ru_maxrss / 1024))")
    args = [what, str(root), name, json.dumps(sets), str(threads)] if what != "import" else []
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name} {what} failed: {proc.stderr.strip()[-1500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True)
    ap.add_argument("--presets", nargs="+", default=["tiny", "quick", "toy2d", "toy2d-smooth", "toy2d-adam",
                                                      "mnist-adam", "paper-valid", "paper-cleansing"])
    ap.add_argument("--epochs", type=int, default=2, help="cut every preset to this many epochs (the last traced)")
    ap.add_argument("--set", action="append", default=[], help="extra override for every preset")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    root = Path(args.store)
    floor = phase("import", root, "", [], args.threads)["maxrss_mb"]
    print(json.dumps({"phase": "import", "maxrss_mb": round(floor)}), flush=True)
    rows = []
    for name in args.presets:
        sets = cut(preset(name), args.epochs) + args.set
        row = {"preset": name, "sets": sets}
        for what in ("train", "influence", "loo"):
            out = phase(what, root, name, sets, args.threads)
            row["run_id"], row[what] = out["run_id"], round(out["maxrss_mb"])
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\npeak RSS in MB (a process importing torch and the engine: {floor:.0f} MB)")
    print("| preset | run | training | influence pass | one leave-one-out replay |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['preset']} | {r['run_id']} | {r['train']} | {r['influence']} | {r['loo']} |")


if __name__ == "__main__":
    main()
