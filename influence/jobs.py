"""Background jobs: one computation per job key, progress in the store, cancellable.

A job is a JSON spec {"kind": ..., "params": {...}}; its key is kind + a hash of the
spec. Files under <store>/_jobs/<key>/:
    spec.json     what to run
    lock          flock-ed by the process computing the job (released when it dies)
    status.json   state (queued|running|done|failed|cancelled), stage, done/total, eta, message, result;
                  (status.reserve: blocks kept for the last status when the disk is full)
                  queued_at / started (epoch seconds), stages {stage: seconds after started it began}:
                  start-up ("loading", "feature-net") comes before the job's own stages
    cancel        present = please stop (checked between steps)
    log.txt       the worker's stderr
Whoever asks for a key whose lock is held follows that job instead of starting a second
one: two browser tabs, or the CLI and the app, share one computation. A worker killed
mid-way leaves its state "running" with the lock free: `status` reports it as
"interrupted", and starting it again resumes from the job's own checkpoints.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from . import allocator, store
from .errors import Cancelled, InfluenceError
from .progress import CancelToken, Progress, Reporter

KINDS = ("train", "estimate", "cleanse", "validate", "sweep", "explain")
STATUS_EVERY_S = 0.5
# Probes of a lock (status reads, start_background) hold it for a moment; whoever wants the lock
# retries this long before concluding that another process computes the job.
LOCK_RETRY_S = 0.25
QUEUED_MAX_S = 3600  # a queued job whose worker has not taken its lock after this long is interrupted
RESERVE, RESERVE_BYTES = "status.reserve", 16384  # room for the last status on a full disk


def job_key(spec: dict[str, Any]) -> str:
    """kind + a hash of the spec in canonical form: one request, one key, whatever the order of its metrics."""
    if spec.get("kind") not in KINDS:
        raise InfluenceError(f"unknown job kind '{spec.get('kind')}'")
    digest = hashlib.sha256(json.dumps(_canonical(spec), sort_keys=True).encode()).hexdigest()[:12]
    return f"{spec['kind']}-{digest}"


def _canonical(spec: dict[str, Any]) -> dict[str, Any]:
    """An estimate of [is, fid] is an estimate of [fid, is] (the metrics are computed as one set). A spec with
    its metrics already in order keeps its key."""
    params = spec.get("params")
    if spec["kind"] in ("estimate", "validate") and isinstance(params, dict) and isinstance(params.get("metrics"), list):
        try:
            metrics = sorted(set(params["metrics"]))
        except TypeError:  # not all strings: the job's own checks will name it
            return spec
        return {**spec, "params": {**params, "metrics": metrics}}
    return spec


def job_dir(root: Path, key: str) -> Path:
    return Path(root) / "_jobs" / store.check_run_id(key)


class JobLock:
    """An exclusive, non-blocking flock on the job's lock file."""

    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None

    def acquire(self, retry_s: float = 0.0, min_tries: int = 10) -> bool:
        """Take the lock; retries for `retry_s` seconds (and at least `min_tries` times, since on a
        busy machine one sleep can outlast retry_s), because a probe may hold it for a moment."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline, tries = time.monotonic() + retry_s, 0
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                tries += 1
                if time.monotonic() >= deadline and (retry_s == 0 or tries >= min_tries):
                    os.close(fd)
                    return False
                time.sleep(0.01)
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def held_elsewhere(self, retry_s: float = 0.03) -> bool:
        if self.acquire(retry_s, min_tries=3):
            self.release()
            return False
        return True


# ---------------------------------------------------------------- status
def read_status(root: Path, key: str) -> dict[str, Any]:
    d = job_dir(root, key)
    status = _read_status_file(d, key)
    if status.get("state") in ("queued", "running") and not JobLock(d / "lock").held_elsewhere():
        # The worker writes its final state before it lets the lock go: read again, or a job that
        # ended between the two looks interrupted.
        status = _read_status_file(d, key)
        if status.get("state") == "running" or (status.get("state") == "queued" and not _starting(d, status)):
            # Nobody computes it: the worker died (kill, crash, reboot). Starting again resumes.
            status["state"] = "interrupted"
    return status


def _starting(d: Path, status: dict[str, Any]) -> bool:
    """Whether a queued job whose lock nobody holds yet is still on its way: the process started for it runs (on a
    busy machine its imports alone took 14 s, and the app, which had called it interrupted after 10 s, stopped
    following a training that then finished), for at most QUEUED_MAX_S. Without that process's id (a job queued by
    an older version) its age decides: 10 s."""
    age = time.time() - status.get("updated", 0)
    try:
        pid = int((d / "worker.pid").read_text())
    except (OSError, ValueError):
        return age <= 10
    return age <= QUEUED_MAX_S and _alive(pid)


def _alive(pid: int) -> bool:
    """Whether process `pid` runs; one that exited but whose parent has not collected it yet (a zombie: the app's
    server starts workers and collects them late) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process took the id
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):  # no /proc here
        return True


