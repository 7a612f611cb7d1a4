"""One computation per job key across processes (two tabs, CLI + app), and followers that see
its progress and take over when it dies."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from influence import cli, jobs, store
from influence.config import apply_overrides, preset
from _faults import REPO, WORKER, faults, small_config, worker_env, write_spec

# The CLI's spelling of a small toy run: 100 steps an epoch, 2 epochs (a second or two: long enough
# to catch the worker mid-way).
SETS = ["data.n_train=1000", "data.n_valid=200", "data.n_test=200", "train.batch_size=10", "train.epochs=2",
        "train.lr_d=0.01", "train.lr_g=0.01", "train.lr_schedule=2:0.001:0.001", "eval.n_valid_z=200",
        "eval.n_test_z=200", "eval.n_grid=50"]


def cli_spec() -> dict:
    """The spec `gan-influence train --preset toy2d --set ...SETS` builds."""
    return {"kind": "train", "params": {"config": apply_overrides(preset("toy2d"), SETS).to_dict()}}


def cli_train_argv(root: Path, *extra: str) -> list[str]:
    return ["--store", str(root), "train", "--preset", "toy2d", *extra] + [a for s in SETS for a in ("--set", s)]


def workers(root: Path) -> list[int]:
    """Live `influence.jobs` worker processes of this store."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"influence.jobs" in argv and str(root).encode() in argv:
            out.append(int(d.name))
    return out


def wait_for(predicate, timeout: float = 120.0, what: str = ""):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def running_pid(root: Path, key: str) -> int | None:
    status = jobs.read_status(root, key)
    return status.get("pid") if status["state"] == "running" else None


def test_two_workers_started_together_compute_once(tmp_path):
    root, count, go = tmp_path / "store", tmp_path / "computations", tmp_path / "go"
    spec = {"kind": "train", "params": {"config": small_config(epochs=2).to_dict()}}
    key = write_spec(root, spec)
    plan = {"count": str(count), "barrier": str(go)}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(root), key], env=worker_env(plan), cwd=REPO,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    wait_for(lambda: len(list(tmp_path.glob("go.ready.*"))) == 2, what="both workers to be ready")
    go.touch()  # both call run_job now
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    computed = count.read_text().split()
    assert len(computed) == 1  # the other worker found the lock held and left
    status = jobs.read_status(root, key)
    assert status["state"] == "done" and str(status["pid"]) == computed[0]
    assert status["result"]["run_id"] == small_config(epochs=2).run_id
    faults("concurrent", 1, "simultaneous starts of one job in two processes (1 computation)")


def test_cli_follows_a_background_job_and_repeated_starts_join_it(tmp_path, capsys, monkeypatch):
    root, spec = tmp_path / "store", cli_spec()
    spawned = []
    real_popen = subprocess.Popen

    def popen(*a, **k):
        spawned.append(real_popen(*a, **k))
        return spawned[-1]

    monkeypatch.setattr(jobs.subprocess, "Popen", popen)
    key = jobs.start_background(root, spec)
    assert jobs.start_background(root, spec) == key  # a second tab, before the first worker holds the lock
    pid = wait_for(lambda: running_pid(root, key), what="the job to run")
    os.kill(pid, signal.SIGSTOP)  # hold it mid-way, its lock held, while others ask for it
    try:
        status = jobs.read_status(root, key)
        assert status["state"] == "running" and (status.get("done") or 0) < 200, "the job ended before it was held"
        assert len(spawned) == 2
        others = [p for p in spawned if p.pid != pid]
        for p in others:  # the surplus worker finds the lock held and leaves without computing
            assert p.wait(timeout=120) == 0
        assert jobs.start_background(root, spec) == key  # a third start while it runs: joins
        assert len(spawned) == 2 and workers(root) == [pid]  # nothing new was spawned
        started = jobs.read_status(root, key)["started"]
        threading.Timer(1.5, os.kill, (pid, signal.SIGCONT)).start()
        code = cli.main(cli_train_argv(root))
    finally:
        os.kill(pid, signal.SIGCONT)
    captured = capsys.readouterr()
    assert code == 0
    assert f"job {key} is already running elsewhere; following it" in captured.err
    assert "train:" in captured.err  # the follower shows the worker's progress
    status = jobs.read_status(root, key)
    assert status["state"] == "done" and status["pid"] == pid and status["started"] == started, (
        status, pid, started, captured.err[-3000:], (jobs.job_dir(root, key) / "log.txt").read_text()[-3000:])
    assert status["result"]["run_id"] in captured.out
    faults("concurrent", 3, "starts of a running job (2 start_background + 1 CLI) joined it (1 computation)")


