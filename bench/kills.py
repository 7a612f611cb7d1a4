"""kill -9 at every write: training, the influence pass, a sweep and an export each resume (or restart) to a
byte-identical result.

    PYTHONPATH=.:tests .venv/bin/python bench/kills.py [--scenarios training,influence,sweep,export] [--json FILE]

Each scenario first runs uninterrupted with every file it writes through `store` logged, in order (the
reference). Then, for every one of those writes and each kill point of `POINTS`, a fresh copy of the starting
state gets a process that SIGKILLs itself at that point of that write (tests/_faults.py: the N-th write of a
file of that name), and then the same work again, unharmed. The result must equal the reference: every file of
the runs' manifests byte for byte (JSON files without their timings), no temp file, no checkpoint or partial
left; float64 arrays that agree to rounding (ROUNDING) are counted apart ("to_rounding"): a sweep's cleanses
replay as lanes of one batched pass, and those a kill left undone replay without the others, which rounds
otherwise; an export's folder byte for byte (its manifest without "created"). Points: `POINTS` in every write of a
run file, `MANIFEST_POINTS` in every write of a manifest, `PLAIN_POINTS` in other files.

- training: the 2D toy (600 points, 3 epochs) with SGD, momentum and Adam + EMA, each with trace snapshots and
  with checkpoints (6 configs), as train jobs; every point for SGD with snapshots, the point between the
  manifest and the rename for the others (tests/test_reliability.py kills inside a checkpoint's commit at
  all 6 points for SGD and Adam + EMA in both modes);
- influence: an estimate job of `all` and `dloss` with a backward-pass checkpoint every 3 steps;
- sweep: a sweep job over seeds 0 and 1 (methods all, random; 50 removed), which trains, estimates, cleanses
  (one point a write: between the manifest and the rename for run files, a complete temp file for its tables);
- export: `gan-influence export` of the image-folder run of bench/concurrency.py (3 ids removed), killed right
  after its 1st, a middle and its last copied image, after removed.csv, after manifest.json and after the final
  rename (the export writes its folder itself, not through `store`);
- replays: on a run with influence on `all` and `dloss`, a group validation job (8 random groups of 5%, a
  cleansing curve at 5%) and an estimate job's full spot check: the jobs whose replays run as lanes
  (`counterfactual.replay_lanes`).

Workers are forked from one process that imported the engine once (tests/_faults.ForkServer).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

# Before torch loads OpenMP: spinning waits starve everything else on the cores (docs/architecture.md, jobs).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "bench")]

from _faults import ForkServer, small_config  # noqa: E402

from influence import store  # noqa: E402

# Before the manifest lists the new file (the old one must stay), between the manifest and the rename (the new
# one must be finished from its temp file). The manifest's own writes (one in each file's commit, and those
# that forget a checkpoint before its files go): right after it is in place.
POINTS = ("temp_synced", "manifest_renamed")
MANIFEST_POINTS = ("renamed",)
PLAIN_POINTS = ("temp_synced", "renamed")  # files outside a run (store.write_bytes: no manifest)
TRAINING_CONFIGS = {
    "sgd": {}, "momentum": {"optimizer": "momentum"},
    "adam-ema": {"optimizer": "adam", "betas": (0.5, 0.999), "ema_decay": 0.9},
}
TRACE_MODES = {"snapshots": {}, "checkpoints": {"trace_mode": "checkpoints", "checkpoint_every": 5}}
TIMINGS = ("seconds", "wall_seconds", "created", "replay_seconds")
# Float64 arrays that agree to this relative difference (of the largest entry) count as equal to rounding: a
# replay batched with other lanes rounds otherwise than the same replay alone (docs/benchmarks.md, lanes).
ROUNDING = 1e-13


@dataclasses.dataclass
class Point:
    scenario: str
    config: str
    write: str  # the file's path relative to the store, and which of its writes
    point: str
    ok: bool
    detail: str = ""


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def _same_file(a: Path, b: Path) -> bool:
    if a.suffix == ".json":
        try:
            return _without_timings(json.loads(a.read_text())) == _without_timings(json.loads(b.read_text()))
        except ValueError:
            return False
    return a.read_bytes() == b.read_bytes()


def _rounding(a: Path, b: Path) -> float | None:
    """The largest relative difference of two .npy arrays of one shape that agree to float64 rounding
    (ROUNDING), else None."""
    if a.suffix != ".npy":
        return None
    x, y = np.load(a), np.load(b)
    if x.shape != y.shape or x.dtype != y.dtype or x.dtype.kind != "f":
        return None
    scale = float(np.abs(y).max()) or 1.0
    diff = float(np.abs(x - y).max()) / scale
    return diff if diff <= ROUNDING else None


def compare_runs(root: Path, ref: Path, run_ids: list[str]) -> str:
    """'' if every run file (as its manifest lists them) equals the reference's; "rounding: ..." where some arrays
    agree only to float64 rounding (replays whose lanes were batched with other lanes: `cleanse.cleanse_runs`); else what
    differs."""
    rounded = []
    for run_id in run_ids:
        got, want = store.Run(root, run_id), store.Run(ref, run_id)
        a, b = set(got.manifest()), set(want.manifest())
        if a != b:
            return f"{run_id}: files differ: extra {sorted(a - b)[:3]}, missing {sorted(b - a)[:3]}"
        for rel in sorted(b):
            if not _same_file(got.verify(rel), want.verify(rel)):
                close = _rounding(got.verify(rel), want.verify(rel))
                if close is None:
                    return f"{run_id}: '{rel}' differs"
                rounded.append(f"{rel.rsplit('/', 1)[1]} {close:.0e}")
        left = [p.name for p in got.dir.rglob("*") if p.name.endswith(".tmp")
                or (p.is_file() and ("_partial" in p.parts or "checkpoint" in p.parts))]
        if left:
            return f"{run_id}: left behind: {left[:3]}"
    return f"rounding: {', '.join(rounded)}" if rounded else ""


def compare_folders(got: Path, want: Path) -> str:
    a = sorted(p.relative_to(got).as_posix() for p in got.rglob("*") if p.is_file())
    b = sorted(p.relative_to(want).as_posix() for p in want.rglob("*") if p.is_file())
    if a != b:
        return f"files differ: {sorted(set(a) ^ set(b))[:3]}"
    bad = [rel for rel in b if not _same_file(got / rel, want / rel)]
    return f"'{bad[0]}' differs" if bad else ""


def run_writes(log: Path, inside: Path) -> list[tuple[str, str, int]]:
    """(path relative to `inside`, file name, its occurrence among the process's writes of that name) of the
    logged writes under `inside`, in order; the job's own files (_jobs/: status, spec) aside."""
    seen: collections.Counter = collections.Counter()
    out = []
    for line in log.read_text().splitlines():
        path = Path(line)
        seen[path.name] += 1
        if inside in path.parents and path.relative_to(inside).parts[0] != "_jobs":
            out.append((path.relative_to(inside).as_posix(), path.name, seen[path.name]))
    return out


def kill_matrix(server: ForkServer, scenario: str, config: str, scratch: Path, spec: dict, start: Path | None,
                run_ids: list[str], extra_compare=None, progress=print, points_run=POINTS,
                points_plain=PLAIN_POINTS, points_manifest=MANIFEST_POINTS) -> list[Point]:
    """The job `spec` from the state in `start` (None: an empty store), killed at every write and point."""
    ref, log = scratch / f"{config}-ref", scratch / f"{config}-writes.log"
    _copy_store(start, ref)
    done = server.run(ref, spec, {"writes": str(log)})
    if done.returncode != 0:
        raise RuntimeError(f"{scenario}/{config}: the reference failed: {done.stderr[-2000:]}")
    points = []
    for rel, name, n in run_writes(log, ref):
        plain = rel.split("/", 1)[0] not in run_ids
        for point in points_plain if plain else points_manifest if name == "manifest.json" else points_run:
            root = scratch / f"{config}-kill"
            _copy_store(start, root)
            killed = server.run(root, spec, {"kill": "commit", "name": name, "n": n, "point": point})
            again = server.run(root, spec)
            if killed.returncode != -signal.SIGKILL:
                detail = f"not killed (exit {killed.returncode}) {killed.stderr[-300:]}"
            elif again.returncode != 0:
                detail = f"the rerun failed: {again.stderr[-500:]}"
            else:
                detail = compare_runs(root, ref, run_ids) or (extra_compare(root, ref) if extra_compare else "")
            points.append(Point(scenario, config, f"{rel} #{n}", point, not detail or detail.startswith("rounding"),
                                detail))
            progress(f"{scenario:9} {config:22} {rel + ' #' + str(n):44} {point:16} {'ok' if not detail else detail}")
    return points


def _copy_store(start: Path | None, root: Path) -> None:
    if root.exists():
        shutil.rmtree(root)
    if start is None:
        root.mkdir(parents=True)
    else:
        shutil.copytree(start, root, ignore=shutil.ignore_patterns("_jobs"))


def training(server: ForkServer, scratch: Path, progress=print) -> list[Point]:
    """Every point of every write for the first config; for the others the point between the manifest and the
    rename of every run file (a 2-core machine: about 25 s a point under load)."""
    points = []
    for i, (opt, fields) in enumerate(TRAINING_CONFIGS.items()):
        for j, (mode, more) in enumerate(TRACE_MODES.items()):
            cfg = small_config(**fields, **more)
            spec = {"kind": "train", "params": {"config": cfg.to_dict()}}
            full = i == j == 0
            points += kill_matrix(server, "training", f"{opt}-{mode}", scratch, spec, None, [cfg.run_id],
                                  progress=progress, points_run=POINTS if full else ("manifest_renamed",),
                                  points_manifest=MANIFEST_POINTS if full else ())
    return points


def _trained(server: ForkServer, scratch: Path, configs) -> Path:
    base = scratch / "trained"
    for cfg in configs:
        if server.run(base, {"kind": "train", "params": {"config": cfg.to_dict()}}).returncode != 0:
            raise RuntimeError("training the starting run failed")
    shutil.rmtree(base / "_jobs", ignore_errors=True)
    return base


def influence(server: ForkServer, scratch: Path, progress=print) -> list[Point]:
    cfg = small_config()
    base = _trained(server, scratch, [cfg])
    spec = {"kind": "estimate", "params": {"run_id": cfg.run_id, "metrics": ["all", "dloss"],
                                           "options": {"checkpoint_every": 3}}}
    return kill_matrix(server, "influence", "all+dloss", scratch, spec, base, [cfg.run_id], progress=progress)


def sweep(server: ForkServer, scratch: Path, progress=print) -> list[Point]:
    configs = [small_config(), dataclasses.replace(small_config(), seed=1)]
    spec = {"kind": "sweep", "params": {"configs": [c.to_dict() for c in configs], "methods": ["all", "random"],
                                        "counts": [50], "metric": "all"}}

    def tables(root: Path, ref: Path) -> str:
        return compare_folders(root / "_sweeps", ref / "_sweeps")

    # one point a write (the sweep reruns whole: minutes otherwise): the subtle one for run files
    return kill_matrix(server, "sweep", "seeds-0-1", scratch, spec, None, [c.run_id for c in configs], tables,
                       progress=progress, points_run=("manifest_renamed",), points_plain=("temp_synced",),
                       points_manifest=())


def replays(server: ForkServer, scratch: Path, progress=print) -> list[Point]:
    """The lane replays' results: a group validation and a spot check, each from a run with its estimates."""
    cfg = small_config()
    base = _trained(server, scratch, [cfg])
    metrics = ["all", "dloss"]
    if server.run(base, {"kind": "estimate", "params": {"run_id": cfg.run_id, "metrics": metrics}}).returncode:
        raise RuntimeError("the starting estimate failed")
    shutil.rmtree(base / "_jobs", ignore_errors=True)
    groups = {"kind": "validate", "params": {"run_id": cfg.run_id, "metrics": metrics, "groups": {
        "groups": 8, "fractions": [0.05], "seed": 0, "curve": [0.05]}}}
    check = {"kind": "estimate", "params": {"run_id": cfg.run_id, "metrics": metrics, "check": "full"}}
    return (kill_matrix(server, "replays", "group-validation", scratch, groups, base, [cfg.run_id], progress=progress)
            + kill_matrix(server, "replays", "spot-check", scratch, check, base, [cfg.run_id], progress=progress))


def export(server: ForkServer, scratch: Path, progress=print) -> list[Point]:
    """The CLI's export, killed after its 1st, a middle and its last copied image, after removed.csv, after
    manifest.json and after its final rename; then run again (a kill after the rename leaves the finished folder:
    the rerun says it exists)."""
    from concurrency import SETS, make_images

    images = make_images(scratch / "images")
    base = scratch / "trained"
    sets = [a for s in SETS + [f"data.root={images}"] for a in ("--set", s)]
    if server.cli(["--store", str(base), "train", "--preset", "tiny", *sets]).returncode != 0:
        raise RuntimeError("training the image run failed")
    run_id = store.list_runs(base)[0]["run_id"]
    removal = scratch / "removal.csv"
    removal.write_text("id\n3\n5\n7\n")

    def argv(root: Path, to: Path) -> list[str]:
        return ["--store", str(root), "export", "--run", run_id, "--removal", str(removal), "--to", str(to)]

    ref = scratch / "export-ref"
    if server.cli(argv(base, ref)).returncode != 0:
        raise RuntimeError("the reference export failed")
    # every file goes through export._write_file into the partial folder: the images, then removed.csv, then
    # manifest.json; a kill right after a write leaves that file complete and the next one not begun
    n_files = sum(1 for p in ref.rglob("*") if p.is_file()) - 2
    write = "influence.export._write_file"
    plans = [(f"copy #{k}", {"kill": "call", "target": write, "n": k}) for k in (1, n_files // 2, n_files)]
    plans += [(f"{name} written", {"kill": "call", "target": write, "n": n_files + i})
              for i, name in enumerate(("removed.csv", "manifest.json"), 1)]
    plans.append(("final rename", {"kill": "call", "target": "os.rename", "n": 1}))
    points = []
    for what, plan in plans:
        target = scratch / "export-kill"
        shutil.rmtree(target, ignore_errors=True)
        for p in scratch.glob(".export-kill.partial-*"):
            shutil.rmtree(p)
        killed = server.cli(argv(base, target), plan)
        again = server.cli(argv(base, target))
        exists = "already exists" in again.stderr
        if killed.returncode != -signal.SIGKILL:
            detail = f"not killed (exit {killed.returncode})"
        elif again.returncode != 0 and not exists:
            detail = f"the rerun failed: {again.stderr[-300:]}"
        else:
            detail = compare_folders(target, ref)
        partial = len(list(scratch.glob(".export-kill.partial-*")))
        points.append(Point("export", "folder", what, plan["kill"], not detail,
                            detail or (f"{partial} partial folder(s) left" if partial else "")))
        progress(f"export    {what:44} {'ok' if not detail else detail}" + (f" ({partial} partial folder left)"
                                                                             if partial else ""))
    return points


SCENARIOS = {
    "training": training,
    "influence": influence,
    "sweep": sweep,
    "export": export,
    "replays": replays,
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--json", help="write every point's outcome here")
    args = p.parse_args()
    results: list[Point] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gan-influence-kills-") as scratch:
        with ForkServer(Path(scratch) / "server") as server:
            for name in args.scenarios.split(","):
                results += SCENARIOS[name](server, Path(scratch) / name, lambda s: print(s, flush=True))
    summary = {name: {"points": sum(r.scenario == name for r in results),
                      "ok": sum(r.scenario == name and r.ok for r in results),
                      "to_rounding": sum(r.scenario == name and r.detail.startswith("rounding") for r in results)}
               for name in args.scenarios.split(",")}
    summary["total"] = {"points": len(results), "ok": sum(r.ok for r in results),
                        "seconds": round(time.perf_counter() - started, 1)}
    print(json.dumps(summary))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "points": [dataclasses.asdict(r) for r in results]},
                                              indent=1))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
