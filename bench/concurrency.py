"""Concurrent commands on one run: every pair of CLI commands, started at the same instant, R times.

    PYTHONPATH=. .venv/bin/python bench/concurrency.py [--reps 20] [--commands train,estimate,...] [--json FILE]

The run: dcgan (width 4, float32) on a folder of 120 generated 32x32 RGB images, autoencoder features (trained for 40
steps instead of 800, so a fresh feature net costs a second). The commands (`COMMANDS`), each on that run (the
sweep's seeds 0 and 1 include it):

    train     gan-influence train (the run's config)
    estimate  estimate --metric fid --metric dloss
    cleanse   cleanse --top-harmful 5 --by fid (estimates FID first)
    iforest   cleanse --top-harmful 5 --by iforest (ranks by the feature net's features)
    validate  validate --metric fid --n 6 (leave-one-out replays)
    groups    validate --metric fid --groups 5 --fraction 0.05 --curve 0.05 (group validation: lane replays)
    check     estimate --metric fid --check quick (the spot check's lane replays)
    sweep     sweep --seeds 0 1 --methods fid random --counts 5
    export    export --removal <3 ids> --to <a folder of its own>

Each pair starts from a fresh copy of a store: pairs of `train` and `sweep` (which train) from an empty store
with an empty feature-net cache, so both processes want to train the run and the feature net; every other pair
from the trained run without any result (influence, cleanses, replays, report), with the feature net cached.
Two processes are forked from one that imported the engine once and released together. Every computation
of an artefact is logged (a training epoch of a run, an influence pass per metric and options, a counterfactual per
removal set, a leave-one-out replay per id, training a feature net, the metric report, an export); a pair
passes when both commands exit 0 and no artefact was computed twice. `tests/test_jobs.py` runs every pair
once (`run_pairs(reps=1)`).
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

# Before torch loads OpenMP: spinning waits starve everything else on the cores (docs/architecture.md, jobs).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np

REPO = Path(__file__).resolve().parents[1]
N_IMAGES = 120
SETS = ["data.source=folder", "data.n_train=none", "data.image_size=32", "data.color=rgb", "data.labels=none", "model.arch=dcgan",
        "model.width=4", "model.z_dim=8", "train.epochs=2", "train.batch_size=24", "train.lr_d=0.001",
        "train.lr_g=0.001", "train.dtype=float32", "eval.n_valid_z=50", "eval.n_test_z=50",
        "eval.n_grid=16", "eval.feature=autoencoder"]
TRAINING = ("train", "sweep")  # commands that can start from an empty store


def command(name: str, images: Path, run_id: str, scratch: Path, me: int) -> list[str]:
    sets = [a for s in SETS + [f"data.root={images}"] for a in ("--set", s)]
    return {
        "train": ["train", "--preset", "tiny", *sets, "--json"],
        "estimate": ["estimate", "--run", run_id, "--metric", "fid", "--metric", "dloss", "--json"],
        "cleanse": ["cleanse", "--run", run_id, "--top-harmful", "5", "--by", "fid", "--json"],
        "iforest": ["cleanse", "--run", run_id, "--top-harmful", "5", "--by", "iforest", "--json"],
        "validate": ["validate", "--run", run_id, "--metric", "fid", "--n", "6", "--json"],
        "groups": ["validate", "--run", run_id, "--metric", "fid", "--groups", "5", "--fraction", "0.05",
                   "--curve", "0.05", "--json"],
        "check": ["estimate", "--run", run_id, "--metric", "fid", "--check", "quick", "--json"],
        "sweep": ["sweep", "--preset", "tiny", *sets, "--seeds", "0", "1", "--methods", "fid", "random",
                  "--counts", "5", "--json"],
        "export": ["export", "--run", run_id, "--removal", str(scratch / "removal.csv"),
                   "--to", str(scratch / f"export-{me}"), "--json"],
    }[name]


COMMANDS = ("train", "estimate", "cleanse", "iforest", "validate", "groups", "check", "sweep", "export")

# The forking server: imports the engine once, logs every computation of an artefact to $GAN_INFLUENCE_COUNT,
# then per request forks two CLI processes and releases them together.
SERVER = r'''
import json, os, sys
from influence import baselines, classifier, cleanse, cli, context, datamap, export, honesty, specs, train
from influence.estimator import runner
from influence.validation import replays, sweeps
import torchvision.utils, tqdm  # noqa: F401  (imported lazily by the engine: once here, not in every child)

classifier.AE_STEPS = 40

def log(*what):
    with open(os.environ["GAN_INFLUENCE_COUNT"], "a") as f:
        f.write(" ".join(str(w) for w in what) + "\n")

def counted(module, name, describe):
    real = getattr(module, name)
    def wrapper(*a, **k):
        for line in describe(*a, **k):
            log(line)
        return real(*a, **k)
    setattr(module, name, wrapper)

counted(train, "run_epoch", lambda ctx, epoch, *a, **k: [f"train {ctx.cfg.run_id} epoch {epoch}"])
counted(runner, "stored_pass", lambda ctx, run, trace, objectives, options, *a, **k:
        [f"influence {run.run_id} {o.name} {options.key('', trace.final.shape[0])}" for o in objectives])
counted(cleanse, "_timed_counterfactuals", lambda ctx, trace, sets, mode, *a, **k:
        [f"cleanse {ctx.cfg.run_id} {cleanse.removal_key(ids, mode)}" for ids in sets])
counted(replays, "measure_lanes", lambda ctx, trace, lanes, splits, plan, start=0, *a, **k:
        [f"replay {ctx.cfg.run_id} {lane.removed.tolist()} {splits} from {start}" for lane in lanes])
counted(classifier, "train_autoencoder", lambda *a, **k: ["feature-net autoencoder"])
counted(classifier, "train_classifier", lambda *a, **k: ["feature-net classifier"])
counted(honesty, "compute_report", lambda ctx: [f"metric-report {ctx.cfg.run_id}"])
counted(export, "export_cleaned", lambda run, ids, target, *a, **k: [f"export {target}"])

for line in sys.stdin:
    req = json.loads(line)
    go_r, go_w = os.pipe()
    pids = []
    for i, argv in enumerate(req["argvs"]):
        pid = os.fork()
        if pid == 0:
            os.close(go_w)
            os.environ.update(req["env"])
            for fd, name in ((1, "out"), (2, "err")):
                f = os.open(os.path.join(req["dir"], f"{i}.{name}"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(f, fd)
            os.read(go_r, 1)  # released together
            try:
                code = cli.main(argv)
            except BaseException:
                import traceback
                traceback.print_exc()
                code = 3
            sys.stdout.flush(); sys.stderr.flush()
            os._exit(code)
        pids.append(pid)
    os.close(go_r)
    os.write(go_w, b"x" * len(pids))
    os.close(go_w)
    codes = []
    for pid in pids:
        status = os.waitpid(pid, 0)[1]
        codes.append(-os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))
    print(json.dumps(codes), flush=True)
'''


class Server:
    def __init__(self):
        import subprocess

        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO}:{os.environ.get('PYTHONPATH', '')}"}
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER], env=env, cwd=REPO, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def run(self, argvs: list[list[str]], env: dict, out: Path) -> list[int]:
        self.proc.stdin.write(json.dumps({"argvs": argvs, "env": env, "dir": str(out)}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the bench server died (exit {self.proc.wait()})")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@dataclass
class Setup:
    scratch: Path
    images: Path
    run_id: str
    trained: Path  # a store with the run trained, no results
    cache: Path  # a feature-net cache holding the run's autoencoder


def make_images(folder: Path) -> Path:
    """N_IMAGES 32x32 RGB PNGs (a coloured square on a coloured ground) in three sub-folders."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(N_IMAGES):
        rel = Path(f"a{i % 3}") / f"img_{i:04d}.png"
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        img = np.full((32, 32, 3), rng.integers(0, 256, 3), dtype=np.uint8)
        img[8:24, 8:24] = rng.integers(0, 256, 3)
        Image.fromarray(img).save(folder / rel)
    return folder