def _read_status_file(d: Path, key: str) -> dict[str, Any]:
    try:
        status = json.loads((d / "status.json").read_text())
    except (OSError, ValueError):  # missing or damaged
        return {"key": key, "state": "unknown"}
    return status if isinstance(status, dict) else {"key": key, "state": "unknown"}


def _write_status(d: Path, **fields: Any) -> None:
    store.write_json(d / "status.json", _updated_status(d, fields))


def _updated_status(d: Path, fields: dict[str, Any]) -> dict[str, Any]:
    path = d / "status.json"
    try:
        old = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        old = {}  # a damaged status is replaced
    if not isinstance(old, dict):
        old = {}
    old.update(fields, updated=time.time())
    return old


def _reserve_status_space(d: Path) -> None:
    """A file of RESERVE_BYTES whose blocks are already allocated: on a full disk the job's last status is
    written into it and renamed over status.json, which needs no new space (`_write_final_status`)."""
    path = d / RESERVE
    try:
        if not path.exists() or path.stat().st_size != RESERVE_BYTES:
            store.write_bytes(path, b" " * RESERVE_BYTES)
    except (store.StoreError, OSError):
        pass  # no space even for this: the status writes below fail as they would have


def _write_final_status(d: Path, **fields: Any) -> None:
    """The job's last state, also when the disk is full (when the failure is the full disk): then it goes into
    the reserved blocks, without its traceback and with its message cut to fit, so the job reads "failed" with
    the reason instead of "interrupted"."""
    try:
        _write_status(d, **fields)
        return
    except (store.StoreError, OSError) as e:
        error = e
    status = _updated_status(d, {k: v for k, v in fields.items() if k != "traceback"})
    if status.get("state") == "done":  # its result cannot be recorded: say so (the results are in the store)
        status.update(state="failed", result=None, message=f"the job finished but its status cannot be written "
                      f"({error}); run it again to read its results")
    data = json.dumps(status, allow_nan=True).encode()
    if len(data) > RESERVE_BYTES:
        status["message"] = str(status.get("message", ""))[:RESERVE_BYTES // 4]
        status["result"] = None
        data = json.dumps(status, allow_nan=True).encode()
    try:
        fd = os.open(d / RESERVE, os.O_WRONLY)  # no O_TRUNC: overwrite the allocated blocks
        try:
            os.pwrite(fd, data[:RESERVE_BYTES].ljust(RESERVE_BYTES), 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(d / RESERVE, d / "status.json")
        store._fsync_dir(d)
    except OSError as e:
        print(f"cannot record the job's state '{fields.get('state')}': {e}", file=sys.stderr)


def list_jobs(root: Path) -> list[dict[str, Any]]:
    base = Path(root) / "_jobs"
    if not base.exists():
        return []
    out = []
    for d in base.iterdir():
        if (d / "spec.json").exists():
            try:
                spec = json.loads((d / "spec.json").read_text())
                status = read_status(root, d.name)
            except (OSError, ValueError, InfluenceError):
                continue  # a damaged or foreign job folder is not listed
            if not isinstance(spec, dict) or spec.get("kind") not in KINDS:
                continue
            status["spec"] = spec
            out.append(status)
    return sorted(out, key=lambda s: -s.get("updated", 0))


def cancel(root: Path, key: str) -> None:
    CancelToken(job_dir(root, key) / "cancel").set()


# ---------------------------------------------------------------- running
def run_job(root: Path, spec: dict[str, Any], progress: Callable[[Progress], None] | None = None) -> dict[str, Any] | None:
    """Run the job in this process if nobody else is; returns its result, or None if it runs elsewhere."""
    root = store.store_root(root)
    key = job_key(spec)
    d = job_dir(root, key)
    lock = JobLock(d / "lock")
    asked = time.time()
    if not lock.acquire(LOCK_RETRY_S):
        return None
    try:
        status = read_status(root, key)
        if status.get("state") == "done" and status.get("updated", 0) >= asked:
            return status["result"]  # another process finished it while we waited for the lock
        previous = status.get("state")
        store.write_json(d / "spec.json", spec)
        flag = d / "cancel"
        # A flag left by an earlier run is stale; one set while this job was queued is meant for it.
        if flag.exists() and previous != "queued":
            flag.unlink()
        token = CancelToken(flag)
        # progress fields reset: a restarted job must not show the progress of the process that died
        started = time.time()
        try:
            _write_status(d, key=key, state="running", pid=os.getpid(), started=started, message="", result=None,
                          stage="starting", done=0, total=0, eta=None, stages={})
        except store.StoreError as e:  # a full disk before the start: the reserve of an earlier run may hold it
            _write_final_status(d, key=key, state="failed", pid=os.getpid(), message=str(e))
            raise
        _reserve_status_space(d)
        last = [0.0]
        stages: dict[str, float] = {}  # stage -> seconds after `started` when it first reported (what took how long)

        def report(p: Progress) -> None:
            now = time.time()
            new_stage = p.stage not in stages
            if new_stage:
                stages[p.stage] = now - started
            if new_stage or now - last[0] >= STATUS_EVERY_S or p.done == p.total:
                last[0] = now
                # state too: a late start_background of the same key may have written "queued"
                _write_status(d, state="running", stage=p.stage, done=p.done, total=p.total, seconds=p.seconds,
                              eta=p.eta, info=_jsonable(p.info), stages=stages)
            if progress is not None:
                progress(p)

        try:
            result = execute(root, spec, report, token)
        except Cancelled as e:
            _write_final_status(d, state="cancelled", message=str(e))
            raise
        except InfluenceError as e:
            _write_final_status(d, state="failed", message=str(e))
            raise
        except Exception as e:
            _write_final_status(d, state="failed", message=f"internal error: {e!r}", traceback=traceback.format_exc())
            raise
        _write_final_status(d, state="done", result=result, message="")
        return result
    finally:
        lock.release()


def start_background(root: Path, spec: dict[str, Any]) -> str:
    """Start the job in a separate process (or join the one running); returns its key."""
    root = store.store_root(root)
    key = job_key(spec)
    d = job_dir(root, key)
    if JobLock(d / "lock").held_elsewhere():
        return key
    d.mkdir(parents=True, exist_ok=True)
    (d / "cancel").unlink(missing_ok=True)  # a stale flag must not cancel the new worker
    (d / "worker.pid").unlink(missing_ok=True)  # an earlier worker's: until this one's is written, age decides
    store.write_json(d / "spec.json", spec)
    _write_status(d, key=key, state="queued", queued_at=time.time(), message="", result=None, done=0, total=0)
    # OpenMP threads that spin while waiting starve each other once anything else runs on the cores
    # (the app's server and browser do): a toy2d training took minutes at 2 threads instead of seconds
    # (bench/job_speed.py). Passive waiting keeps the thread count, and so the run's bits.
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
           **{k: v for k, v in allocator.child_environ().items() if v is not None}}
    with open(d / "log.txt", "ab") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "influence.jobs", str(root), key],
            stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True, env=env,
        )
    try:  # a file of its own: the worker may be writing its status already
        store.write_bytes(d / "worker.pid", str(worker.pid).encode())
    except store.StoreError:  # a full disk: the queued status's age decides, as before there was this file
        pass
    return key


