"""ASGD-Influence: estimates against actual counterfactual replays, the backward step against finite
differences and naive per-instance loops, caching, multi-metric passes, diagnostics."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from influence import store
from influence.config import apply_overrides
from influence.context import RunContext, load_run_config
from influence.errors import Cancelled, ConfigError
from influence.estimator import (
    FLAG_DOUBTFUL,
    FLAG_NEVER_TRACED,
    FLAG_RELIABLE,
    FLAG_UNRELIABLE,
    EstimateOptions,
    backward_step,
    estimate,
    harmful_order,
    influence_table,
)
from influence.progress import CancelToken
from influence.stepmap import KIND_D, KIND_G
from influence.train import Trace, replay, trace_inputs, train

from _helpers import copy_run, tiny_config, toy_config

# ---------------------------------------------------------------- helpers


def _with_traced_lr(cfg, lr: float, **train_fields):
    """cfg whose last epoch (the traced one) runs at `lr`."""
    t = dataclasses.replace(cfg.train, lr_schedule=((cfg.train.epochs, lr, lr),), **train_fields)
    return dataclasses.replace(cfg, train=t)


def _actual(run: store.Run, metrics: tuple[str, ...], ids, eps: float = 1.0) -> dict[str, np.ndarray]:
    """(metric(replay with j at weight 1 - eps) - metric(original final)) / eps, on the validation split,
    by hand; eps = 1 is leave-one-out."""
    cfg = load_run_config(run)
    ctx = RunContext.create(cfg, run.root)
    trace = Trace.load(run)
    valid = ctx.evaluator("valid")
    fd, fg = (torch.from_numpy(a).to(ctx.dtype) for a in trace.final_eval())
    base = valid.evaluate(fd, fg, metrics)
    out = {m: [] for m in metrics}
    for j in ids:
        d, g = replay(ctx, trace, [int(j)], removed_weight=1.0 - eps)
        after = valid.evaluate(d, g, metrics)
        for m in metrics:
            out[m].append((after[m] - base[m]) / eps)
    return {m: np.array(v) for m, v in out.items()}


def _ctx_trace(run: store.Run, dtype: str = "float64"):
    cfg = load_run_config(run)
    return RunContext.create(cfg, run.root, dtype=dtype), Trace.load(run)


# ---------------------------------------------------------------- exactness on short traces
@pytest.fixture(scope="module")
def exact_toy(tmp_path_factory):
    """Toy float64 run whose last 2 steps are traced at lr 1e-4: the linearisation is nearly exact."""
    cfg = _with_traced_lr(toy_config(seed=2), 1e-4, trace_steps=2)
    run = train(cfg, tmp_path_factory.mktemp("exact_toy"))
    return run, estimate(run, ["all", "dloss"])


def test_estimate_equals_replay_difference_on_a_short_small_lr_trace(exact_toy):
    run, res = exact_toy
    trace = Trace.load(run)
    first, last = trace.batch(0), trace.batch(1)
    ids = np.concatenate([first, last])
    actual = _actual(run, ("all", "dloss"), ids)
    # D-loss depends on theta_D, which both steps move: every instance of both batches within 1%.
    est, act = res["dloss"].scores[ids], actual["dloss"]
    assert np.all(np.abs(act) > 1e-10)
    assert np.all(np.abs(est - act) <= 0.01 * np.abs(act))  # observed max 1.0e-4 relative
    assert np.all(np.sign(est) == np.sign(act))
    # ALL depends on G only. Removing j at the last step moves only theta_D (simultaneous SGD):
    # G is untouched, so both the actual and the estimated influence are exactly zero ...
    n = len(first)
    assert np.all(actual["all"][n:] == 0.0)
    assert np.all(res["all"].scores[last] == 0.0)
    # ... while instances of the step before reach G through D: within 1% (observed 2.5e-4).
    est, act = res["all"].scores[first], actual["all"][:n]
    assert np.all(np.abs(act) > 0)
    assert np.all(np.abs(est - act) <= 0.01 * np.abs(act))
    # instances outside the trace get no score and the never-traced flag
    others = np.setdiff1d(np.arange(2000), ids)
    assert np.all(res["dloss"].scores[others] == 0) and np.all(res["dloss"].flags[others] == FLAG_NEVER_TRACED)
    assert np.all(res["dloss"].flags[ids] == FLAG_RELIABLE)


@pytest.fixture(scope="module")
def exact_mnist(tmp_path_factory):
    """Tiny MNIST in float64, 200 images in batches of 50, the last 2 steps traced at lr 1e-4."""
    cfg = apply_overrides(tiny_config(), [
        "data.n_train=200", "train.batch_size=50", "train.dtype=float64", "train.trace_steps=2",
        "train.lr_schedule=2:0.0001:0.0001", "eval.metrics_every_epoch=false", "eval.n_valid_z=200",
        "eval.n_test_z=200",
    ])
    root = tmp_path_factory.mktemp("exact_mnist")
    run = train(cfg, root)
    return run, estimate(run, ["fid", "is", "dloss"], EstimateOptions(dtype="float64"))


@pytest.mark.slow
def test_fid_is_dloss_estimates_equal_replay_differences_on_mnist(exact_mnist):
    run, res = exact_mnist
    trace = Trace.load(run)
    first, last = trace.batch(0)[:6], trace.batch(1)[:2]
    actual = _actual(run, ("fid", "is", "dloss"), np.concatenate([first, last]))
    for m in ("fid", "is", "dloss"):
        est, act = res[m].scores[first], actual[m][:6]
        assert np.all(np.abs(act) > 0), m
        # observed max relative error: FID 1.3e-4, IS 1.7e-4, D-loss 2.9e-4
        assert np.all(np.abs(est - act) <= 0.01 * np.abs(act)), (m, est, act)
    # last-step instances: FID and IS (functions of G) are exactly unaffected, D-loss is not
    for m in ("fid", "is"):
        assert np.all(actual[m][6:] == 0.0) and np.all(res[m].scores[last] == 0.0)
    est, act = res["dloss"].scores[last], actual["dloss"][6:]
    assert np.all(np.abs(est - act) <= 0.01 * np.abs(act))


# ---------------------------------------------------------------- the backward step
# (every optimizer, scheme and state block: tests/test_stepmap.py; here the paper's SGD step in detail)
def _state(ctx, trace, t):
    return trace.layout.split(torch.from_numpy(np.array(trace.states[t])).to(ctx.dtype))


def _g(ctx, td, tg, x, z, w):
    g_d, g_g, _, _ = ctx.gan.step_gradients(td.detach().requires_grad_(True), tg.detach().requires_grad_(True), x, z, w)
    return g_d.detach(), g_g.detach()


def _inputs(ctx, trace, t):
    inp = trace_inputs(ctx, trace, t)
    return inp.x, inp.z, inp.lr_d, inp.lr_g


@pytest.fixture(params=["toy", "mnist"])
def step_setup(request, toy_run, exact_mnist):
    """(ctx, trace, t): a fcgan step (ReLU) of the toy run and a smallcnn step of the float64 MNIST run."""
    if request.param == "toy":
        ctx, trace = _ctx_trace(toy_run)
        return ctx, trace, 5
    ctx, trace = _ctx_trace(exact_mnist[0])
    return ctx, trace, 0


def test_jacobian_transpose_products_match_central_differences(step_setup):
    ctx, trace, t = step_setup
    s = _state(ctx, trace, t)
    td, tg = s.theta_d, s.theta_g
    x, z, lr_d, lr_g = _inputs(ctx, trace, t)
    gen = torch.Generator().manual_seed(3)
    # three adjoints at once (the batched path): u_D alone, u_G alone, both
    U_d = torch.randn((3, *td.shape), generator=gen, dtype=torch.float64) * torch.tensor([1.0, 0, 1])[:, None]
    U_g = torch.randn((3, *tg.shape), generator=gen, dtype=torch.float64) * torch.tensor([0, 1.0, 1])[:, None]
    (jd, jg), _ = backward_step(ctx, trace, t, s, [U_d, U_g])
    w = torch.ones(x.shape[0], dtype=torch.float64)
    eps = 1e-6
    for v_block in ("D", "G"):
        v_d = torch.randn(td.shape, generator=gen, dtype=torch.float64) * (v_block == "D")
        v_g = torch.randn(tg.shape, generator=gen, dtype=torch.float64) * (v_block == "G")
        plus = _g(ctx, td + eps * v_d, tg + eps * v_g, x, z, w)
        minus = _g(ctx, td - eps * v_d, tg - eps * v_g, x, z, w)
        # the SGD step s' = s - Lambda g(s): its transpose is u - J^T Lambda u
        fd = U_d @ v_d + U_g @ v_g - (lr_d * U_d @ (plus[0] - minus[0]) + lr_g * U_g @ (plus[1] - minus[1])) / (2 * eps)
        vjp = jd @ v_d + jg @ v_g
        # u_D with v_G (and u_G with v_D) are the G<->D cross blocks of the step's Jacobian.
        for k, u_block in enumerate(("D", "G", "both")):
            assert abs(float(fd[k])) > 1e-8, (u_block, v_block)
            assert float(vjp[k]) == pytest.approx(float(fd[k]), rel=1e-5), (u_block, v_block)


def test_per_instance_terms_match_differences_in_w_and_a_naive_loop(step_setup):
    ctx, trace, t = step_setup
    s = _state(ctx, trace, t)
    td, tg = s.theta_d, s.theta_g
    x, z, lr_d, lr_g = _inputs(ctx, trace, t)
    B = x.shape[0]
    gen = torch.Generator().manual_seed(4)
    U_d = torch.randn((3, *td.shape), generator=gen, dtype=torch.float64)
    U_g = torch.randn((3, *tg.shape), generator=gen, dtype=torch.float64)
    _, jw = backward_step(ctx, trace, t, s, [U_d, U_g])  # three stacked u: the batched path
    assert jw.shape == (3, B)
    # naive: one autograd call per instance, (lr_D / B) <u_D, grad_D loss_real(x_j)>
    tdg = td.detach().requires_grad_(True)
    naive = torch.zeros(3, B, dtype=torch.float64)
    for j in range(B):
        (grad,) = torch.autograd.grad(ctx.gan.real_losses(tdg, x[j : j + 1]).sum(), tdg)
        naive[:, j] = lr_d / B * (U_d @ grad)
    assert torch.allclose(jw, naive, rtol=1e-6, atol=1e-6 * float(naive.abs().max()))
    # the batched path equals one single-u call per row
    for k in range(3):
        _, jw1 = backward_step(ctx, trace, t, s, [U_d[k : k + 1], U_g[k : k + 1]])
        assert torch.allclose(jw1[0], jw[k], rtol=1e-10, atol=1e-15)
    # central difference in w (g is linear in w, so it is exact up to rounding)
    w0 = torch.ones(B, dtype=torch.float64)
    for j in (0, B // 2, B - 1):
        e = torch.zeros(B, dtype=torch.float64)
        e[j] = 0.5
        plus, minus = _g(ctx, td, tg, x, z, w0 + e), _g(ctx, td, tg, x, z, w0 - e)
        fd = (lr_d * U_d[0] @ (plus[0] - minus[0]) + lr_g * U_g[0] @ (plus[1] - minus[1])) / 1.0
        assert float(jw[0, j]) == pytest.approx(float(fd), rel=1e-6)


def test_rows_in_chunks_equal_all_rows_in_one_product(step_setup, monkeypatch):
    """`rows_per_product` splits the stacked rows into several products; the rows come back in order and equal
    the one-product result to rounding (the mnist setup is a conv net: on the CPU its rows go 8 at a time)."""
    from influence.estimator import backward

    ctx, trace, t = step_setup
    s = _state(ctx, trace, t)
    gen = torch.Generator().manual_seed(5)
    adjoint = [torch.randn(7, n, generator=gen, dtype=torch.float64) for n in trace.layout.sizes]
    assert backward.rows_per_product(ctx.device, ctx.cfg.model.arch) == (None if ctx.cfg.model.arch == "fcgan" else 8)
    monkeypatch.setattr(backward, "rows_per_product", lambda device, arch: None)
    whole, jw_whole = backward_step(ctx, trace, t, s, adjoint)
    monkeypatch.setattr(backward, "rows_per_product", lambda device, arch: 3)
    chunked, jw_chunked = backward_step(ctx, trace, t, s, adjoint)
    for a, b in zip(whole, chunked):
        assert a.shape == b.shape == (7, a.shape[1])
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14 * float(a.abs().max()))
    assert torch.allclose(jw_whole, jw_chunked, rtol=1e-12, atol=1e-14 * float(jw_whole.abs().max()))


# ---------------------------------------------------------------- passes and caching
def test_multi_metric_pass_equals_single_metric_passes(exact_mnist):
    run, joint = exact_mnist  # fid, is, dloss in one pass (the batched backward step)
    steps = Trace.load(run).steps
    # last_steps = all traced steps: the same computation under a different cache key
    alone = EstimateOptions(dtype="float64", last_steps=steps)
    for m in ("fid", "is"):
        single = estimate(run, [m], alone)[m]
        assert single.meta["options"]["last_steps"] == steps  # really a separate pass
        scale = np.abs(joint[m].scores).max()
        assert scale > 0
        assert np.abs(single.scores - joint[m].scores).max() <= 1e-10 * scale
        assert np.allclose(single.u_norms, joint[m].u_norms, rtol=1e-10)


def test_results_are_cached_and_reloaded(toy_run):
    first = estimate(toy_run, ["dloss", "all"])
    again = estimate(toy_run, ["all"])
    assert np.array_equal(first["all"].scores, again["all"].scores)
    assert again["all"].meta == first["all"].meta  # loaded, not recomputed (same timing fields)
    dataset = RunContext.create(load_run_config(toy_run), toy_run.root).dataset
    table = influence_table(toy_run, dataset)
    assert np.array_equal(table["influence_all"].to_numpy(), first["all"].scores)
    # rank 1 = most harmful; ALL: harmful = positive
    top = int(table.loc[table["harmful_rank_all"] == 1, "id"].iloc[0])
    assert top == int(np.argmax(first["all"].scores)) == int(harmful_order(first["all"])[0])
    assert table.loc[table["harmful_rank_dloss"] == 1, "id"].iloc[0] == int(np.argmin(first["dloss"].scores))


def test_bad_estimate_requests_are_config_errors(toy_run):
    with pytest.raises(ConfigError, match="metric 'fid' is not defined for 2D data"):
        estimate(toy_run, ["fid"])
    with pytest.raises(ConfigError, match="name at least one metric"):
        estimate(toy_run, [])
    with pytest.raises(ConfigError, match=r"last_steps must lie in 1..20"):
        estimate(toy_run, ["all"], EstimateOptions(last_steps=21))
    with pytest.raises(ConfigError, match="dtype must be"):
        estimate(toy_run, ["all"], EstimateOptions(dtype="float16"))


def test_last_steps_uses_only_the_newest_steps(toy_run, tmp_path):
    run = copy_run(toy_run, tmp_path)  # keeps the session run's newest result per metric as it is
    full = estimate(run, ["dloss"])["dloss"]
    part = estimate(run, ["dloss"], EstimateOptions(last_steps=5))["dloss"]
    trace = Trace.load(run)
    newest = np.concatenate([trace.batch(t) for t in range(15, 20)])
    older = np.setdiff1d(np.arange(2000), newest)
    assert np.all(part.scores[older] == 0) and np.all(part.flags[older] == FLAG_NEVER_TRACED)
    assert np.all(part.flags[newest] != FLAG_NEVER_TRACED)
    # the newest steps' terms are the same in both passes (same u at those steps)
    assert np.allclose(part.scores[newest], full.scores[newest], rtol=1e-12, atol=0)


def test_interrupted_pass_resumes_to_the_same_scores(tmp_path, toy_run):
    run = copy_run(toy_run, tmp_path, keep_results=False)
    options = EstimateOptions(checkpoint_every=4)
    token = CancelToken()

    def stop(p):
        if p.stage == "influence" and p.done == 9:
            token.set()

    with pytest.raises(Cancelled):
        estimate(run, ["all", "dloss"], options, progress=stop, cancel=token)
    assert list(run.path("influence/_partial").glob("*/state.pt"))
    resumed_from = []
    resumed = estimate(run, ["all", "dloss"], options, progress=lambda p: resumed_from.append(p.done))
    assert min(resumed_from) > 1  # it did not start over
    reference = estimate(toy_run, ["all", "dloss"])
    for m in ("all", "dloss"):
        assert np.allclose(resumed[m].scores, reference[m].scores, rtol=1e-12, atol=1e-18)
    assert not list(run.path("influence/_partial").glob("*/state.pt"))


# ---------------------------------------------------------------- accuracy on the tiny preset
# Kendall tau between estimated and leave-one-out influence on the tiny preset (influence.validation.validate,
# the first n traced instances), measured on seeds 0, 1, 2 while writing this test:
#            n=30: FID    IS     D-loss      n=40: FID    IS     D-loss
#   seed 0         1.000  1.000  0.995            0.995  1.000  0.995
#   seed 1         1.000  0.991  0.992            0.987  0.985  0.988
#   seed 2         0.991  0.986  0.999            0.990  0.979  0.999
# Pearson r was >= 0.999 in every case. The test runs seed 0 with n=30; tau > 0.9 leaves room for
# platform rounding while still failing on any real error of the estimator (a sign or step-order bug
# drives tau toward 0 or below; a damped or truncated pass pulls it well under 0.9).
TAU_MIN = 0.9
PEARSON_MIN = 0.99


@pytest.mark.slow
def test_validation_on_the_tiny_preset(tiny_run, tmp_path):
    from influence.validation import validate

    acc = validate(copy_run(tiny_run, tmp_path), ["fid", "is", "dloss"], n=30)
    for m, a in acc.items():
        assert a.kendall_tau > TAU_MIN, (m, a.kendall_tau)
        assert a.pearson_r > PEARSON_MIN, (m, a.pearson_r)
        assert a.verdict == "reliable"
        assert len(a.ids) == 30
        # the estimate really has the sign of the actual change for the instances that matter most
        big = np.abs(a.actual) >= np.percentile(np.abs(a.actual), 50)
        assert np.all(np.sign(a.estimated[big]) == np.sign(a.actual[big])), m


# ---------------------------------------------------------------- diagnostics
def test_tiny_and_toy_runs_are_reliable(tiny_run, toy_run):
    for run, metrics in ((tiny_run, ["fid", "is", "dloss"]), (toy_run, ["all", "dloss"])):
        for m, r in estimate(run, metrics).items():
            assert r.meta["verdict"] == "reliable", (m, r.meta["growth"])
            assert r.meta["growth"] < 10
            assert np.all(r.flags[r.flags != FLAG_NEVER_TRACED] == FLAG_RELIABLE)
            assert np.isfinite(r.u_norms).all()


def test_an_exploding_backward_pass_is_flagged_unreliable(tmp_path):
    # lr 2.0 over the two traced epochs of the toy: training stays finite (seed 0), while |u|
    # grows ~1e4x over the backward pass (observed growth: ALL 1.1e4, D-loss 1.3e4).
    cfg = toy_config(seed=0, trace_epochs=2)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr_schedule=((2, 2.0, 2.0),)))
    run = train(cfg, tmp_path)
    assert np.isfinite(run.read_npy("weights/final.npy")).all()
    res = estimate(run, ["all", "dloss"])
    for m, r in res.items():
        assert r.meta["verdict"] == "unreliable", (m, r.meta["growth"])
        assert r.meta["growth"] >= 1000
        assert "unreliable" in r.meta["verdict_message"]
        assert r.meta["n_flagged"]["unreliable"] == int((r.flags == FLAG_UNRELIABLE).sum()) > 0
        # Flags grade each instance by the growth of |u| after its first traced step, recomputed here.
        trace = Trace.load(run)
        total = np.linalg.norm(r.u_norms, axis=1)
        ratio = total / total[-1]
        first = trace.step_of_instance(2000)
        grade = np.select([ratio[first + 1] >= 100, ratio[first + 1] >= 10], [FLAG_UNRELIABLE, FLAG_DOUBTFUL], FLAG_RELIABLE)
        assert np.array_equal(r.flags, grade)
        assert r.meta["growth"] == pytest.approx(np.nanmax(ratio))


# float32 vs float64 backward pass on the tiny run, relative L2 difference of the scores, observed:
#   seed 0: FID 1.1e-5, IS 1.2e-5, D-loss 8.5e-6;  seed 1: 5.6e-6 all three;  seed 2: FID 1.4e-5, IS 1.6e-5, D-loss 1.0e-5.
# The bound leaves ~60x margin over the worst of them; an estimator whose float32 pass loses
# precision (e.g. accumulating scores in float32 across steps, or an unstable recursion) exceeds it.
FLOAT32_REL_L2 = 1e-3


@pytest.mark.slow
def test_float32_and_float64_estimates_agree_on_the_tiny_run(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path)
    r32 = estimate(run, ["fid", "dloss"])  # the session's pass, from its cache: auto is float32 at 7.9k parameters
    r64 = estimate(run, ["fid", "dloss"], EstimateOptions(dtype="float64"))
    for m in ("fid", "dloss"):
        assert r64[m].meta["options"]["dtype"] == "float64" and r32[m].meta["options"]["dtype"] == "float32"
        a, b = r64[m].scores, r32[m].scores
        rel = np.linalg.norm(a - b) / np.linalg.norm(a)
        assert rel < FLOAT32_REL_L2, (m, rel)
        assert rel > 0  # really computed in another precision


# ---------------------------------------------------------------- first order vs whole removal
def _first_traced(run: store.Run, n: int) -> np.ndarray:
    trace = Trace.load(run)
    return np.concatenate([trace.batch(t) for t in range(trace.steps)])[:n]


def test_estimate_is_the_first_order_change_of_down_weighting(toy_run):
    """Whole traced epoch of the ReLU toy: (metric(j at weight 1 - eps) - metric) / eps tends to the
    estimate as eps -> 0, also for instances 20 steps before the end."""
    res = estimate(toy_run, ["all"])["all"]
    ids = _first_traced(toy_run, 8)
    actual = _actual(toy_run, ("all",), ids, eps=1e-3)["all"]
    est = res.scores[ids]
    assert np.all(np.abs(est) > 0)
    assert np.all(np.abs(actual - est) <= 0.01 * np.abs(est))  # observed max 2.4e-6 relative


def test_with_softplus_a_whole_removal_matches_the_first_order_estimate(tmp_path):
    """The toy2d-smooth architecture on the test toy: leave-one-out equals the estimate. (On the 50-epoch
    ReLU toy2d, kinks make a whole removal non-linear: bench/linearity.py, docs/architecture.md.)"""
    cfg = apply_overrides(toy_config(seed=1), ["model.activation=softplus"])
    run = train(cfg, tmp_path)
    res = estimate(run, ["all"])["all"]
    ids = _first_traced(run, 20)
    actual = _actual(run, ("all",), ids)["all"]
    est = res.scores[ids]
    from scipy.stats import kendalltau

    assert kendalltau(est, actual).statistic >= 0.9  # observed 1.0
    assert np.median(np.abs(actual - est) / np.abs(actual)) <= 0.02  # observed 2.2e-4


def test_a_trace_of_one_generator_half_step_skips_the_discriminator_and_says_so(tmp_path):
    """Alternating Adam with train.trace_steps=1 traces only G's last half-step: D has no traced update (this
    raised IndexError in last_updates). The pass runs: no instance term (no real data), D's buffers weigh 1,
    and the result says so."""
    from influence.estimator import last_updates

    cfg = apply_overrides(toy_config(), ["data.n_train=400", "model.activation=softplus", "train.optimizer=adam",
                                         "train.scheme=alternating", "train.trace_steps=1"])
    run = train(cfg, tmp_path)
    trace = Trace.load(run)
    assert trace.steps == 1 and last_updates(trace) == {"g": 0}
    r = estimate(run, ["all", "dloss"])
    for m in ("all", "dloss"):
        assert np.all(r[m].scores == 0) and np.all(r[m].flags == FLAG_NEVER_TRACED)
        assert r[m].meta["unmeasured_players"] == ["d"] and "D has no update" in r[m].meta["unmeasured_note"]
        assert np.isfinite(r[m].meta["growth"])
    # the growth factor by hand: |lambda| over the state before and after G's step; D-loss reads theta_D, whose
    # adjoint the G step changes, and D's buffers (weight 1) keep a zero adjoint
    ctx, _ = _ctx_trace(run)
    from influence.estimator import backward_step, block_scales, initial_adjoint
    from influence.objectives import metric_objectives

    lam_T, _ = initial_adjoint(ctx, trace, metric_objectives(["dloss"], True))
    s = trace.layout.split(torch.from_numpy(np.array(trace.states[0])))
    lam_0, _ = backward_step(ctx, trace, 0, s, lam_T)
    scales = block_scales(ctx, trace)
    assert scales[2:4] == [1.0, 1.0]  # m_d, v_d
    norm = lambda lam: float(np.sqrt(sum((w * float(a.double().norm())) ** 2 for w, a in zip(scales, lam))))
    assert r["dloss"].meta["growth"] == pytest.approx(max(norm(lam_0), norm(lam_T)) / norm(lam_T), rel=1e-12)


def test_conditions_differences_name_what_differs_and_never_guess():
    from influence import conditions

    now = {"threads": 2, "device": "cpu", "dtype": "float32", "torch": "2.5.0", "processor": "x86_64 AVX512 [avx2]"}
    assert conditions.differences(dict(now), now, "this replay runs") == []
    (line,) = conditions.differences(None, now, "this replay runs")
    assert "not recorded" in line and "this replay runs" in line
    other = conditions.differences({**now, "threads": 1, "dtype": "float64"}, now, "this replay runs")
    assert len(other) == 2 and "at 2 torch threads, training ran at 1" in other[0] and "float64" in other[1]
    (chip,) = conditions.differences({**now, "processor": "x86_64 AVX2 [avx2]"}, now, "this replay runs")
    assert "this replay runs on x86_64 AVX512 [avx2], training ran on x86_64 AVX2 [avx2]" in chip
    (unknown,) = conditions.differences({k: v for k, v in now.items() if k != "processor"}, now, "this replay runs")
    assert "processor was not recorded" in unknown
    cuda = {**now, "device": "cuda:0", "processor": "NVIDIA H100 (sm_90)"}
    assert conditions.differences({**cuda, "threads": 8}, cuda) == []  # threads do not split GPU kernels
    (device,) = conditions.differences(now, cuda)  # the device's sentence says it: not the processor's again
    assert "on cuda:0, training ran on cpu" in device
    assert "processor was not recorded" in conditions.differences({k: v for k, v in cuda.items() if k != "processor"},
                                                                  cuda)[0]


def test_training_records_its_conditions_and_the_pass_says_when_its_recompute_differs(tmp_path):
    """trace/meta.json records threads, device, dtype and torch version; the influence pass compares its
    recompute of checkpoint segments with them (nothing to compare in a trace that stores every state), and a
    run from before the record reads "not recorded"."""
    from influence import conditions

    cfg = apply_overrides(toy_config(), ["data.n_train=400", "train.trace_mode=checkpoints", "train.checkpoint_every=2"])
    run = train(cfg, tmp_path / "a")
    meta = run.read_json("trace/meta.json")
    assert meta["conditions"] == conditions.current("cpu", torch.float64)
    threads = torch.get_num_threads()
    same = estimate(run, ["all"])["all"].meta["conditions"]
    assert same["recomputes"] and same["warnings"] == [] and same["training"] == meta["conditions"]
    other = copy_run(run, tmp_path / "b", keep_results=False)
    try:
        torch.set_num_threads(threads % 2 + 1)
        (line,) = estimate(other, ["all"])["all"].meta["conditions"]["warnings"]
    finally:
        torch.set_num_threads(threads)
    assert f"at {threads % 2 + 1} torch threads, training ran at {threads}" in line
    old = copy_run(run, tmp_path / "c", keep_results=False)
    old.write_json("trace/meta.json", {k: v for k, v in meta.items() if k != "conditions"})
    (line,) = estimate(old, ["all"])["all"].meta["conditions"]["warnings"]
    assert line.startswith("training's conditions (threads, device, dtype) were not recorded")
    snapshots = train(apply_overrides(toy_config(), ["data.n_train=400"]), tmp_path / "d")
    snapshots.write_json("trace/meta.json", {k: v for k, v in snapshots.read_json("trace/meta.json").items()
                                             if k != "conditions"})
    plain = estimate(snapshots, ["all"])["all"].meta["conditions"]
    assert not plain["recomputes"] and plain["warnings"] == []


# ---------------------------------------------------------------- baselines: what the recursion buys
class _DiscriminatorMean:
    """An objective of theta_D alone: the mean logit of D on 20 fixed points (its gradient is grad_D metric)."""

    name, label, higher_is_better, rows = "dmean", "mean D logit", True, 1

    def __init__(self):
        self.x = torch.randn(20, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)

    def values(self, ctx, theta_d, theta_g):
        return ctx.gan.logits(theta_d, self.x.to(ctx.dtype)).mean().reshape(1)


def _states(ctx, trace):
    """s_0 .. s_T of the snapshot trace."""
    split = lambda a: trace.layout.split(torch.from_numpy(np.array(a)).to(ctx.dtype))
    return [split(trace.states[t]) for t in range(trace.steps)] + [split(trace.final_state)]


def _baseline_scores(ctx, trace, objective, method):
    from influence.estimator import start_pass, walk_back
    from influence.estimator.alternatives import baseline_advance

    state = start_pass(ctx, trace, [objective])
    for _ in walk_back(ctx, trace, state, 0, advance=baseline_advance(ctx, trace, [objective], method)):
        pass
    return state.scores[0].numpy()


@pytest.fixture(scope="module")
def alternating_sgd(tmp_path_factory):
    cfg = apply_overrides(toy_config(), ["data.n_train=400", "model.activation=softplus", "train.scheme=alternating"])
    return train(cfg, tmp_path_factory.mktemp("alt-sgd"))


def _real_loss_grad(ctx, theta_d, x):
    td = theta_d.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(ctx.gan.real_losses(td, x[None]).sum(), td)
    return g


def test_baselines_of_a_discriminator_objective_are_tracin_by_hand(alternating_sgd):
    """Plain SGD, alternating, an objective of theta_D alone: the generator's update leaves theta_D as it was, so
    no-propagation score_j = sum over j's steps t of lr_D / B <grad_D f(s_T), grad_D loss_real(x_j; theta_D,t)>,
    and tracin the same with grad_D f at theta_D,t+1 (the state after j's step)."""
    ctx, trace = _ctx_trace(alternating_sgd)
    objective = _DiscriminatorMean()
    states = _states(ctx, trace)

    def grad_f(s):
        td = s.theta_d.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(objective.values(ctx, td, s.theta_g)[0], td)
        return g

    at_end = grad_f(states[-1])
    expected = {m: np.zeros(ctx.dataset.n_train) for m in ("no-propagation", "tracin")}
    for t in range(trace.steps):
        if trace.kinds[t] != KIND_D:
            continue
        lr_d, batch = float(trace.lrs[t, 0]), trace.batches.shape[1]
        after = grad_f(states[t + 1])
        for j in trace.batch(t):
            g = _real_loss_grad(ctx, states[t].theta_d, ctx.train_x[int(j)])
            expected["no-propagation"][j] += lr_d / batch * float(at_end @ g)
            expected["tracin"][j] += lr_d / batch * float(after @ g)
    for method, want in expected.items():
        got = _baseline_scores(ctx, trace, objective, method)
        assert np.count_nonzero(want) == 400 and np.allclose(got, want, rtol=1e-10, atol=1e-16), method
    assert not np.allclose(expected["tracin"], expected["no-propagation"], rtol=1e-7, atol=0)  # D moved


def test_baselines_of_a_generator_metric_take_the_one_hop_through_the_next_g_update_by_hand(alternating_sgd):
    """ALL reads G alone: an image reaches it through G's next half-step, which reads the D it moved.
    score_j = -(lr_D lr_G / B) <grad_G ALL, d(grad_G L_G)/d theta_D grad_D loss_real(x_j)>, the cross term at
    (theta_D,t+1, theta_G,t+1), with grad_G ALL at the end (no-propagation) or after the G step (tracin)."""
    from influence.objectives import metric_objectives

    ctx, trace = _ctx_trace(alternating_sgd)
    (objective,) = metric_objectives(["all"], True)
    states = _states(ctx, trace)
    valid = ctx.evaluator("valid")

    def grad_all(s):
        tg = s.theta_g.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(valid.metric("all", s.theta_d, tg), tg)
        return g

    at_end = grad_all(states[-1])
    expected = {m: np.zeros(ctx.dataset.n_train) for m in ("no-propagation", "tracin")}
    for t in range(trace.steps - 1):
        if trace.kinds[t] != KIND_D:
            continue
        assert trace.kinds[t + 1] == KIND_G
        s, z = states[t + 1], trace_inputs(ctx, trace, t + 1).z  # G's half-step reads D after j's step
        lr_d, lr_g, batch = float(trace.lrs[t, 0]), float(trace.lrs[t + 1, 1]), trace.batches.shape[1]
        for method, u in (("no-propagation", at_end), ("tracin", grad_all(states[t + 2]))):
            td, tg = s.theta_d.detach().requires_grad_(True), s.theta_g.detach().requires_grad_(True)
            loss_g = torch.nn.functional.softplus(-ctx.gan.logits(td, ctx.gan.generate(tg, z))).sum() / len(z)
            (grad_g,) = torch.autograd.grad(loss_g, tg, create_graph=True)
            (cross,) = torch.autograd.grad(grad_g @ u, td)  # (d grad_G L_G / d theta_D)^T u
            for j in trace.batch(t):
                g = _real_loss_grad(ctx, states[t].theta_d, ctx.train_x[int(j)])
                expected[method][j] -= lr_d * lr_g / batch * float(cross @ g)
    for method, want in expected.items():
        got = _baseline_scores(ctx, trace, objective, method)
        assert np.count_nonzero(want) == 400 and np.allclose(got, want, rtol=1e-9, atol=1e-18), method


def test_baselines_are_named_results_that_never_replace_the_estimate_in_use(alternating_sgd, tmp_path):
    from influence.estimator import FLAG_NOT_ASSESSED, chosen_name, result_sets

    run = copy_run(alternating_sgd, tmp_path, keep_results=False)
    noprop = estimate(run, ["all", "dloss"], EstimateOptions(method="no-propagation"))
    assert run.exists("influence/all-float64-noprop-v1/scores.npy")
    assert chosen_name(run) == "float64-noprop-v1"  # the only result so far
    exact = estimate(run, ["all", "dloss"])
    tracin = estimate(run, ["all"], EstimateOptions(method="tracin", optimizer_state="frozen"))["all"]
    assert chosen_name(run) == "float64-v1"  # the first estimate, not the earlier baseline
    assert set(result_sets(run)) == {"float64-noprop-v1", "float64-v1", "float64-frozen-tracin-v2"}
    for r in (noprop["all"], tracin):
        assert r.meta["verdict"] == "baseline" and r.meta["options"]["method"] in ("no-propagation", "tracin")
        assert set(np.unique(r.flags)) <= {FLAG_NOT_ASSESSED, FLAG_NEVER_TRACED}
    assert "method" not in exact["all"].meta["options"]  # exact results from before the option keep their name
    assert not np.allclose(noprop["all"].scores, exact["all"].scores, rtol=0.01)
    with pytest.raises(ConfigError, match="damping applies to the exact recursion only"):
        estimate(run, ["all"], EstimateOptions(method="tracin", damping=0.1))
    with pytest.raises(ConfigError, match="method must be one of"):
        estimate(run, ["all"], EstimateOptions(method="trak"))


def test_baselines_in_a_simultaneous_scheme_take_one_step_after_the_instances_by_hand(tmp_path):
    """Simultaneous plain SGD, an objective of theta_D alone: an instance of step t is carried through step t+1
    (which updates G): no-propagation c_D = (I - lr_D H_D(s_t+1)) grad_D f(s_T) with H_D the Hessian of step
    t+1's D loss, and c = grad f(s_T) itself for the last step's instances. Two objectives stacked give each
    one's scores alone."""
    from influence.objectives import metric_objectives

    run = train(apply_overrides(toy_config(), ["data.n_train=400", "model.activation=softplus"]), tmp_path)
    ctx, trace = _ctx_trace(run)
    objective = _DiscriminatorMean()
    states = _states(ctx, trace)
    td = states[-1].theta_d.detach().requires_grad_(True)
    (r,) = torch.autograd.grad(objective.values(ctx, td, states[-1].theta_g)[0], td)
    expected = np.zeros(ctx.dataset.n_train)
    batch = trace.batches.shape[1]
    for t in range(trace.steps):
        c = r
        if t + 1 < trace.steps:
            inp, s = trace_inputs(ctx, trace, t + 1), states[t + 1]
            td = s.theta_d.detach().requires_grad_(True)
            F = torch.nn.functional
            loss_d = (F.softplus(-ctx.gan.logits(td, inp.x)).sum()
                      + F.softplus(ctx.gan.logits(td, ctx.gan.generate(s.theta_g, inp.z))).sum()) / batch
            (g,) = torch.autograd.grad(loss_d, td, create_graph=True)
            (hr,) = torch.autograd.grad(g @ r, td)
            c = r - float(trace.lrs[t + 1, 0]) * hr
        for j in trace.batch(t):
            expected[j] += float(trace.lrs[t, 0]) / batch * float(c @ _real_loss_grad(ctx, states[t].theta_d, ctx.train_x[int(j)]))
    got = _baseline_scores(ctx, trace, objective, "no-propagation")
    assert np.count_nonzero(expected) == 400 and np.allclose(got, expected, rtol=1e-10, atol=1e-16)

    from influence.estimator import start_pass, walk_back
    from influence.estimator.alternatives import baseline_advance

    for method in ("no-propagation", "tracin"):
        objectives = [objective] + metric_objectives(["all"], True)
        state = start_pass(ctx, trace, objectives)
        for _ in walk_back(ctx, trace, state, 0, advance=baseline_advance(ctx, trace, objectives, method)):
            pass
        alone = _baseline_scores(ctx, trace, objectives[1], method)
        assert np.allclose(state.scores[0].numpy(), _baseline_scores(ctx, trace, objective, method), rtol=1e-12)
        assert np.allclose(state.scores[1].numpy(), alone, rtol=1e-10, atol=1e-18) and np.count_nonzero(alone) > 0


def test_a_tracin_pass_killed_and_resumed_equals_an_uninterrupted_one(alternating_sgd, tmp_path):
    """The resumed walk recomputes the state after its next step (tracin reads the metric's gradient there)."""
    run = copy_run(alternating_sgd, tmp_path / "a", keep_results=False)
    options, token = EstimateOptions(method="tracin", checkpoint_every=2), CancelToken()
    assert Trace.load(run).kinds[5] == KIND_G

    def stop(p):
        if p.stage == "influence" and p.done == 3:  # checkpoint after 2 steps: it resumes at G's half-step 5
            token.set()

    with pytest.raises(Cancelled):
        estimate(run, ["all", "dloss"], options, progress=stop, cancel=token)
    resumed = estimate(run, ["all", "dloss"], options)
    whole = estimate(copy_run(alternating_sgd, tmp_path / "b", keep_results=False), ["all", "dloss"], options)
    for m in ("all", "dloss"):
        assert np.array_equal(resumed[m].scores, whole[m].scores) and np.count_nonzero(whole[m].scores) > 0
