"""Kill injection for the reliability tests and benches (tests/test_reliability.py, tests/test_jobs.py,
bench/kills.py, bench/concurrency.py).

A job worker (`influence.jobs._worker_main` after its spec is written the way `jobs.start_background`
writes it) runs with a *plan* that makes it SIGKILL itself at a chosen point:

- {"kill": "progress", "stage": S, "n": N}: at the first progress report of stage S with done >= N;
- {"kill": "commit", "name": F, "n": N, "point": P}: inside the N-th write of a file named F (through
  `store`), at point P of the commit (`COMMIT_POINTS`, in the order they happen);
- {"count": FILE}: appends its pid to FILE when it starts computing (one line per computation);
- {"kill": "call", "target": "module.function", "n": N}: right after the N-th call of that function returns
  (e.g. "shutil.copyfile": an export killed after N files);
- {"writes": FILE}: appends the path of every file it writes through `store` (one line each, in order);
- {"barrier": PATH}: waits for PATH to exist before it starts (two workers released together);
- {"log": FILE}: per stage, the first progress step it reports (a resumed job reports a later one).

`WORKER` is one worker's script for a fresh Python process; `ForkServer` forks workers from one process that
has imported the engine once (0.1 s a worker instead of 3 s of imports).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from influence import jobs, store
from influence.config import DataConfig, EvalConfig, ModelConfig, RunConfig, TrainConfig

REPO = Path(__file__).resolve().parents[1]

# Where a write through `store` can be cut, in order. A run file passes all of them; a plain
# `store.write_bytes` (job status, sweep tables) has no manifest points.
COMMIT_POINTS = (
    "partial",  # half the bytes in the temp file
    "temp_synced",  # the temp file complete and synced, the manifest not touched
    "manifest_synced",  # the manifest's own temp file complete, not renamed
    "manifest_renamed",  # the manifest lists the new file; its rename has not happened
    "renamed",  # the new file renamed into place; its folder not synced
    "dir_synced",  # the folder synced: the write is done
)
# What a kill at each point leaves: the old version of the file, or the new one.
COMMITTED_FROM = "manifest_renamed"

HOOKS = r'''
import json, os, signal, sys, time
from influence import jobs, progress, store

def install(plan):
    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    kill, first = plan.get("kill"), {}
    name, point = plan.get("name"), plan.get("point")
    st = {"count": 0, "armed": False, "renamed": None}
    log = plan.get("log")
    if log:
        with open(log, "a") as f:
            f.write(json.dumps({"pid": os.getpid(), "stage": "start", "first_done": None}) + "\n")

    _call = progress.Reporter.__call__
    def call(self, done, **info):
        if log and self.stage not in first:
            first[self.stage] = done
            with open(log, "a") as f:
                f.write(json.dumps({"pid": os.getpid(), "stage": self.stage, "first_done": done}) + "\n")
        if kill == "progress" and self.stage == plan["stage"] and done >= plan["n"]:
            die()
        return _call(self, done, **info)
    progress.Reporter.__call__ = call

    if kill == "commit":
        def is_temp_of_name(path):
            b = os.path.basename(path)
            return b.startswith("." + name + ".") and b.endswith(".tmp")

    if plan.get("writes"):
        _logged_write = store._write_file
        def logged_write(fd, data):
            tmp = os.readlink(f"/proc/self/fd/{fd}")
            with open(plan["writes"], "a") as f:
                f.write(os.path.join(os.path.dirname(tmp), os.path.basename(tmp)[1:-13]) + "\n")
            return _logged_write(fd, data)
        store._write_file = logged_write

    if kill == "call":
        import importlib
        module_name, attr = plan["target"].rsplit(".", 1)
        module = importlib.import_module(module_name)
        _real, calls = getattr(module, attr), [0]
        def counted(*a, **k):
            out = _real(*a, **k)
            calls[0] += 1
            if calls[0] == plan["n"]:
                die()
            return out
        setattr(module, attr, counted)

    if kill == "commit":
        _write_file = store._write_file
        def write_file(fd, data):
            if is_temp_of_name(os.readlink(f"/proc/self/fd/{fd}")):
                st["count"] += 1
                st["armed"] = st["count"] == plan.get("n", 1)
                if st["armed"] and point == "partial":
                    os.write(fd, data[: len(data) // 2])
                    die()
            return _write_file(fd, data)
        store._write_file = write_file

        _fsync = os.fsync
        def fsync(fd):
            _fsync(fd)
            if not st["armed"]:
                return
            path = os.readlink(f"/proc/self/fd/{fd}")
            b = os.path.basename(path)
            if point == "temp_synced" and is_temp_of_name(path):
                die()
            if point == "manifest_synced" and b.startswith(".manifest.json.") and b.endswith(".tmp"):
                die()
            if point == "dir_synced" and st["renamed"] == path:
                die()
        os.fsync = fsync

        _replace = os.replace
        def replace(src, dst, *a, **k):
            _replace(src, dst, *a, **k)
            if not st["armed"]:
                return
            dst = str(dst)
            if point == "manifest_renamed" and dst.endswith("/manifest.json"):
                die()
            if os.path.basename(dst) == name:
                if point == "renamed":
                    die()
                st["renamed"] = os.path.dirname(os.path.realpath(dst))
        os.replace = replace

    if plan.get("count"):
        _execute = jobs.execute
        def execute(*a, **k):
            with open(plan["count"], "a") as f:
                f.write(f"{os.getpid()}\n")
            return _execute(*a, **k)
        jobs.execute = execute

    if plan.get("barrier"):
        open(plan["barrier"] + f".ready.{os.getpid()}", "w").close()
        while not os.path.exists(plan["barrier"]):
            time.sleep(0.005)
'''

WORKER = HOOKS + r'''
install(json.loads(os.environ.get("RELIABILITY_PLAN", "{}")))
sys.exit(jobs._worker_main(sys.argv[1:]))
'''

# Reads one JSON request a line ({"root", "key", "plan", "stderr"}), forks a worker for it and answers
# {"pid", "returncode"} (negative = killed by that signal, as subprocess reports it). It computes nothing
# itself, so its children start with fresh OpenMP state.
SERVER = HOOKS + r'''
import influence.train, influence.estimator, influence.cleanse, influence.validation, influence.cli  # noqa: F401
import influence.baselines, influence.export, torchvision.utils  # noqa: F401  (imported once, not per worker)
for line in sys.stdin:
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            err = os.open(req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(err, 2)
            install(req["plan"])
            if req.get("cli"):
                from influence import cli
                code = cli.main(req["cli"])
            else:
                code = jobs._worker_main([req["root"], req["key"]])
        except BaseException:
            import traceback
            traceback.print_exc()
            code = 3
        sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    print(json.dumps({"pid": pid, "returncode": code}), flush=True)
'''


def small_config(epochs: int = 3, **train_fields) -> RunConfig:
    """The paper's 2D toy GAN on 600 points, batch 50: 12 steps an epoch, a second or two to train."""
    train = {"epochs": epochs, "batch_size": 50, "lr_d": 0.01, "lr_g": 0.01,
             "lr_schedule": ((epochs, 0.001, 0.001),), "dtype": "float64", **train_fields}
    return RunConfig(
        preset="toytest",
        data=DataConfig(source="normal2d", n_train=600, n_valid=200, n_test=200),
        model=ModelConfig(arch="fcgan", z_dim=10),
        train=TrainConfig(**train),
        eval=EvalConfig(n_valid_z=200, n_test_z=200, n_grid=50),
    )