def test_cli_following_a_job_whose_worker_dies_takes_it_over(tmp_path, capsys):
    root, spec = tmp_path / "store", cli_spec()
    key = write_spec(root, spec)
    plan = {"kill": "progress", "stage": "train", "n": 150}  # dies in epoch 2, after the epoch-1 checkpoint
    proc = subprocess.Popen([sys.executable, "-c", WORKER, str(root), key], env=worker_env(plan), cwd=REPO)
    wait_for(lambda: running_pid(root, key) == proc.pid, what="the worker to run")
    os.kill(proc.pid, signal.SIGSTOP)  # held until the CLI follows it, then it runs on and dies
    try:
        threading.Timer(1.5, os.kill, (proc.pid, signal.SIGCONT)).start()
        code = cli.main(cli_train_argv(root, "--json"))
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    captured = capsys.readouterr()
    assert code == 0
    assert "following it" in captured.err and "was interrupted; resuming it here" in captured.err
    assert json.loads(captured.out.strip().splitlines()[-1])["run_id"] == apply_overrides(preset("toy2d"), SETS).run_id
    assert jobs.read_status(root, key)["state"] == "done"
    faults("concurrent", 1, "followed job whose worker was SIGKILLed (taken over, resumed)")


PROBER = r"""
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
while True:  # what read_status and start_background do, as fast as possible
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
    except OSError:
        pass
"""


def test_status_probes_never_make_a_starting_job_think_it_runs_elsewhere(tmp_path, monkeypatch):
    """Status reads probe the job lock (take and drop it). Another process probing in a tight loop
    while a job starts 100 times: every start must run (without the retry, about 1 in 5 gave up)."""
    root = store.store_root(tmp_path / "store")
    monkeypatch.setattr(jobs, "execute", lambda root, spec, progress, token: {"ok": True})
    spec = {"kind": "cleanse", "params": {}}
    lock = jobs.job_dir(root, jobs.job_key(spec)) / "lock"
    lock.parent.mkdir(parents=True)
    prober = subprocess.Popen([sys.executable, "-c", PROBER, str(lock)])
    try:
        time.sleep(0.5)
        results = [jobs.run_job(root, spec) for _ in range(100)]
    finally:
        prober.kill()
        prober.wait()
    assert results == [{"ok": True}] * 100
    faults("concurrent", 100, "job starts against a process probing the lock in a tight loop (each ran)")


def test_a_late_queued_status_is_corrected_by_the_running_worker(tmp_path, monkeypatch):
    """start_background of a key whose worker just took the lock writes 'queued'; the worker's next
    progress report must put 'running' back, or the app would show a running job as queued."""
    from influence.progress import Progress

    root = store.store_root(tmp_path / "store")
    seen = []

    def execute(root_, spec, progress, token):
        d = jobs.job_dir(root_, jobs.job_key(spec))
        jobs._write_status(d, state="queued", done=0, total=0)  # the late writer
        progress(Progress("train", 1, 2, 0.1, {}))
        seen.append(jobs.read_status(root_, jobs.job_key(spec))["state"])
        return {}

    monkeypatch.setattr(jobs, "execute", execute)
    jobs.run_job(root, {"kind": "train", "params": {}})
    assert seen == ["running"]


@pytest.mark.parametrize("damage", [b"", b"{not json", b"[1, 2]"])
def test_damaged_job_files_do_not_break_listing_or_reruns(tmp_path, monkeypatch, damage):
    root = store.store_root(tmp_path / "store")
    monkeypatch.setattr(jobs, "execute", lambda root, spec, progress, token: {"ok": True})
    spec = {"kind": "cleanse", "params": {}}
    jobs.run_job(root, spec)
    d = jobs.job_dir(root, jobs.job_key(spec))
    (d / "status.json").write_bytes(damage)
    assert jobs.read_status(root, jobs.job_key(spec))["state"] == "unknown"
    assert jobs.run_job(root, spec) == {"ok": True}  # the damaged status is replaced
    (d / "spec.json").write_bytes(damage)
    assert jobs.list_jobs(root) == []  # listed jobs need a readable spec; nothing raises


def test_a_job_that_just_ended_is_never_reported_interrupted(tmp_path, monkeypatch):
    """The worker writes 'done' and then frees the lock; a status read between its read of the file
    and its probe of the lock must not call the job interrupted (before the fix: 53 of 200 jobs)."""
    root = store.store_root(tmp_path / "store")
    monkeypatch.setattr(jobs, "execute", lambda root, spec, progress, token: {"ok": True})
    flashed = 0
    for i in range(100):
        spec = {"kind": "cleanse", "params": {"i": i}}
        seen, stop = [], threading.Event()

        def poll():
            while not stop.is_set():
                seen.append(jobs.read_status(root, jobs.job_key(spec))["state"])

        poller = threading.Thread(target=poll)
        poller.start()
        try:
            jobs.run_job(root, spec)
        finally:
            stop.set()
            poller.join()
        flashed += "interrupted" in seen
    assert flashed == 0
    faults("concurrent", 100, "jobs ending under continuous status polling (never shown interrupted)")


