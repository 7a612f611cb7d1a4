"""Traced SGD: determinism, the trace's contents, exact replay, resume after an interruption."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from influence import jobs, store
from influence.config import apply_overrides
from influence.context import RunContext, load_run_config
from influence.errors import Cancelled
from influence.progress import CancelToken
from influence.specs import estimate_spec
from influence.stepmap import step
from influence.train import Trace, replay, steps_per_epoch, trace_inputs, train

from _helpers import tiny_config, toy_config


def _small_mnist(seed: int = 0):
    return apply_overrides(tiny_config(seed), ["data.n_train=300", "eval.metrics_every_epoch=false"])


@pytest.mark.slow
def test_same_config_and_seed_train_identically_in_two_stores(tmp_path):
    a = train(_small_mnist(0), tmp_path / "a")
    b = train(_small_mnist(0), tmp_path / "b")
    c = train(_small_mnist(1), tmp_path / "c")
    wa, wb, wc = (r.read_npy("weights/final.npy") for r in (a, b, c))
    assert np.array_equal(wa, wb)
    for name in ("states", "batches", "z", "lrs", "kinds", "counts"):
        assert np.array_equal(a.read_npy(f"trace/{name}.npy"), b.read_npy(f"trace/{name}.npy"))
    assert a.read_json("summary.json")["test"] == b.read_json("summary.json")["test"]
    assert wa.shape == wc.shape and np.abs(wa - wc).max() > 1e-3
    # Trained again in the same store: the finished run is reused, not retrained.
    mtime = a.path("weights/final.npy").stat().st_mtime_ns
    assert train(_small_mnist(0), tmp_path / "a").run_id == a.run_id
    assert a.path("weights/final.npy").stat().st_mtime_ns == mtime


def _replay_error(run: store.Run) -> float:
    cfg = load_run_config(run)
    ctx = RunContext.create(cfg, run.root)
    trace = Trace.load(run)
    d, g = replay(ctx, trace)
    return float(np.abs(torch.cat([d, g]).cpu().numpy() - np.asarray(trace.final)).max())


def test_replay_without_removal_reproduces_the_tiny_run(tiny_run):
    assert _replay_error(tiny_run) <= 1e-6


def test_replay_without_removal_reproduces_the_toy_run(toy_run):
    assert _replay_error(toy_run) <= 1e-6


def test_trace_layout_of_the_toy_run(toy_run):
    cfg = load_run_config(toy_run)
    trace = Trace.load(toy_run)
    n, B = cfg.data.n_train, cfg.train.batch_size
    per_epoch = steps_per_epoch(n, B)
    assert trace.steps == per_epoch * cfg.train.trace_epochs == 20
    assert trace.first_step == per_epoch * (cfg.train.epochs - 1)
    assert trace.states.shape == (20, trace.final.shape[0]) and trace.states.dtype == np.float64  # SGD: theta only
    assert trace.z.shape == (20, B, cfg.model.z_dim)
    # The traced (last) epoch runs at the schedule's lr and visits every instance exactly once.
    assert np.all(trace.lrs == np.array(cfg.lr_at_epoch(cfg.train.epochs)))
    ids = np.concatenate([trace.batch(t) for t in range(trace.steps)])
    assert np.array_equal(np.sort(ids), np.arange(n))
    where = trace.step_of_instance(n)
    assert all(j in trace.batch(where[j]) for j in (0, 17, n - 1))
    # states[t+1] is one simultaneous SGD step from states[t].
    ctx = RunContext.create(cfg, toy_run.root)
    for t in (0, 7):
        state = trace.layout.split(torch.from_numpy(np.array(trace.states[t])))
        new, _, _ = step(ctx.gan, ctx.rule, state, trace_inputs(ctx, trace, t))
        assert torch.equal(new.flat(), torch.from_numpy(np.array(trace.states[t + 1])))
        lr_d, lr_g = trace.lrs[t]
        b = torch.as_tensor(trace.batch(t))
        g_d, g_g, _, _ = ctx.gan.step_gradients(state.theta_d.clone().requires_grad_(True),
                                                state.theta_g.clone().requires_grad_(True), ctx.train_x[b],
                                                torch.from_numpy(np.array(trace.z[t])), torch.ones(len(b), dtype=torch.float64))
        assert torch.equal(new.theta_d, state.theta_d - lr_d * g_d) and torch.equal(new.theta_g, state.theta_g - lr_g * g_g)


def test_trace_steps_records_only_the_last_steps_and_short_batches_are_padded(tmp_path):
    cfg = apply_overrides(toy_config(), ["data.n_train=250", "train.trace_steps=4"])  # 3 steps/epoch, last one of 50
    run = train(cfg, tmp_path)
    trace = Trace.load(run)
    assert trace.steps == 4 and trace.first_step == 9 - 4
    assert [len(trace.batch(t)) for t in range(4)] == [50, 100, 100, 50]
    assert (trace.batches[0][50:] == -1).all() and (trace.batches[3][50:] == -1).all()
    # lr of each step follows the epoch it belongs to: step 5 is in epoch 2 (lr 0.01), 6.. in epoch 3 (0.001)
    assert trace.lrs.tolist() == [[0.01, 0.01]] + [[0.001, 0.001]] * 3
    assert _replay_error(run) <= 1e-12


def test_replay_from_an_instances_first_step_equals_replay_from_the_start(toy_run):
    """leave_one_out starts replays at the instance's first traced step; that must change nothing."""
    cfg = load_run_config(toy_run)
    ctx = RunContext.create(cfg, toy_run.root)
    trace = Trace.load(toy_run)
    where = trace.step_of_instance(cfg.data.n_train)
    j = int(np.flatnonzero(where == 12)[0])
    d0, g0 = replay(ctx, trace, [j])
    d1, g1 = replay(ctx, trace, [j], start=12)
    assert torch.equal(d0, d1) and torch.equal(g0, g1)
    # and removing it changes the result
    df, gf = trace.split(torch.from_numpy(np.array(trace.final)))
    assert (d0 - df).abs().max() > 0 and (g0 - gf).abs().max() > 0


