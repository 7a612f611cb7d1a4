"""Issue #5: kill -9 at any moment, damaged files, divergence and a full disk never cost a result.

Kill tests run the real job worker (`python -m influence.jobs <store> <key>` after writing the
spec as `jobs.start_background` does) in a subprocess that SIGKILLs itself at a chosen point
(a progress step, or any point of a file's commit: see tests/_faults.py), or the CLI killed
from outside once status.json shows enough progress. After each kill the job is started again; the finished
results are compared byte for byte with an uninterrupted run of the same seed.

Every fault counted in docs/reliability.md is printed as a `FAULTS ...` line (pytest -s).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from influence import cli, jobs, specs, store
from influence.errors import Cancelled, DivergenceError, StoreError
from influence.estimator import EstimateOptions, estimate
from influence.progress import CancelToken
from influence.train import train

# Also imported from here by test_fuzz and test_security.
from _faults import (COMMIT_POINTS, COMMITTED_FROM, REPO, ForkServer, faults, files, first_done,
                     small_config, temp_files, worker_env)

METRICS = ["all", "dloss"]
EVERY = 3  # backward-pass checkpoint every 3 steps (12 traced steps: checkpoints after 3, 6, 9)
PER_EPOCH = 12


def estimate_spec(run_id: str) -> dict:
    return {"kind": "estimate", "params": {"run_id": run_id, "metrics": METRICS,
                                           "options": {"checkpoint_every": EVERY}}}


def copy_run(src_root: Path, run_id: str, dst_root: Path) -> store.Run:
    store.store_root(dst_root)
    shutil.copytree(src_root / run_id, dst_root / run_id)
    return store.open_run(dst_root, run_id)


def assert_same_training(run: store.Run, ref: store.Run) -> None:
    """Byte-identical run folders (as listed in the manifest), timings aside (summary.json's and each epoch's in
    history.json)."""
    # metric_report.json is the train job's report about the finished run (honesty.metric_report), not training
    # output: a run trained by train() alone has none until someone asks for it.
    ref_files, got_files = ({k: v for k, v in r.manifest().items() if k != "metric_report.json"} for r in (ref, run))
    assert sorted(got_files) == sorted(ref_files)
    for rel in ref_files:
        if rel == "summary.json":
            a, b = run.read_json(rel), ref.read_json(rel)
            a.pop("seconds"), b.pop("seconds")
            assert a == b
        elif rel == "history.json":  # each epoch's wall time beside its numbers
            a, b = ([{k: v for k, v in e.items() if k != "seconds"} for e in r.read_json(rel)] for r in (run, ref))
            assert a == b
        else:
            assert run.read_bytes(rel) == ref.read_bytes(rel), rel
    assert not temp_files(run.dir)


def assert_same_influence(run: store.Run, ref: store.Run) -> None:
    names = [rel for rel in ref.manifest() if rel.startswith("influence/") and rel.endswith(".npy")]
    assert len(names) == 5 * len(METRICS)  # scores, flags, u_norms, state_norms, window_scores per metric
    for rel in names:
        assert run.read_bytes(rel) == ref.read_bytes(rel), rel
    for rel in [r for r in ref.manifest() if r.endswith("meta.json") and r.startswith("influence/")]:
        a, b = run.read_json(rel), ref.read_json(rel)
        a.pop("seconds"), b.pop("seconds")
        assert a == b
    assert run.read_bytes("influence/table.csv") == ref.read_bytes("influence/table.csv")
    assert not [r for r in run.manifest() if "_partial" in r]
    assert not temp_files(run.dir)
    assert not [p for p in run.path("influence/_partial").rglob("*") if p.is_file()]


# ---------------------------------------------------------------- shared runs
@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A finished small run (trained in this process) and a copy with its influence computed."""
    root = tmp_path_factory.mktemp("small")
    run = train(small_config(), root)
    ref_root = tmp_path_factory.mktemp("small_ref")
    ref = copy_run(root, run.run_id, ref_root)
    estimate(ref, METRICS, EstimateOptions(checkpoint_every=EVERY))
    return {"root": root, "run_id": run.run_id, "trained": run, "ref": ref}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Job workers forked from one process that imported the engine once (each fresh process spent 3-4 s of its
    5-7 s on imports)."""
    with ForkServer(tmp_path_factory.mktemp("server")) as forks:
        yield forks


# ---------------------------------------------------------------- kill -9: training
def test_training_killed_at_three_points_resumes_to_identical_results(tmp_path, small, server):
    cfg = small_config()
    spec = {"kind": "train", "params": {"config": cfg.to_dict()}}
    root, log = tmp_path / "store", tmp_path / "first.jsonl"
    key = jobs.job_key(spec)
    kills = [
        {"kill": "progress", "stage": "train", "n": 5},  # mid-epoch 1, no checkpoint yet
        {"kill": "commit", "name": "state.pt", "n": 1, "point": "renamed"},  # right after the epoch-1 checkpoint
        {"kill": "commit", "name": "final.npy", "n": 1, "point": "renamed"},  # while writing the finished run
    ]
    for plan in kills:
        done = server.run(root, spec, {**plan, "log": str(log)})
        assert done.returncode == -signal.SIGKILL, done.stderr
        assert jobs.read_status(root, key)["state"] == "interrupted"  # what the app shows
    done = server.run(root, spec, {"log": str(log)})
    assert done.returncode == 0, done.stderr
    assert jobs.read_status(root, key)["state"] == "done"
    # scratch, scratch, resumed after epoch 1, then no training step at all: the epoch-3
    # checkpoint held everything.
    assert first_done(log, "train") == [1, 1, PER_EPOCH + 1, None]
    assert_same_training(store.open_run(root, cfg.run_id), small["trained"])
    faults("kill-train", len(kills), "SIGKILLs of the training worker")


# Optimizers and trace modes of the commit matrix: the reproduction was Adam + EMA, both modes.
KILL_MATRIX_CONFIGS = {
    "sgd-snapshots": {},
    "sgd-checkpoints": {"trace_mode": "checkpoints", "checkpoint_every": 5},
    "adam-ema-snapshots": {"optimizer": "adam", "betas": (0.5, 0.999), "ema_decay": 0.9},
    "adam-ema-checkpoints": {"optimizer": "adam", "betas": (0.5, 0.999), "ema_decay": 0.9,
                             "trace_mode": "checkpoints", "checkpoint_every": 5},
}


def test_training_killed_at_every_point_of_a_checkpoint_commit_resumes_from_the_last_complete_one(tmp_path, server):
    """Issue 23.2: one worker after another dies inside the commit of `checkpoint/state.pt`, each at the next
    point of `COMMIT_POINTS`. A kill before the manifest lists the new checkpoint resumes from the previous
    one, a kill after it from the new one (before the fix, a kill between the manifest update and the rename
    restarted training from step 1); the finished run equals an uninterrupted one byte for byte."""
    epochs = 5  # kills at 6 points: 3 leave epoch 1's checkpoint, 3 move it on one epoch each
    points = 0
    for name, fields in KILL_MATRIX_CONFIGS.items():
        cfg = small_config(epochs=epochs, **fields)
        spec = {"kind": "train", "params": {"config": cfg.to_dict()}}
        root, log = tmp_path / name, tmp_path / f"{name}.jsonl"
        assert server.run(tmp_path / f"{name}-ref", spec).returncode == 0
        for i, point in enumerate(COMMIT_POINTS):
            plan = {"kill": "commit", "name": "state.pt", "n": 2 if i == 0 else 1, "point": point, "log": str(log)}
            done = server.run(root, spec, plan)
            assert done.returncode == -signal.SIGKILL, (name, point, done.stderr)
            assert jobs.read_status(root, jobs.job_key(spec))["state"] == "interrupted"
            points += 1
        done = server.run(root, spec, {"log": str(log)})
        assert done.returncode == 0, done.stderr
        # The first kill is in epoch 2's commit, each later one in the first commit of its process.
        resumed, epoch = [], 1
        for point in COMMIT_POINTS:
            resumed.append(epoch * PER_EPOCH + 1 if resumed else 1)
            epoch += COMMIT_POINTS.index(point) >= COMMIT_POINTS.index(COMMITTED_FROM)
        resumed.append(epoch * PER_EPOCH + 1)
        assert first_done(log, "train") == resumed, name
        assert_same_training(store.open_run(root, cfg.run_id), store.open_run(tmp_path / f"{name}-ref", cfg.run_id))
    faults("kill-checkpoint-commit", points, f"SIGKILLs inside a checkpoint commit ({len(COMMIT_POINTS)} points x "
           f"{len(KILL_MATRIX_CONFIGS)} optimizer/trace-mode configs)")


def test_training_cli_killed_from_outside_resumes_to_identical_results(tmp_path):
    """kill -9 of `gan-influence train` when status.json shows progress >= k, for two k."""
    from influence.config import apply_overrides, preset

    sets = ["data.n_train=1000", "data.n_valid=200", "data.n_test=200", "train.batch_size=10",
            "train.epochs=3", "train.lr_d=0.01", "train.lr_g=0.01", "train.lr_schedule=3:0.001:0.001",
            "eval.n_valid_z=200", "eval.n_test_z=200", "eval.n_grid=50"]  # 300 steps, 100 an epoch
    cfg = apply_overrides(preset("toy2d"), sets)
    key = jobs.job_key({"kind": "train", "params": {"config": cfg.to_dict()}})
    root = tmp_path / "store"
    argv = [sys.executable, "-m", "influence", "--store", str(root), "train", "--preset", "toy2d", "--json"]
    argv += [a for s in sets for a in ("--set", s)]
    status_file = jobs.job_dir(root, key) / "status.json"
    seen = []
    # status.json is rewritten every 0.5 s: the kills land at whatever step the worker is at by then.
    for k in (50, 150):  # somewhere after step 50; then after step 150 (the resumed process)
        proc = subprocess.Popen(argv, env=worker_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            try:
                status = json.loads(status_file.read_text())
            except (OSError, ValueError):
                status = {}
            if status.get("pid") == proc.pid and status.get("stage") == "train" and status.get("done", 0) >= k:
                os.kill(proc.pid, signal.SIGKILL)
                seen.append(status["done"])
                break
            time.sleep(0.01)
        proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL, f"the CLI was not killed at progress >= {k}"
        assert jobs.read_status(root, key)["state"] == "interrupted"
    done = subprocess.run(argv, env=worker_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["run_id"] == cfg.run_id
    ref = train(cfg, tmp_path / "ref")
    assert_same_training(store.open_run(root, cfg.run_id), ref)
    faults("kill-cli", len(seen), f"SIGKILLs of the CLI from outside, at progress {seen} of 300")


# ---------------------------------------------------------------- kill -9: influence pass
def test_influence_pass_killed_at_five_points_resumes_to_identical_scores(tmp_path, small, server):
    root, log = tmp_path / "store", tmp_path / "first.jsonl"
    run = copy_run(small["root"], small["run_id"], root)
    spec = estimate_spec(run.run_id)
    key = jobs.job_key(spec)
    kills = [
        {"kill": "commit", "name": "state.pt", "n": 2, "point": "temp_synced"},  # step-6 checkpoint in its temp file
        {"kill": "commit", "name": "state.pt", "n": 1, "point": "renamed"},  # right after the checkpoint of step 6
        {"kill": "commit", "name": "state.pt", "n": 1, "point": "manifest_renamed"},  # step-9 checkpoint half-committed
        {"kill": "commit", "name": "scores.npy", "n": 1, "point": "renamed"},  # first metric's scores, the rest not
        # every result stored, the table not (before: the rerun found the results and never wrote a table)
        {"kill": "commit", "name": "table.parquet", "n": 1, "point": "temp_synced"},
    ]
    for plan in kills:
        done = server.run(root, spec, {**plan, "log": str(log)})
        assert done.returncode == -signal.SIGKILL, done.stderr
        assert jobs.read_status(root, key)["state"] == "interrupted"
    done = server.run(root, spec, {"log": str(log)})
    assert done.returncode == 0, done.stderr
    assert jobs.read_status(root, key)["state"] == "done"
    # scratch; resumed after step 3 (the step-6 temp file is ignored); after step 6; after step 9 (the
    # half-committed step-9 checkpoint is finished from its temp file); again after step 9; no step at all: the
    # results were stored, only the table was missing.
    assert first_done(log, "influence") == [1, 4, 7, 10, 10, None]
    assert_same_influence(run, small["ref"])
    faults("kill-influence", len(kills), "SIGKILLs of the influence worker")


def test_an_influence_pass_killed_between_its_metrics_results_resumes_stacked_to_identical_scores(tmp_path, small, server):
    """Killed once the first metric's result was stored: the rerun passed over the second metric alone, whose
    scores then differed from the stacked pass's in the last bits (5e-21 of 1.4e-5). It now resumes the stacked
    pass from its checkpoint. (bench/kills.py --scenarios influence: 67 points)"""
    run = copy_run(small["root"], small["run_id"], tmp_path / "store")
    spec = estimate_spec(run.run_id)
    killed = server.run(run.root, spec, {"kill": "commit", "name": "scores.npy", "n": 2, "point": "temp_synced"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert [m for m in METRICS if run.exists(f"influence/{m}-float64-v1/meta.json")] == METRICS[:1]
    assert server.run(run.root, spec).returncode == 0
    assert_same_influence(run, small["ref"])


def _replay_results(run: store.Run) -> dict[str, object]:
    """A run's group validations and spot checks: parquet bytes, JSON without timings."""
    out = {}
    for rel in sorted(r for r in run.manifest() if r.startswith(("validate/groups/", "influence/_checks/"))):
        if rel.endswith(".json"):
            timings = ("seconds", "replay_seconds", "wall_seconds")
            out[rel] = {k: v for k, v in run.read_json(rel).items() if k not in timings}
        else:
            out[rel] = run.read_bytes(rel)
    return out


