"""The execution layer on a real Dask LocalCluster (2 workers x 1 thread on 127.0.0.1), reached as an
existing scheduler through GAN_INFLUENCE_CLUSTER: results equal the local path bit for bit, a killed
worker's tasks are retried, cancelling stops the remaining tasks."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
import time

import dask
import numpy as np
import pandas as pd
import pytest
import torch

from influence import allocator, store
from influence.context import RunContext, load_run_config
from influence.errors import Cancelled
from influence.execution import ENV_CLUSTER, HOUSEKEEPING, environ_kept, open_executor
from influence.execution.payload import run_payload, segment_offset, trace_segment
from influence.progress import CancelToken
from influence.train import Trace, replay
from influence.validation import leave_one_out, sweep, validate
from influence.validation.spotcheck import spot_check

from _helpers import copy_run, toy_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    with environ_kept(), LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                      dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR) as c:
        yield c


@pytest.fixture
def on_cluster(cluster, monkeypatch):
    monkeypatch.setenv(ENV_CLUSTER, cluster.scheduler_address)
    return cluster


def _local(fn):
    """Run fn with no cluster configured (in this process)."""
    address = os.environ.pop(ENV_CLUSTER, None)
    try:
        return fn()
    finally:
        if address is not None:
            os.environ[ENV_CLUSTER] = address


def test_a_local_cluster_leaves_this_process_environment_as_it_was(monkeypatch):
    """Dask's nannies set OMP/MKL_NUM_THREADS=1 in os.environ; left there, processes spawned later (job
    workers, the reliability tests' workers) ran MKL on 1 thread and differed in their last bits."""
    monkeypatch.delenv(ENV_CLUSTER, raising=False)
    before = dict(os.environ)
    with open_executor(tasks=100, workers=2) as executor:
        assert executor.client is not None  # a real LocalCluster of 2 workers
        # Dask's default 64 KiB malloc trim threshold made torch 2.5x slower on the workers: they get the
        # engine's allocator settings instead, and Dask's housekeeping is quieter
        settings = executor.client.run(lambda: {k: os.environ.get(k) for k in allocator.SETTINGS})
        assert list(settings.values()) == [allocator.SETTINGS] * 2
        housekeeping = executor.client.run(lambda: {k: dask.config.get(k) for k in HOUSEKEEPING})
        assert list(housekeeping.values()) == [HOUSEKEEPING] * 2
    assert dict(os.environ) == before


def test_trace_segment_replays_like_the_whole_trace(toy_run):
    trace = Trace.load(toy_run)
    seg = trace_segment(trace, 7)
    assert seg.steps == trace.steps - 7 and seg.first_step == trace.first_step + 7
    assert np.array_equal(seg.batches, trace.batches[7:]) and np.array_equal(seg.states[0], trace.states[7])
    assert np.array_equal(seg.final_state, trace.final_state)


def test_leave_one_out_on_the_cluster_equals_the_local_path(toy_run, tmp_path, on_cluster):
    ids = np.arange(0, 2000, 125)
    here, _, _ = _local(lambda: leave_one_out(copy_run(toy_run, tmp_path / "a"), ["all", "dloss"], ids, lanes=1))
    reports = []
    there, _, _ = leave_one_out(copy_run(toy_run, tmp_path / "b"), ["all", "dloss"], ids, progress=reports.append,
                                lanes=1)
    assert np.array_equal(here, there)
    done = [p.done for p in reports]  # replays done, counted also inside a task, on one bar
    assert done == sorted(done) and done[-1] == reports[-1].total == 16 and 1 in done
    # batched lanes: a task is a chunk of 4 lanes with its own lane 0, bit for bit the same on a worker
    here, _, _ = _local(lambda: leave_one_out(copy_run(toy_run, tmp_path / "c"), ["all"], ids, lanes=4))
    there, _, _ = leave_one_out(copy_run(toy_run, tmp_path / "d"), ["all"], ids, lanes=4)
    assert np.array_equal(here, there)


def test_a_spot_check_on_the_cluster_equals_the_local_path_under_one_bar(toy_run, tmp_path, on_cluster):
    """The workers' reports carry their task's place, so concurrent tasks add up to one bar that never goes back."""
    here = _local(lambda: spot_check(copy_run(toy_run, tmp_path / "a"), ["all"], level="quick", lanes=1))
    reports = []
    there = spot_check(copy_run(toy_run, tmp_path / "b"), ["all"], level="quick", lanes=1, progress=reports.append)
    assert there["per_metric"] == here["per_metric"]
    bar = [p for p in reports if p.stage == "spot check"]
    assert [p.done for p in bar] == sorted(p.done for p in bar) and bar[-1].done == bar[-1].total


def test_a_worker_killed_during_validate_is_retried_with_the_same_result(toy_run, tmp_path, on_cluster):
    here = _local(lambda: validate(copy_run(toy_run, tmp_path / "a"), ["all"], n=48)["all"])
    from distributed import Client

    with Client(on_cluster.scheduler_address) as client:
        pids = list(client.run(os.getpid).values())
    killed = threading.Event()

    def kill_once(p):
        if p.stage == "leave-one-out" and p.done >= 4 and not killed.is_set():
            killed.set()
            os.kill(pids[0], signal.SIGKILL)

    there = validate(copy_run(toy_run, tmp_path / "b"), ["all"], n=48, progress=kill_once)["all"]
    assert killed.is_set()
    assert np.array_equal(here.actual, there.actual) and there.kendall_tau == here.kendall_tau