def wait(root: Path, key: str, poll_s: float = 0.5, timeout_s: float | None = None,
         on_status: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Follow a job until it ends; `on_status` sees every status read (progress for a follower)."""
    start = time.time()
    while True:
        status = read_status(root, key)
        if on_status is not None:
            on_status(status)
        if status["state"] in ("done", "failed", "cancelled", "interrupted"):
            return status
        if timeout_s is not None and time.time() - start > timeout_s:
            return status
        if status["state"] == "unknown" and time.time() - start > 10 and not JobLock(job_dir(root, key) / "lock").held_elsewhere():
            # whoever held the lock died before writing any status
            return {**status, "state": "interrupted"}
        time.sleep(poll_s)


def _jsonable(info: dict) -> dict:
    return {k: v for k, v in info.items() if isinstance(v, (int, float, str, bool, dict, list, type(None)))}


# ---------------------------------------------------------------- what each kind does
@contextlib.contextmanager
def _started_up(root: Path, spec: dict[str, Any], progress, cancel_token: CancelToken):
    """Start-up, reported as stages of its own before the job's: loading the data set ("loading"), then the
    IS/FID feature network ("feature-net": trained the first time a data set is used, with progress in a
    classifier's epochs or an autoencoder's steps, loaded from the cache or the run's copy later). Within the
    block the job's contexts use them instead of loading them again. A sweep (several runs) loads its own."""
    if spec["kind"] == "sweep":
        yield
        return
    from .config import RunConfig
    from .context import load_run_config, pinned_feature_net, resolve_device, supplied_data
    from .data import load_dataset

    p = spec["params"]
    cfg = RunConfig.from_dict(p["config"]) if spec["kind"] == "train" else load_run_config(store.open_run(root, p["run_id"]))
    Reporter("loading", 0, progress, cancel_token)(0)
    dataset = load_dataset(cfg.data, cfg.seed, store.cache_dir(root))
    features = None
    if not cfg.is_2d:
        import torch

        from .classifier import AE_STEPS, CLASSIFIER_EPOCHS, load_feature_net

        # without a count while it is loaded from the cache (no bar of epochs that never move), by epochs once a
        # classifier is trained, by steps once an autoencoder is
        Reporter("feature-net", 0, progress, cancel_token)(0)
        unit, total = ("step", AE_STEPS) if cfg.eval.feature == "autoencoder" else ("epoch", CLASSIFIER_EPOCHS)
        net_report = Reporter("feature-net", total, progress, cancel_token)
        # a run's own copy where it has one, as its contexts would load it: the cache may hold another net (trained
        # at another thread count, on another machine) or none, and the job's contexts take this one instead
        features = load_feature_net(cfg.eval, dataset, cfg.identity()["data"], store.cache_dir(root),
                                    progress=lambda done, total: net_report(done, unit=unit),
                                    pinned=pinned_feature_net(root, cfg))
        features = features.to(resolve_device(cfg.train.device), torch.float64) if features is not None else None
    with supplied_data(cfg, dataset, features):
        yield


def execute(root: Path, spec: dict[str, Any], progress, cancel_token: CancelToken) -> dict[str, Any]:
    """Run one job spec (after its reported start-up) and return a JSON summary."""
    with _started_up(root, spec, progress, cancel_token):
        return _execute_kind(root, spec, progress, cancel_token)


def _execute_kind(root: Path, spec: dict[str, Any], progress, cancel_token: CancelToken) -> dict[str, Any]:
    """The job's own work. Imports are local: workers start fast."""
    kind, p = spec["kind"], spec["params"]
    if kind == "train":
        from .config import RunConfig, validate
        from .train import train

        cfg = RunConfig.from_dict(p["config"])
        validate(cfg)
        run = train(cfg, root, progress, cancel_token)
        from .honesty import metric_report

        return {"run_id": run.run_id, **run.read_json("summary.json"), "metric_report": metric_report(run)}
    if kind == "sweep":
        from .config import RunConfig, validate
        from .estimator import EstimateOptions
        from .validation import sweep

        configs = [RunConfig.from_dict(c) for c in p["configs"]]
        for cfg in configs:
            validate(cfg)
        table = sweep(configs, root, p["methods"], p["counts"], p.get("metric", "fid"),
                      EstimateOptions(**p.get("options", {})), progress, cancel_token)
        rows = table.to_dict(orient="records")  # native Python numbers; NaN (no spread, no test) -> null
        return {"table": [{k: None if isinstance(v, float) and v != v else v for k, v in r.items()} for r in rows]}
    run = store.open_run(root, p["run_id"])
    if kind == "estimate":
        from .estimator import EstimateOptions, estimate

        options = EstimateOptions(**p.get("options", {}))
        results = estimate(run, p["metrics"], options, progress, cancel_token)
        out = {m: {k: r.meta[k] for k in ("verdict", "verdict_message", "growth", "seconds")} for m, r in results.items()}
        if p.get("check", "none") != "none":
            from .validation.spotcheck import spot_check
            from .validation.trust import verdict

            check = spot_check(run, p["metrics"], options, p["check"], progress, cancel_token)
            for m, r in results.items():
                out[m]["trust"] = verdict(r, check)
        return out
    if kind == "explain":
        from .samples import run_job as explain_job

        return explain_job(run, p, progress, cancel_token)
    if kind == "cleanse":
        from .cleanse import cleanse

        return cleanse(run, p["removal_ids"], p.get("mode", "replay"), progress, cancel_token).as_dict()
    from .estimator import EstimateOptions
    from .validation import validate

    if "groups" in p:
        from .validation.groups import GroupSpec, validate_groups

        g = p["groups"]
        spec_ = GroupSpec(g["groups"], tuple(g["fractions"]), g["seed"], tuple(g["curve"]))
        result = validate_groups(run, p["metrics"], spec_, EstimateOptions(**p.get("options", {})), progress,
                                 cancel_token, p.get("lanes"))
        return {k: v for k, v in result.items() if not k.endswith("_table")}
    acc = validate(run, p["metrics"], p.get("n", 200), p.get("selection", "first"), p.get("seed", 0),
                   EstimateOptions(**p.get("options", {})), progress, cancel_token, p.get("trace_epochs"),
                   p.get("lanes"))
    return {m: a.as_dict() for m, a in acc.items()}


def _worker_main(argv: list[str]) -> int:
    root, key = Path(argv[0]), argv[1]
    spec = json.loads((job_dir(root, key) / "spec.json").read_text())
    try:
        run_job(root, spec)
    except (InfluenceError, Exception):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