def test_a_worker_slow_to_start_is_followed_to_its_end(tmp_path, monkeypatch):
    """On a busy machine a worker's imports took 14 s; read_status called the queued job interrupted after 10 s
    and the app stopped following a training that then finished. Here every worker starts 11 s late (a wrapper
    sleeps before Python): the job is seen queued, then its real end (a spec that fails at once), never
    interrupted."""
    root = store.store_root(tmp_path / "store")
    late = tmp_path / "late-python"
    late.write_text(f"#!/bin/sh\nsleep 11\nexec {sys.executable} \"$@\"\n")
    late.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(late))
    spec = {"kind": "cleanse", "params": {}}
    key = jobs.start_background(root, spec)
    seen = [jobs.read_status(root, key)["state"]]
    while seen[-1] not in ("done", "failed", "cancelled", "interrupted"):
        time.sleep(0.2)
        seen.append(jobs.read_status(root, key)["state"])
    assert seen[0] == "queued" and seen.count("queued") > 40 and seen[-1] == "failed", seen
    assert int((jobs.job_dir(root, key) / "worker.pid").read_text()) == jobs.read_status(root, key)["pid"]


def test_a_queued_job_is_interrupted_once_its_worker_is_gone(tmp_path):
    """Queued, and nobody holds the lock: waiting while the process started for it runs, interrupted once it has
    exited (collected or not: an exited process not yet collected by its parent lingers as a zombie). Without the
    process's id, as an older version queued it, the age decides (10 s)."""
    root = store.store_root(tmp_path / "store")
    d = jobs.job_dir(root, "train-0123456789ab")
    d.mkdir(parents=True)

    def queued(age: float) -> str:
        store.write_json(d / "status.json", {"key": d.name, "state": "queued", "updated": time.time() - age})
        return jobs.read_status(root, d.name)["state"]

    assert (queued(5), queued(60)) == ("queued", "interrupted")
    proc = subprocess.Popen(["sleep", "60"])
    try:
        (d / "worker.pid").write_text(str(proc.pid))
        assert (queued(5), queued(600), queued(jobs.QUEUED_MAX_S + 1)) == ("queued", "queued", "interrupted")
        proc.kill()
        wait_for(lambda: Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z",
                 what="the killed process to become a zombie")
        assert queued(5) == "interrupted"
    finally:
        proc.kill()
        proc.wait()
    assert queued(5) == "interrupted"


def test_a_sweep_job_computes_the_table_the_app_reads_back(tmp_path):
    """The app's sweep spec, run as a job: its result is the sweep table, and the store keeps it for the page."""
    import math

    from influence.validation import stored_sweeps

    cfg = apply_overrides(preset("toy2d"), SETS)
    spec = {"kind": "sweep", "params": {"configs": [cfg.to_dict(), dataclasses.replace(cfg, seed=1).to_dict()],
                                        "methods": ["all", "random"], "counts": [50], "metric": "all"}}
    result = jobs.run_job(tmp_path, spec)
    assert jobs.read_status(tmp_path, jobs.job_key(spec))["state"] == "done"
    [stored] = stored_sweeps(tmp_path)
    assert stored["planned"] == len(stored["per_run"]) == 4
    for row, (_, expected) in zip(result["table"], stored["table"].iterrows()):
        assert (row["method"], row["count"], row["seeds"]) == (expected["method"], expected["count"], 2)
        assert math.isclose(row["mean_change_all"], expected["mean_change_all"], rel_tol=1e-12)


def test_estimate_jobs_differing_only_in_metric_order_share_a_key():
    """Issue 23.4: [fid, is] and [is, fid] are one request (before: two keys, two passes at once)."""
    from influence.specs import estimate_spec

    a, b = estimate_spec("r1", ["fid", "is"]), estimate_spec("r1", ["is", "fid", "is"])
    assert jobs.job_key(a) == jobs.job_key(b)
    assert jobs.job_key(a) != jobs.job_key(estimate_spec("r1", ["fid"]))
    # a spec already in order keeps the key it always had
    import hashlib

    assert jobs.job_key(a) == "estimate-" + hashlib.sha256(json.dumps(a, sort_keys=True).encode()).hexdigest()[:12]


def test_every_pair_of_commands_on_one_run_computes_each_artefact_once(tmp_path):
    """Issue 23.4: two CLI processes started at the same instant on one run, for every pair of commands
    (bench/concurrency.py once; its 20 repetitions are the bench). Before the fix, among others, a sweep next to
    a train job trained the run (and the feature net) twice, and an estimate next to a cleanse --by fid ran two
    influence passes."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_concurrency", REPO / "bench" / "concurrency.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # its dataclasses look their module up
    spec.loader.exec_module(bench)
    results = bench.run_pairs(tmp_path, reps=1, progress=lambda line: None)
    failed = [(r.pair, r.codes, r.twice, r.errors) for r in results if not r.ok]
    assert len(results) == 45 and not failed, failed
    faults("concurrent", len(results), "pairs of CLI commands started together on one run (every pair once: no "
           "failure, each artefact computed once)")