def test_cancel_stops_the_remaining_tasks(toy_run, tmp_path, on_cluster):
    run = copy_run(toy_run, tmp_path)
    token = CancelToken()

    def cancel_after_a_few(p):
        if p.done >= 3:
            token.set()

    with pytest.raises(Cancelled):
        leave_one_out(run, ["all"], np.arange(0, 2000, 25), progress=cancel_after_a_few, cancel=token, lanes=1)
    from distributed import Client

    with Client(on_cluster.scheduler_address) as client:
        deadline = time.monotonic() + 30
        while any(client.processing().values()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(client.processing().values())  # nothing left running or queued on the workers
        assert client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)) == 0


def test_a_sweep_on_the_cluster_equals_the_local_path(tmp_path, on_cluster):
    configs = [toy_config(seed=s) for s in (0, 1)]
    args = (["all", "random"], [20, 200])
    local = _local(lambda: sweep(configs, tmp_path / "a", *args, metric="all"))
    reports = []  # seeds trained and cleansed on the workers, their progress forwarded
    remote = sweep(configs, tmp_path / "b", *args, metric="all", progress=reports.append)
    assert {"train", "influence", "replay"} <= {p.stage for p in reports}
    assert all("seed " in p.info["sweep"] for p in reports if p.stage != "sweep")
    pd.testing.assert_frame_equal(local, remote)
    rows = [pd.read_csv(next((tmp_path / s / "_sweeps").glob("*/per_run.csv"))) for s in ("a", "b")]
    pd.testing.assert_frame_equal(rows[0], rows[1])
    # the runs came back to the client's store, complete and verified
    for c in configs:
        a, b = (Trace.load(store.open_run(tmp_path / s, c.run_id)) for s in ("a", "b"))
        assert np.array_equal(a.states, b.states) and np.array_equal(a.final_state, b.final_state)


def test_a_sweep_stopped_on_the_cluster_resumes_from_the_checkpoint_it_sent(tmp_path, on_cluster):
    """Training checkpoints travel to the client as the workers write them: finished epochs are kept."""
    configs = [dataclasses.replace(c, train=dataclasses.replace(c.train, epochs=8))
               for c in (toy_config(seed=s) for s in (0, 1))]
    args = (["random"], [20])
    token, seen = CancelToken(), []

    def stop_at_first_checkpoint(p):
        if any(store.Run(tmp_path / "b", c.run_id).exists("checkpoint/state.pt") for c in configs):
            seen.append(p)
            token.set()

    with pytest.raises(Cancelled):
        sweep(configs, tmp_path / "b", *args, metric="all", progress=stop_at_first_checkpoint, cancel=token)
    assert seen
    kept = [c for c in configs if store.Run(tmp_path / "b", c.run_id).exists("checkpoint/state.pt")]
    assert kept
    for c in kept:  # verified against the manifest, resumable
        assert store.Run(tmp_path / "b", c.run_id).read_state_dict("checkpoint/state.pt")["epoch"] >= 1
    resumed = sweep(configs, tmp_path / "b", *args, metric="all")
    local = _local(lambda: sweep(configs, tmp_path / "a", *args, metric="all"))
    pd.testing.assert_frame_equal(local, resumed)


def test_an_unreachable_scheduler_is_one_clear_error(monkeypatch):
    import influence.execution
    from influence.errors import ConfigError

    monkeypatch.setattr(influence.execution, "CONNECT_TIMEOUT", "1s")  # the error, not the wait, is tested
    with pytest.raises(ConfigError, match="cannot reach the Dask scheduler"):
        with open_executor(10, address="tcp://127.0.0.1:9"):
            pass


def test_a_payload_context_replays_an_image_run_bit_for_bit(tiny_run):
    """Workers rebuild the training tensor from shipped rows: it must keep the client's memory layout too
    (a 1-channel batch with channels-last strides takes another convolution path, other last bits)."""
    ctx, trace = RunContext.create(load_run_config(tiny_run), tiny_run.root), Trace.load(tiny_run)
    j = int(trace.batch(trace.steps // 2)[0])
    first = int(trace.step_of_instance(ctx.dataset.n_train)[j])
    payload = run_payload(ctx, tiny_run, trace_segment(trace, first), ("valid",))
    here = replay(ctx, trace, [j], start=first)
    there = replay(payload.context(), payload.segment, [j], start=first - segment_offset(trace, first))
    assert all(torch.equal(a, b) for a, b in zip(here, there))


def test_a_payload_carries_the_real_statistics_the_client_has(tiny_run):
    """Leave-one-out's baseline computes the validation statistics on the client: workers take them from
    the payload instead of spending a replay's time on them, and evaluate as if they had computed them."""
    ctx, trace = RunContext.create(load_run_config(tiny_run), tiny_run.root), Trace.load(tiny_run)
    assert run_payload(ctx, tiny_run, trace_segment(trace, 0), ("valid",)).real_stats == {}  # none yet: workers compute
    here = ctx.evaluator("valid")
    there = run_payload(ctx, tiny_run, trace_segment(trace, 0), ("valid",)).context().evaluator("valid")
    fresh = RunContext.create(load_run_config(tiny_run), tiny_run.root).evaluator("valid")  # computed anew
    assert all(torch.equal(getattr(there.real_stats, f), getattr(fresh.real_stats, f)) for f in ("mu", "sigma", "sigma_sqrt"))
    final_d, final_g = (torch.from_numpy(a) for a in trace.final_eval())
    assert there.evaluate(final_d, final_g) == here.evaluate(final_d, final_g)