def worker_env(plan: dict | None = None) -> dict:
    # Same number of threads as this process: results are compared bit for bit.
    return {**os.environ, "RELIABILITY_PLAN": json.dumps(plan or {}), "OMP_NUM_THREADS": str(torch.get_num_threads())}


def write_spec(root: Path, spec: dict) -> str:
    """What jobs.start_background writes before it spawns the worker."""
    key = jobs.job_key(spec)
    store.write_json(jobs.job_dir(root, key) / "spec.json", spec)
    return key


class ForkServer:
    """Job workers forked from one process that imported the engine once; `run` starts one like `WORKER` would."""

    def __init__(self, scratch: Path):
        self.scratch = Path(scratch)
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER], env=worker_env(), cwd=REPO, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.n = 0

    def run(self, root: Path, spec: dict, plan: dict | None = None) -> subprocess.CompletedProcess:
        """A job worker for `spec` in store `root`, with `plan`."""
        key = write_spec(root, spec)
        return self._request({"root": str(root), "key": key, "plan": plan or {}}, key)

    def cli(self, argv: list[str], plan: dict | None = None) -> subprocess.CompletedProcess:
        """`gan-influence argv` (its stdout is dropped), with `plan`."""
        return self._request({"cli": argv, "plan": plan or {}}, "cli")

    def _request(self, req: dict, name: str) -> subprocess.CompletedProcess:
        self.n += 1
        err = self.scratch / f"worker-{self.n}.err"
        self.proc.stdin.write(json.dumps({**req, "stderr": str(err)}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the fork server died (exit {self.proc.wait()})")
        answer = json.loads(line)
        return subprocess.CompletedProcess([name], answer["returncode"], "", err.read_text() if err.exists() else "")

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)

    def __enter__(self) -> "ForkServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def first_done(log: Path, stage: str) -> list[int | None]:
    """Per worker process (in start order), the first progress step it reported in `stage`."""
    entries = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    pids = list(dict.fromkeys(e["pid"] for e in entries))
    return [next((e["first_done"] for e in entries if e["pid"] == p and e["stage"] == stage), None) for p in pids]


def files(folder: Path) -> dict[str, str]:
    """Every file under `folder` (hidden ones included) -> sha256."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def temp_files(folder: Path) -> list[str]:
    return [p.as_posix() for p in folder.rglob("*.tmp")]


def faults(kind: str, n: int, what: str) -> None:
    print(f"\nFAULTS {kind}: {n} {what}")