def test_group_validation_and_spot_check_killed_before_their_results_end_as_uninterrupted(tmp_path, small, server):
    """A group validation killed between its tables and its result.json: its rerun found the tables, replayed
    nothing and wrote a result without the record of its replays (lanes, lane 0, conditions), whose absence broke
    the Validate page. A killed spot check left its temp file behind. (bench/kills.py --scenarios replays)"""
    groups = {"kind": "validate", "params": {"run_id": small["run_id"], "metrics": METRICS, "groups": {
        "groups": 5, "fractions": [0.05], "seed": 0, "curve": [0.05]}}}
    check = {**estimate_spec(small["run_id"]), "params": {**estimate_spec(small["run_id"])["params"], "check": "full"}}
    ref = copy_run(small["ref"].root, small["run_id"], tmp_path / "ref")
    for spec in (groups, check):
        assert server.run(ref.root, spec).returncode == 0
    want = _replay_results(ref)
    assert {"lanes", "baseline", "conditions"} <= set(want[next(r for r in want if r.endswith("result.json"))])
    check_file = next(r for r in want if r.startswith("influence/_checks/")).rsplit("/", 1)[1]
    kills = [(groups, "groups.parquet", "manifest_renamed"), (groups, "result.json", "temp_synced"),
             (check, check_file, "temp_synced")]
    for i, (spec, name, point) in enumerate(kills):
        run = copy_run(small["ref"].root, small["run_id"], tmp_path / f"kill{i}")
        for other in (groups, check):
            if other is not spec:
                assert server.run(run.root, other).returncode == 0
        done = server.run(run.root, spec, {"kill": "commit", "name": name, "n": 1, "point": point})
        assert done.returncode == -signal.SIGKILL, done.stderr
        assert server.run(run.root, spec).returncode == 0
        assert _replay_results(run) == want, (name, point)
        assert not temp_files(run.dir)
    faults("kill-replays", len(kills), "SIGKILLs of group validation and spot check workers")