def test_interrupted_training_resumes_to_the_same_result(tmp_path):
    cfg = toy_config(seed=4)
    token = CancelToken()

    def stop_in_epoch_2(p):
        if p.stage == "train" and p.done == 25:  # 20 steps per epoch: stops inside epoch 2
            token.set()

    with pytest.raises(Cancelled):
        train(cfg, tmp_path / "a", progress=stop_in_epoch_2, cancel=token)
    run = store.Run(tmp_path / "a", cfg.run_id)
    assert run.exists("checkpoint/state.pt") and not run.exists("summary.json")
    assert int(run.read_state_dict("checkpoint/state.pt")["epoch"]) == 1  # epoch 2 was cut short
    # temp files of writes a kill -9 interrupted (the rename never came), named as mkstemp names them
    stale = [run.dir / "grids" / ".epoch_001.npy.k1ll3d00.tmp", run.dir / ".manifest.json.k1ll3d00.tmp",
             run.dir / "checkpoint" / ".state.pt.k1ll3d00.tmp"]
    for p in stale:
        p.write_bytes(b"half a file")
    resumed = train(cfg, tmp_path / "a")
    assert not list(resumed.dir.rglob("*.tmp"))  # the finished run is clean
    fresh = train(cfg, tmp_path / "b")
    assert np.array_equal(resumed.read_npy("weights/final.npy"), fresh.read_npy("weights/final.npy"))
    assert np.array_equal(resumed.read_npy("trace/states.npy"), fresh.read_npy("trace/states.npy"))
    assert not list(resumed.path("checkpoint").glob("*"))  # checkpoint cleared once finished


def _test_metrics(run: store.Run) -> dict:
    ctx = RunContext.create(load_run_config(run), run.root)
    theta_d, theta_g = (torch.from_numpy(np.array(a)).to(ctx.device, ctx.dtype) for a in Trace.load(run).final_eval())
    return ctx.evaluator("test").evaluate(theta_d, theta_g, ("fid", "is"))