def prepare(server: Server, scratch: Path) -> Setup:
    """The images, the run trained once (its store and feature-net cache are the starting point of most pairs)."""
    images = make_images(scratch / "images")
    (scratch / "removal.csv").write_text("id\n3\n5\n7\n")
    trained, cache = scratch / "trained", scratch / "cache"
    out = scratch / "prepare"
    out.mkdir()
    env = {"GAN_INFLUENCE_CACHE": str(cache), "GAN_INFLUENCE_COUNT": str(out / "count")}
    # the run (seed 0) and the sweep's other seed, so that a sweep next to another command does not train
    train = command("train", images, "", scratch, 0)
    codes = server.run([["--store", str(trained)] + train, ["--store", str(trained)] + train + ["--seed", "1"]],
                       env, out)
    if codes != [0, 0]:
        raise RuntimeError(f"training the bench's runs failed: {(out / '0.err').read_text()[-2000:]}")
    from influence import store

    run_ids = [json.loads((out / f"{i}.out").read_text().strip().splitlines()[-1])["run_id"] for i in (0, 1)]
    for run_id in run_ids:  # the train job's report: computed again by each pair
        store.Run(trained, run_id).forget("metric_report.json")
        (trained / run_id / "metric_report.json").unlink(missing_ok=True)
    shutil.rmtree(trained / "_jobs", ignore_errors=True)
    return Setup(scratch, images, run_ids[0], trained, cache)


