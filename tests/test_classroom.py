"""The classroom lessons (influence.classroom) against independent computations on the small 2D run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from influence import classroom
from influence.context import RunContext, load_run_config
from influence.errors import ConfigError
from influence.estimator import estimate
from influence.stepmap import step
from influence.train import Trace, replay, states_backward, trace_inputs


@pytest.fixture(scope="module")
def toy(toy_run):
    ctx = RunContext.create(load_run_config(toy_run), toy_run.root)
    return toy_run, ctx, Trace.load(toy_run), estimate(toy_run, ["all", "dloss"])


def _final(ctx, trace):
    return [torch.from_numpy(np.array(p)).to(ctx.device, ctx.dtype) for p in trace.final_eval()]


def test_one_point_puts_the_estimate_beside_an_independent_replay(toy):
    run, ctx, trace, results = toy
    lesson = classroom.one_point(ctx, trace, results, 37, n_arrows=50)
    valid = ctx.evaluator("valid")
    base = valid.evaluate(*_final(ctx, trace))
    step = int(trace.step_of_instance(ctx.dataset.n_train)[37])
    after_d, after_g = replay(ctx, trace, [37], start=step)
    after = valid.evaluate(after_d, after_g)
    assert lesson.step == step
    for m in ("all", "dloss"):
        assert lesson.estimated[m] == results[m].scores[37]
        assert lesson.actual[m] == pytest.approx(after[m] - base[m], rel=1e-12, abs=1e-18)
        # the toy's traced epoch runs at lr 1e-3: one removal is first order, estimate and replay agree
        assert lesson.estimated[m] == pytest.approx(lesson.actual[m], rel=0.05)
    z = ctx.latents["grid"][:50]
    with torch.no_grad():
        assert np.allclose(lesson.before, ctx.gan.generate(_final(ctx, trace)[1], z).numpy())
        assert np.allclose(lesson.after, ctx.gan.generate(after_g, z).numpy())
    drawn = np.percentile(np.linalg.norm(lesson.after - lesson.before, axis=1), 90) * lesson.magnification
    assert classroom.ARROW_LENGTH / 10 < drawn <= classroom.ARROW_LENGTH * 1.000001
    with pytest.raises(ConfigError, match="not in 0..1999"):
        classroom.one_point(ctx, trace, results, 2000)


def test_magnification_is_a_round_factor_that_keeps_arrows_readable():
    shift = np.array([[3e-6, 4e-6]] * 10)  # length 5e-6
    assert classroom.magnification(shift, 0.4) == pytest.approx(5e4)  # 0.4 / 5e-6 = 8e4 -> 5e4
    assert classroom.magnification(shift * 2, 0.4) == pytest.approx(2e4)  # 4e4 -> 2e4
    assert classroom.magnification(np.zeros((3, 2)), 0.4) == 1.0


def test_rank_agreement_is_kendall_and_spearman_of_the_harmful_first_scores(toy):
    _, _, _, results = toy
    agree = classroom.rank_agreement(results["dloss"], results["all"])
    x, y = -results["dloss"].scores, results["all"].scores  # D-loss: negative = harmful; ALL: positive
    assert agree["kendall_tau"] == pytest.approx(stats.kendalltau(x, y)[0])
    assert agree["spearman_rho"] == pytest.approx(stats.spearmanr(x, y)[0])
    assert agree["n"] == 2000


def test_the_lr_lesson_at_the_runs_own_rate_reproduces_the_run_and_its_estimate(toy):
    run, ctx, trace, results = toy
    lesson = classroom.lr_lesson(ctx, trace, 1e-3, n_check=6)
    assert lesson.diverged is None and lesson.steps == 20 == trace.steps
    est = results["all"]
    # The retrained epoch is the traced one (same state, batches, z, lr): the same metric, scores and norms.
    assert lesson.metric_value == pytest.approx(est.meta["metric_value_valid"], rel=1e-12)
    assert np.allclose(lesson.estimated, est.scores[lesson.ids], rtol=1e-9, atol=0)
    assert lesson.growth == pytest.approx(est.meta["growth"], rel=1e-9)
    assert len(lesson.ids) == 6 and lesson.kendall_tau > 0.8 and lesson.verdict == "reliable"
    # A much larger rate gives another trajectory, and the checks are leave-one-out replays of it.
    fast = classroom.lr_lesson(ctx, trace, 0.3, n_check=4)
    assert fast.diverged is None and fast.metric_value != lesson.metric_value
    assert not np.allclose(fast.norms[:, 2], lesson.norms[:, 2]) and len(fast.ids) == 4


def test_the_lr_lesson_reports_divergence_instead_of_failing(toy):
    _, ctx, trace, _ = toy
    lesson = classroom.lr_lesson(ctx, trace, 1e6, n_check=3)
    assert lesson.diverged is not None and "diverged" in lesson.diverged and len(lesson.ids) == 0
    assert classroom.conclusion(lesson).kind == "diverged"


def test_the_lr_lesson_flags_a_run_that_explodes_without_nan(toy):
    """At lr 10 the toy's D loss reaches ~1e67 and its ReLUs die, so the parameters end finite: that is a
    diverged run too (on toy2d at lr 3 it showed 'doubtful' with tau 1.00 over changes of -2e86)."""
    _, ctx, trace, _ = toy
    lesson = classroom.lr_lesson(ctx, trace, 10.0, n_check=4)
    # independently: the D loss of each step of the last epoch retrained at lr 10
    start = classroom.last_epoch_start(ctx, trace)
    state = next(states_backward(ctx, trace, start, start))[1]
    window = classroom._window(trace, start, state.flat().numpy(), np.where(trace.lrs[start:] > 0, 10.0, 0.0))
    losses = []
    for t in range(window.steps):
        state, loss_d, _ = step(ctx.gan, window.rule, state, trace_inputs(ctx, window, t))
        losses.append(loss_d)
    assert np.isfinite(state.flat().numpy()).all() and max(losses) > 1e3 * losses[0]
    assert lesson.diverged is not None and "D loss reached" in lesson.diverged and len(lesson.ids) == 0
    assert np.allclose(lesson.losses[:, 0], losses)
    assert classroom.conclusion(lesson).headline == "Diverged at lr 10"


def test_random_tau_range_is_the_central_95_percent_of_all_permutations():
    import itertools

    for n in (5, 6, 7):
        taus = np.sort([stats.kendalltau(np.arange(n), p).statistic for p in itertools.permutations(range(n))])
        lo, hi = classroom.random_tau_range(n)
        assert lo == pytest.approx(-hi)
        assert np.mean(taus > hi + 1e-9) <= 0.025 < np.mean(taus >= hi - 1e-9)  # the smallest such bound
    assert classroom.random_tau_range(8)[1] == pytest.approx(16 / 28)  # tau 0.57: 8 replays
    assert classroom.random_tau_range(16)[1] == pytest.approx(0.3667, abs=1e-4)


def _lesson(verdict: str, tau: float, n: int = 8) -> classroom.LrLesson:
    growth = {"reliable": 1.5, "doubtful": 20.0, "unreliable": 3e4}[verdict]
    ids = np.arange(n)
    return classroom.LrLesson(0.1, 100, None, np.zeros((100, 2)), np.ones((101, 3)), growth, verdict, "", ids,
                              ids * 1.0, ids * 1.0, tau, classroom.random_tau_range(n), -2.8, 1.0)


def test_the_lr_lessons_verdict_and_replays_tell_one_story():
    # the case: "reliable" beside tau -0.21 over 8 replays, which a random ranking gives
    story = classroom.conclusion(_lesson("reliable", -0.21))
    assert story.kind == "replays disagree" and "Believe the replays" in story.text
    assert "-0.57 to 0.57" in story.text and "cannot tell" in story.text
    assert classroom.conclusion(_lesson("reliable", 0.93)).kind == "holds"
    agree = classroom.conclusion(_lesson("unreliable", 0.93))
    assert agree.kind == "replays agree" and "Believe the replays" in agree.text
    assert classroom.conclusion(_lesson("doubtful", 0.1)).kind == "fails"


def test_coverage_names_a_collapsed_generator():
    rng = np.random.default_rng(0)
    cov = [[1.0, 0.8], [0.8, 1.0]]
    real = rng.multivariate_normal([1, 1], cov, 4000)
    same = classroom.coverage(real, rng.multivariate_normal([1, 1], cov, 1000))
    assert same.verdict == "covers" and same.spread == pytest.approx(1.0, abs=0.1) and same.offset < 0.1
    blob = classroom.coverage(real, rng.multivariate_normal([1, 1], np.array(cov) * 0.04, 1000))
    assert blob.verdict == "collapsed" and blob.spread == pytest.approx(0.04, rel=0.15)
    off = classroom.coverage(real, rng.multivariate_normal([3, 0], cov, 1000))
    # Mahalanobis distance of (2, -1) under cov: sqrt(d^T cov^-1 d)
    d = np.array([2.0, -1.0])
    assert off.verdict == "collapsed" and off.offset == pytest.approx(np.sqrt(d @ np.linalg.solve(cov, d)), rel=0.05)