# ---------------------------------------------------------------- damaged files
def corrupt(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:  # flip all bits of one byte in the middle
        i = len(data) // 2
        path.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :])


RUN_FILES = ["weights/final.npy", "trace/states.npy", "config.json", "manifest.json"]


@pytest.mark.parametrize("rel", RUN_FILES)
@pytest.mark.parametrize("how", ["truncate", "flip"])
def test_damaged_run_file_is_a_clear_error_naming_it(tmp_path, small, capsys, rel, how):
    root = tmp_path / "store"
    run = copy_run(small["ref"].root, small["run_id"], root)
    corrupt(run.dir / rel, how)
    before = files(run.dir)
    code = cli.main(["--store", str(root), "estimate", "--run", run.run_id, "--metric", "all"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and "\n" not in err
    assert f"'{rel}' is damaged" in err
    assert files(run.dir) == before  # nothing rewritten, nothing added
    # A flip anywhere in the manifest is caught by its own checksum, not mistaken for another file.
    faults("corrupt-run-file", 1, f"{how} of {rel}")


def test_every_flipped_byte_of_the_manifest_is_named(tmp_path, small):
    run = copy_run(small["ref"].root, small["run_id"], tmp_path / "store")
    data = (run.dir / "manifest.json").read_bytes()
    positions = range(0, len(data), max(1, len(data) // 200))
    for i in positions:
        for mask in (0x01, 0x20, 0xFF):
            (run.dir / "manifest.json").write_bytes(data[:i] + bytes([data[i] ^ mask]) + data[i + 1 :])
            with pytest.raises(StoreError, match="'manifest.json' is damaged"):
                run.read_npy("weights/final.npy")
    faults("corrupt-manifest", 3 * len(positions), "single-byte flips of manifest.json")


@pytest.mark.parametrize("how", ["truncate", "flip"])
def test_damaged_influence_results_are_recomputed_identically(tmp_path, small, caplog, how):
    run = copy_run(small["ref"].root, small["run_id"], tmp_path / "store")
    n_params = run.read_npy("weights/final.npy").shape[0]
    for metric in METRICS:
        corrupt(run.path(f"influence/{EstimateOptions().key(metric, n_params)}/scores.npy"), how)
    with caplog.at_level(logging.WARNING, logger="influence"):
        estimate(run, METRICS, EstimateOptions(checkpoint_every=EVERY))
    assert caplog.text.count("recomputing a damaged influence result") == len(METRICS)
    assert_same_influence(run, small["ref"])
    faults("corrupt-cache", len(METRICS), f"{how} of influence/<key>/scores.npy")


def test_one_damaged_influence_result_is_recomputed_alone(tmp_path, small, caplog):
    """Only the damaged metric is recomputed; alone (one u vector instead of two stacked) its
    scores agree with the original to float64 rounding, not bit for bit."""
    run = copy_run(small["ref"].root, small["run_id"], tmp_path / "store")
    n_params = run.read_npy("weights/final.npy").shape[0]
    rel = f"influence/{EstimateOptions().key('all', n_params)}/scores.npy"
    other = f"influence/{EstimateOptions().key('dloss', n_params)}/scores.npy"
    corrupt(run.path(rel), "flip")
    with caplog.at_level(logging.WARNING, logger="influence"):
        estimate(run, METRICS, EstimateOptions(checkpoint_every=EVERY))
    assert "recomputing a damaged influence result" in caplog.text
    assert run.read_bytes(other) == small["ref"].read_bytes(other)  # untouched
    got, want = run.read_npy(rel), small["ref"].read_npy(rel)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12 * np.abs(want).max())
    print(f"\nREBUILT-ALONE max relative difference {np.max(np.abs(got - want)) / np.abs(want).max():.2e}")
    faults("corrupt-cache", 1, "flip of one metric's scores.npy (recomputed alone)")


@pytest.mark.parametrize("how", ["truncate", "flip"])
def test_damaged_backward_checkpoint_is_ignored_and_the_pass_equals_the_original(tmp_path, small, caplog, how):
    run = copy_run(small["root"], small["run_id"], tmp_path / "store")
    token = CancelToken()

    def stop_after(p):
        if p.done >= 5:
            token.set()

    with pytest.raises(Cancelled):
        estimate(run, METRICS, EstimateOptions(checkpoint_every=EVERY), progress=stop_after, cancel=token)
    partial = [r for r in run.manifest() if r.startswith("influence/_partial/") and r.endswith("state.pt")]
    assert len(partial) == 1
    corrupt(run.path(partial[0]), how)
    with caplog.at_level(logging.WARNING, logger="influence"):
        estimate(run, METRICS, EstimateOptions(checkpoint_every=EVERY))
    assert "ignoring the influence pass checkpoint" in caplog.text
    assert_same_influence(run, small["ref"])
    faults("corrupt-cache", 1, f"{how} of the backward-pass checkpoint")


@pytest.mark.parametrize("how", ["truncate", "flip"])
def test_damaged_training_checkpoint_is_ignored_and_training_equals_the_original(tmp_path, small, caplog, how):
    cfg, root = small_config(), tmp_path / "store"
    token = CancelToken()

    def stop_in_epoch_2(p):
        if p.done > PER_EPOCH:
            token.set()

    with pytest.raises(Cancelled):
        train(cfg, root, progress=stop_in_epoch_2, cancel=token)
    run = store.open_run(root, cfg.run_id)
    assert int(run.read_state_dict("checkpoint/state.pt")["epoch"]) == 1
    corrupt(run.path("checkpoint/state.pt"), how)
    with caplog.at_level(logging.WARNING, logger="influence"):
        train(cfg, root)
    assert "ignoring the training checkpoint" in caplog.text
    assert_same_training(run, small["trained"])
    faults("corrupt-cache", 1, f"{how} of checkpoint/state.pt")


@pytest.mark.parametrize("how", ["truncate", "flip"])
def test_damaged_leave_one_out_partial_is_recomputed_identically(tmp_path, small, how):
    from influence.validation import leave_one_out

    run = copy_run(small["ref"].root, small["run_id"], tmp_path / "store")
    ids = np.array([3, 17, 101])
    actual, _, _ = leave_one_out(run, ["all"], ids)
    rel = next(r for r in run.manifest() if r.startswith("validate/_partial/"))
    corrupt(run.path(rel), how)
    again, _, _ = leave_one_out(run, ["all"], ids)
    assert np.array_equal(actual, again)
    assert run.read_json(rel)  # rewritten whole
    faults("corrupt-cache", 1, f"{how} of the leave-one-out partial")


# ---------------------------------------------------------------- divergence
def test_training_divergence_fails_the_job_naming_the_step_and_keeps_the_epoch_checkpoint(tmp_path):
    cfg = small_config(lr_schedule=((2, 1e200, 1e200),))  # epoch 2 blows up
    root = tmp_path / "store"
    spec = {"kind": "train", "params": {"config": cfg.to_dict()}}
    with pytest.raises(DivergenceError, match=r"training diverged at step \d+"):
        jobs.run_job(root, spec)
    status = jobs.read_status(root, jobs.job_key(spec))
    assert status["state"] == "failed"
    step = int(status["message"].split("step ")[1].split(":")[0])
    assert PER_EPOCH <= step < 2 * PER_EPOCH and "NaN or infinite" in status["message"]
    run = store.open_run(root, cfg.run_id)
    state = run.read_state_dict("checkpoint/state.pt")  # verified against the manifest
    assert int(state["epoch"]) == 1 and torch.isfinite(state["state"]).all()
    assert not run.exists("summary.json") and not run.exists("weights/final.npy")
    faults("divergence", 1, "training runs with an exploding learning rate")


def test_influence_divergence_fails_the_job_keeps_the_last_checkpoint_and_resumes(tmp_path, small, monkeypatch):
    from influence.estimator import backward as est

    run = copy_run(small["root"], small["run_id"], tmp_path / "store")
    spec = estimate_spec(run.run_id)
    real = est.backward_step
    bad_t = 12 - 5  # the 5th step of the pass (traced steps 11..0)
    firsts = []

    def poisoned(ctx, trace, t, state, adjoint, frozen=False):
        adjoint, terms = real(ctx, trace, t, state, adjoint, frozen)
        return ([adjoint[0] * float("nan")] + adjoint[1:], terms) if t == bad_t else (adjoint, terms)

    monkeypatch.setattr(est, "backward_step", poisoned)
    with pytest.raises(DivergenceError, match=f"influence pass diverged at traced step {bad_t}"):
        jobs.run_job(tmp_path / "store", spec)
    status = jobs.read_status(tmp_path / "store", jobs.job_key(spec))
    assert status["state"] == "failed" and f"traced step {bad_t}" in status["message"]
    partial = [r for r in run.manifest() if r.startswith("influence/_partial/") and r.endswith("state.pt")]
    assert len(partial) == 1 and int(run.read_state_dict(partial[0])["t_next"]) == 12 - EVERY - 1
    assert all(np.isfinite(run.read_state_dict(partial[0])["adjoint_0"].numpy()).ravel())
    monkeypatch.setattr(est, "backward_step", real)
    jobs.run_job(tmp_path / "store", spec, progress=lambda p: firsts.append(p.done) if p.stage == "influence" else None)
    assert firsts[0] == EVERY + 1  # resumed from the last good checkpoint
    assert jobs.read_status(tmp_path / "store", jobs.job_key(spec))["state"] == "done"
    assert_same_influence(run, small["ref"])
    faults("divergence", 1, "influence passes with a NaN injected at step 5")


# ---------------------------------------------------------------- disk full
def disk_full(monkeypatch, when=lambda path: True) -> list[str]:
    """store's low-level write fails with ENOSPC (after writing half) for the temp files `when` accepts."""
    real, failed = store._write_file, []

    def write(fd, data):
        name = os.readlink(f"/proc/self/fd/{fd}")
        if not when(name):
            return real(fd, data)
        failed.append(name)
        os.write(fd, data[: len(data) // 2])
        os.close(fd)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(store, "_write_file", write)
    return failed


def test_disk_full_during_estimate_is_a_clear_error_and_changes_nothing(tmp_path, small, capsys, monkeypatch):
    root = tmp_path / "store"
    run = copy_run(small["ref"].root, small["run_id"], root)
    before = files(run.dir)
    failed = disk_full(monkeypatch, lambda path: path.startswith(str(run.dir)))  # the job's status still writes
    argv = ["--store", str(root), "estimate", "--run", run.run_id, "--metric", "all", "--damping", "0.01", "--json"]
    code = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and failed
    assert err.startswith("error: cannot write") and "No space left on device" in err
    assert "earlier results are unchanged" in err and "\n" not in err
    assert files(run.dir) == before and not temp_files(root)
    spec = specs.estimate_spec(run.run_id, ["all"], EstimateOptions(damping=0.01), "auto")  # the CLI checks by default
    status = jobs.read_status(root, jobs.job_key(spec))
    assert status["state"] == "failed" and "No space left on device" in status["message"]  # what the app shows
    monkeypatch.undo()
    assert run.read_npy("influence/" + EstimateOptions().key("all", run.read_npy("weights/final.npy").shape[0])
                        + "/scores.npy").shape == (600,)
    faults("disk-full", 1, "ENOSPC on every write of an influence job (CLI)")


@pytest.mark.parametrize("when", ["running", "done"])
def test_a_full_disk_that_also_stops_the_status_writes_still_shows_the_job_failed(tmp_path, small, monkeypatch, when):
    """Issue 23.14: once the job runs (or has just finished), every new file fails with ENOSPC, the job's own
    status writes too. Its last state goes into blocks reserved at its start: "failed" with the reason, not
    "interrupted" (before the fix)."""
    root = tmp_path / "store"
    run = copy_run(small["root"], small["run_id"], root)
    spec = estimate_spec(run.run_id)
    full: list[bool] = []
    failed = disk_full(monkeypatch, lambda path: bool(full))
    real = jobs.execute

    def execute(*a, **k):
        if when == "running":
            full.append(True)
        result = real(*a, **k)
        full.append(True)
        return result

    monkeypatch.setattr(jobs, "execute", execute)
    if when == "running":
        with pytest.raises(StoreError, match="No space left on device"):
            jobs.run_job(root, spec)
    else:
        jobs.run_job(root, spec)
    assert failed
    status = jobs.read_status(root, jobs.job_key(spec))
    assert status["state"] == "failed" and "No space left on device" in status["message"], status
    assert not temp_files(root)
    monkeypatch.undo()
    assert jobs.run_job(root, spec) is not None  # space again: the job runs (and resumes) as usual
    assert jobs.read_status(root, jobs.job_key(spec))["state"] == "done"
    faults("disk-full", 1, f"ENOSPC on every new file, job status included, while the job is {when}")


@pytest.mark.parametrize("what", ["checkpoint", "manifest"])
def test_disk_full_at_the_epoch_2_checkpoint_keeps_epoch_1_and_training_resumes(tmp_path, small, monkeypatch, what):
    """The checkpoint write fails, or only the manifest update after it: either way the epoch-1
    checkpoint and its manifest entry stay as they were, and a later run resumes from them."""
    cfg, root = small_config(), tmp_path / "store"
    saved = []

    def when(path):
        name = os.path.basename(path)
        if name.startswith(".state.pt."):
            saved.append(name)
        return len(saved) >= 2 and name.startswith(".state.pt." if what == "checkpoint" else ".manifest.json.")

    failed = disk_full(monkeypatch, when)
    with pytest.raises(StoreError, match="No space left on device"):
        train(cfg, root)
    assert failed
    run = store.open_run(root, cfg.run_id)
    assert int(run.read_state_dict("checkpoint/state.pt")["epoch"]) == 1  # intact and verified
    assert not temp_files(root)
    monkeypatch.undo()
    firsts = []
    train(cfg, root, progress=lambda p: firsts.append(p.done))
    assert firsts[0] == PER_EPOCH + 1
    assert_same_training(run, small["trained"])
    faults("disk-full", 1, f"ENOSPC at the epoch-2 {what} write during training")


# ---------------------------------------------------------------- bad inputs: weights files, removal CSVs
def test_init_weights_must_be_a_regular_file_of_bounded_size(tmp_path, capsys):
    """Issue 23.6: model.init_g / init_d were read whatever they named: a FIFO hung the reader (the app's
    free-text field), /dev/zero would fill memory. Now one ConfigError line, without blocking or reading."""
    import threading

    from influence.config import MAX_INIT_BYTES, apply_overrides, preset
    from influence.errors import ConfigError
    from influence.pretrained import load_initial_weights

    fifo = tmp_path / "weights.pt"
    os.mkfifo(fifo)
    sparse = tmp_path / "huge.pt"
    with open(sparse, "wb") as f:
        f.truncate(MAX_INIT_BYTES + 1)  # sparse: no disk space, no memory
    cases = {fifo: "is not a regular file", "/dev/zero": "is not a regular file", tmp_path: "is not a regular file",
             sparse: f"more than the {MAX_INIT_BYTES >> 20} MiB", tmp_path / "missing.pt": "No such file"}
    for path, message in cases.items():
        outcome: list = []

        def configure():
            try:
                apply_overrides(preset("tiny"), [f"model.init_g={path}"])
            except ConfigError as e:
                outcome.append(str(e))

        worker = threading.Thread(target=configure, daemon=True)
        worker.start()
        worker.join(timeout=20)
        if worker.is_alive():  # unblock the hung open() before failing
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            pytest.fail(f"reading model.init_g={path} hung")
        assert outcome and message in outcome[0] and outcome[0].startswith("model.init_g: "), (path, outcome)
    # the file replaced by a FIFO after the run was configured: refused when the weights are loaded too
    from influence.config import ModelConfig

    with pytest.raises(ConfigError, match="model.init_d: .* is not a regular file"):
        load_initial_weights(ModelConfig(init_d=str(fifo), init_d_sha256="0" * 64), torch.nn.Linear(1, 1),
                             torch.nn.Linear(1, 1))
    assert cli.main(["--store", str(tmp_path / "store"), "train", "--preset", "tiny", "--init-g", "/dev/zero"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: model.init_g: '/dev/zero' is not a regular file (a folder, FIFO or device); give a .pt or " \
                  ".safetensors weights file"
    faults("bad-input", len(cases) + 2, "model.init_g/init_d paths that are not regular files or too large")


def test_a_removal_csv_is_parsed_in_memory_bounded_by_the_training_set():
    """Issue 23.7: every row was held as a list of strings (10 MB of CSV took 1.4 GB). Now rows stream: a valid
    file costs about its ids (before: 45x its size below), a long bad one stops at its first bad line."""
    import tracemalloc

    from influence.errors import ConfigError
    from influence.removal import read_removal_csv

    n = 50_000
    valid = "id\n" + "\n".join(str(i) for i in range(n - 1)) + "\n"
    endless = "\n".join(str(i % 1000) for i in range(300_000))  # 1 MB naming 1000 instances again and again
    tracemalloc.start()
    try:
        ids = read_removal_csv(valid, n)
        peak = tracemalloc.get_traced_memory()[1]
        assert ids == list(range(n - 1))
        assert peak < 8 * len(valid), f"{peak / len(valid):.0f}x the file"
        del ids
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        with pytest.raises(ConfigError, match="would remove every training instance"):
            read_removal_csv(endless, 1000)  # stops after 1000 rows
        assert tracemalloc.get_traced_memory()[1] - base < 2**20
        with pytest.raises(ConfigError, match="removal id 5 is listed more than once"):
            read_removal_csv("5\n" + endless, 10_000)
    finally:
        tracemalloc.stop()
    faults("bad-input", 3, "removal CSVs for the memory bound (50k valid ids, 1 MB of repeats twice)")