@dataclass
class PairResult:
    pair: tuple[str, str]
    codes: list[int]
    computations: collections.Counter = field(default_factory=collections.Counter)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def twice(self) -> list[str]:
        return [k for k, n in self.computations.items() if n > 1]

    @property
    def ok(self) -> bool:
        return self.codes == [0, 0] and not self.twice


def run_pair(server: Server, setup: Setup, a: str, b: str, index: int) -> PairResult:
    work = setup.scratch / f"pair-{index}"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    root, cache = work / "store", work / "cache"
    if a in TRAINING and b in TRAINING:
        cache.mkdir()
    else:
        shutil.copytree(setup.trained, root)
        shutil.copytree(setup.cache, cache)
    (work / "removal.csv").write_text((setup.scratch / "removal.csv").read_text())
    argvs = [["--store", str(root)] + command(c, setup.images, setup.run_id, work, i) for i, c in enumerate((a, b))]
    env = {"GAN_INFLUENCE_CACHE": str(cache), "GAN_INFLUENCE_COUNT": str(work / "count")}
    started = time.perf_counter()
    codes = server.run(argvs, env, work)
    result = PairResult((a, b), codes, seconds=time.perf_counter() - started)
    count = work / "count"
    result.computations.update(count.read_text().splitlines() if count.exists() else [])
    for i, code in enumerate(codes):
        if code != 0:
            result.errors.append(f"{(a, b)[i]} exit {code}: {(work / f'{i}.err').read_text()[-1500:]}")
    if result.ok:
        shutil.rmtree(work)
    return result


def run_pairs(scratch: Path, reps: int = 1, commands: tuple[str, ...] = COMMANDS, progress=print,
              verbose: bool = False) -> list[PairResult]:
    """Every unordered pair of `commands` (each with itself too), `reps` times."""
    server = Server()
    try:
        setup = prepare(server, scratch)
        pairs = list(itertools.combinations_with_replacement(commands, 2))
        results = []
        for rep in range(reps):
            for a, b in pairs:
                results.append(run_pair(server, setup, a, b, len(results)))
                r = results[-1]
                progress(f"rep {rep + 1} {a:>8} + {b:<8} {'ok' if r.ok else 'FAILED'} {r.seconds:5.1f} s "
                         f"{sum(r.computations.values())} computations" + (f" twice: {r.twice}" if r.twice else "")
                         + ("".join(f"\n    {e}" for e in r.errors))
                         + ("".join(f"\n    {n} x {k}" for k, n in sorted(r.computations.items())) if verbose else ""))
        return results
    finally:
        server.close()


def summary(results: list[PairResult]) -> dict:
    by_pair: dict = {}
    for r in results:
        s = by_pair.setdefault(" + ".join(r.pair), {"runs": 0, "failed": 0, "computed_twice": 0, "computations": 0})
        s["runs"] += 1
        s["failed"] += any(c != 0 for c in r.codes)
        s["computed_twice"] += bool(r.twice)
        s["computations"] += sum(r.computations.values())
    return {"pairs": len(by_pair), "runs": len(results), "failed": sum(s["failed"] for s in by_pair.values()),
            "computed_twice": sum(s["computed_twice"] for s in by_pair.values()),
            "computations": sum(s["computations"] for s in by_pair.values()),
            "seconds": round(sum(r.seconds for r in results), 1), "by_pair": by_pair}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--commands", default=",".join(COMMANDS))
    p.add_argument("--json", help="write the summary here")
    p.add_argument("--verbose", action="store_true", help="list each pair's computations")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="gan-influence-concurrency-") as scratch:
        results = run_pairs(Path(scratch), args.reps, tuple(args.commands.split(",")), lambda s: print(s, flush=True),
                            args.verbose)
    out = summary(results)
    print(json.dumps({k: v for k, v in out.items() if k != "by_pair"}))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0 if out["failed"] == 0 and out["computed_twice"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