def test_a_run_keeps_the_feature_net_its_metrics_came_from(tiny_run, tmp_path, monkeypatch):
    """An own-images run measured FID 92.96 when trained and 92.82 in the app's worker, whose cache held an
    autoencoder trained at another thread count: a finished run now evaluates with its own copy, in a job too."""
    import shutil

    from influence.classifier import PINNED, PINNED_INFO
    from influence.honesty import compute_report, reference_line

    assert tiny_run.exists(PINNED)
    reported = tiny_run.read_json("summary.json")["test"]
    cache = tmp_path / "cache"
    shutil.copytree(store.cache_dir(), cache)
    gen = torch.Generator().manual_seed(0)
    for f in cache.glob("classifier-*.pt"):  # the cache now holds another classifier
        other = {k: v + 0.05 * torch.randn(v.shape, generator=gen, dtype=v.dtype) if v.is_floating_point() else v
                 for k, v in store.load_state_dict(f).items()}
        store.save_state_dict(f, other)
    for f in cache.glob("classifier-*.json"):  # and its record
        store.write_json(f, {**store.read_json(f), "test_accuracy": 0.11})
    monkeypatch.setenv(store.ENV_CACHE, str(cache))
    got = _test_metrics(tiny_run)
    assert got["fid"] == pytest.approx(reported["fid"], rel=1e-12) and got["is"] == pytest.approx(reported["is"], rel=1e-12)
    # the metric report describes the run's own net (its record kept beside it), not the cache's
    kept = tiny_run.read_json(PINNED_INFO)["test_accuracy"]
    assert kept > 0.9 and compute_report(RunContext.create(load_run_config(tiny_run), tiny_run.root))["features"][
        "test_accuracy"] == kept
    # A run from before the record was kept: its copy is measured now; the cache's record (0.11) describes another net.
    old = store.open_run(shutil.copytree(tiny_run.root, tmp_path / "old"), tiny_run.run_id)
    old.forget(PINNED_INFO)
    (old.dir / PINNED_INFO).unlink()
    report = compute_report(RunContext.create(load_run_config(old), old.root))
    assert report["features"]["test_accuracy"] == kept and report["features"]["measured_now"]
    assert "measured on the run's copy of the net" in reference_line(report)
    # Without its copy (runs trained before it was kept) the run is measured with whatever the cache holds.
    bare = store.open_run(shutil.copytree(tiny_run.root, tmp_path / "bare"), tiny_run.run_id)
    bare.forget(PINNED)
    (bare.dir / PINNED).unlink()
    assert _test_metrics(bare)["fid"] != pytest.approx(reported["fid"], rel=1e-6)
    # A job (the app's and the CLI's path) loads the feature net once at its start for all its contexts: the run's
    # copy too. It took the cache's, so every job on a moved run measured with another net (or trained one).
    spec = estimate_spec(tiny_run.run_id, ["fid"])
    with jobs._started_up(tiny_run.root, spec, None, CancelToken()):
        assert _test_metrics(tiny_run)["fid"] == pytest.approx(reported["fid"], rel=1e-12)
    for f in cache.glob("classifier-*"):
        f.unlink()  # a cache without the net: the job loads the run's copy and trains none
    with jobs._started_up(tiny_run.root, spec, None, CancelToken()):
        assert _test_metrics(tiny_run)["fid"] == pytest.approx(reported["fid"], rel=1e-12)
    assert not list(cache.glob("classifier-*"))


def test_trace_storage_takes_snapshots_up_to_the_budget_and_checkpoints_over_it():
    from influence.stepmap import trace_storage

    mb = 2**20
    # 99 traced steps: 100 states of 1 MB and 99 steps' inputs of 1/99 MB = 101 MB as snapshots
    fits = trace_storage(99, "auto", None, mb, mb // 99 + 1, 102)
    over = trace_storage(99, "auto", None, mb, mb // 99 + 1, 100)
    assert (fits.mode, fits.every) == ("snapshots", 1) and "within the 102 MB budget" in fits.reason
    assert over.mode == "checkpoints" and over.every == 99 and "over the 100 MB budget" in over.reason
    assert trace_storage(99, "snapshots", None, mb, 0, 1).mode == "snapshots"  # as configured, whatever the budget
    assert trace_storage(99, "checkpoints", 7, mb, 0, 10**6).every == 7


def test_trace_mode_auto_chooses_by_the_budget_and_both_give_the_same_estimate(tmp_path):
    from influence.estimator import EstimateOptions, estimate

    cfg = toy_config(seed=5)  # 20 traced steps of a float64 state: about 1.1 MB as snapshots
    small = apply_overrides(cfg, ["train.trace_budget_mb=1"])
    assert small.run_id == cfg.run_id  # the storage is no part of what a run is
    a, b = train(cfg, tmp_path / "a"), train(small, tmp_path / "b")
    meta_a, meta_b = a.read_json("trace/meta.json"), b.read_json("trace/meta.json")
    assert meta_a["trace_mode"] == "snapshots" and "within the 1024 MB budget" in meta_a["trace_mode_reason"]
    assert meta_b["trace_mode"] == "checkpoints" and "over the 1 MB budget" in meta_b["trace_mode_reason"]
    assert meta_b["checkpoint_every"] > 1 and len(b.read_npy("trace/stored_steps.npy")) < 20
    assert b.read_json("summary.json")["trace_storage"]["trace_mode"] == "checkpoints"
    assert np.array_equal(a.read_npy("trace/final_state.npy"), b.read_npy("trace/final_state.npy"))
    sa, sb = (estimate(r, ["all"], EstimateOptions())["all"] for r in (a, b))
    assert np.array_equal(sa.scores, sb.scores) and sa.meta["growth"] == sb.meta["growth"]
