"""The classroom lessons on a 2D run, each a few seconds on the toy.

- `one_point`: one instance's estimated influence beside the actual change of a replay
  without it, and the generated points before and after (the same z).
- `rank_agreement`: how differently two metrics' influences rank the instances (the
  paper's point that the discriminator's loss does not stand for the generator's quality).
- `lr_lesson`: retrain the last traced epoch from the stored state before it at another
  learning rate, then run the estimator over it and check it against a few leave-one-out
  replays: a large learning rate makes the linearisation explode.
- `coverage`: the generator's samples against the real density, so mode collapse has a name;
  `covering_toy`: a toy whose generator covers the data, to compare with.

Everything here is computed from a finished run's trace and context; nothing is stored.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from .config import RunConfig, preset
from .context import RunContext
from .counterfactual import Lane, replay_lanes
from .counterfactual.plan import choose_plan, reproduces_training
from .errors import ConfigError, DivergenceError
from .estimator import InfluenceResult, growth_of, pass_norms, start_pass, verdict_for, walk_back
from .metrics import check_metric
from .objectives import metric_objectives
from .stepmap import TrainState, step
from .train import Trace, states_backward, to_state, trace_inputs, traced_step_range

LESSON_METRICS = ("all", "dloss")
# Arrows' 90th-percentile length in data units (the toy's data spans about 10): at 0.4 an arrow was no longer
# than its own head, and 150 overlapping heads hid the generated points and which way they moved.
ARROW_LENGTH = 1.0


def _without_each(ctx: RunContext, trace: Trace, ids, measure):
    """`measure` (of theta_D and the generator the metrics use) after replays without each of `ids`, and of
    lane 0 of the same replay (nothing removed): every change is a lane minus lane 0, so no rounding offset
    from another code path enters it. Batched lanes where they pay (`counterfactual.plan`)."""
    plan = choose_plan(ctx, trace, len(ids))

    def measured(s: TrainState):
        return measure(s.theta_d.detach(), s.eval_generator(trace.ema_eval).detach())

    out = replay_lanes(ctx, trace, [Lane.of([int(j)]) for j in ids], measured, plan,
                       baseline_from_trace=reproduces_training(ctx, trace))
    return out.values, out.baselines


def _generate(ctx: RunContext, theta_g: torch.Tensor, z: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return ctx.gan.generate(theta_g, z).double().cpu().numpy()


def magnification(shift: np.ndarray, target: float) -> float:
    """A round factor (1, 2 or 5 times a power of ten) that draws the 90th-percentile shift about `target` long."""
    length = float(np.percentile(np.linalg.norm(shift, axis=1), 90)) if len(shift) else 0.0
    if not length > 0:
        return 1.0
    raw = target / length
    power = 10.0 ** math.floor(math.log10(raw))
    return max(f * power for f in (1, 2, 5, 10) if f * power <= raw * 1.000001)


# ---------------------------------------------------------------- one point, predicted vs actual
@dataclass
class OnePoint:
    instance: int
    step: int  # the traced step that first saw it (the replay starts there)
    estimated: dict[str, float]  # metric -> estimated influence (validation split)
    actual: dict[str, float]  # metric -> change of a replay without it
    before: np.ndarray  # (k, 2) generated points of the run
    after: np.ndarray  # (k, 2) the same z, generator of the replay without the instance
    magnification: float  # arrows are drawn this many times their length
    seconds: float  # replay and evaluation


def one_point(ctx: RunContext, trace: Trace, results: dict[str, InfluenceResult], instance: int,
              n_arrows: int = 150, arrow_length: float = ARROW_LENGTH) -> OnePoint:
    """Estimated vs actual influence of removing `instance`, and how the generated points move.

    `results` are the run's influence results (metric -> result); the metrics in
    LESSON_METRICS are compared where estimated. The replay covers the traced steps from
    the instance's first one, as leave-one-out validation does; arrows get a round
    magnification so that their 90th-percentile length is about `arrow_length`.
    """
    if not ctx.cfg.is_2d:
        raise ConfigError("the classroom lessons are for 2D runs")
    n = ctx.dataset.n_train
    if not 0 <= instance < n:
        raise ConfigError(f"instance {instance} is not in 0..{n - 1}")
    step = int(trace.step_of_instance(n)[instance])
    if step < 0:
        raise ConfigError(f"instance {instance} is in no traced step, so nothing estimates its influence")
    started = time.perf_counter()
    valid = ctx.evaluator("valid")
    ((theta_d, theta_g),), ((base_d, base_g),) = _without_each(ctx, trace, [instance], lambda d, g: (d, g))
    before = valid.evaluate(base_d, base_g, LESSON_METRICS)
    after = valid.evaluate(theta_d, theta_g, LESSON_METRICS)
    z = ctx.latents["grid"][:n_arrows]
    points_before, points_after = _generate(ctx, base_g, z), _generate(ctx, theta_g, z)
    return OnePoint(
        instance=instance, step=step,
        estimated={m: float(results[m].scores[instance]) for m in LESSON_METRICS if m in results},
        actual={m: after[m] - before[m] for m in LESSON_METRICS},
        before=points_before, after=points_after,
        magnification=magnification(points_after - points_before, arrow_length),
        seconds=time.perf_counter() - started,
    )


# ---------------------------------------------------------------- loss is not the metric
def rank_agreement(a: InfluenceResult, b: InfluenceResult) -> dict[str, float]:
    """Kendall tau and Spearman rho between two influence results over the instances both scored.

    Both are taken on "harmful first" orders (score times the metric's harmful sign), so
    +1 means the two metrics call the same instances harmful.
    """
    both = (a.flags != 0) & (b.flags != 0)  # 0 = in no traced batch
    x = a.scores[both] * a.meta["harmful_sign"]
    y = b.scores[both] * b.meta["harmful_sign"]
    return {"kendall_tau": float(stats.kendalltau(x, y).statistic),
            "spearman_rho": float(stats.spearmanr(x, y).statistic), "n": int(both.sum())}


# ---------------------------------------------------------------- when the estimate breaks
# A loss, the parameters' norm or the metric this many times its size at the epoch's start: the run diverged
# (at lr 3 on toy2d the D loss reached 2e47 and |theta_D| 5e31-fold before every ReLU died; the leave-one-out
# "changes" were then -2e86 and 0, which no ranking can be checked against).
EXPLODED = 1e3
RANDOM_LEVEL = 0.95  # the central share of Kendall tau a random ranking gives that the lesson states


@dataclass
class LrLesson:
    lr: float  # learning rate of both players in the retrained epoch
    steps: int  # steps retrained
    diverged: str | None  # training, the backward pass or a replay blew up: why; the fields below are then empty
    losses: np.ndarray  # (steps, 2): D and G loss of each retrained step (nan where a player did not step)
    norms: np.ndarray  # (steps + 1, 3): |u_D|, |u_G|, |u| over the whole state, before each step (last = start)
    growth: float
    verdict: str
    verdict_message: str
    ids: np.ndarray  # instances checked by leave-one-out replays
    estimated: np.ndarray
    actual: np.ndarray
    kendall_tau: float
    random_range: tuple[float, float]  # the central RANDOM_LEVEL of tau for a random ranking of len(ids) points
    metric_value: float  # the metric after the retrained epoch (validation split)
    seconds: float

    @property
    def agrees(self) -> bool:
        """The replays rank the checked points as the estimate does, beyond what a random ranking gives."""
        return bool(np.isfinite(self.kendall_tau) and self.kendall_tau > self.random_range[1])


@dataclass
class Conclusion:
    kind: str  # "holds", "fails", "replays disagree", "replays agree", "diverged"
    headline: str
    text: str


def _window(trace: Trace, start: int, state0: np.ndarray, lrs: np.ndarray) -> Trace:
    """The trace's steps start.. as a trace of their own, from `state0`, at the learning rates `lrs`."""
    return dataclasses.replace(
        trace, states=state0[None], stored_steps=np.zeros(1, dtype=np.int64),
        batches=trace.batches[start:], z=trace.z[start:], lrs=lrs, kinds=trace.kinds[start:],
        counts=trace.counts[start:], first_step=trace.first_step + start, final_state=state0,
    )


def last_epoch_start(ctx: RunContext, trace: Trace) -> int:
    """Index within the trace of the first step of the run's last epoch (0 if the trace is shorter)."""
    _, total = traced_step_range(ctx.cfg, ctx.dataset.n_train)
    return max(0, trace.steps - total // ctx.cfg.train.epochs)


def random_tau_range(n: int, level: float = RANDOM_LEVEL) -> tuple[float, float]:
    """The central `level` of Kendall tau between a fixed ranking of n points and a random one (exact:
    the distribution of the number of inversions of a random permutation); (nan, nan) below 2 points."""
    if n < 2:
        return math.nan, math.nan
    counts = np.ones(1)
    for k in range(2, n + 1):  # inserting the k-th element adds 0..k-1 inversions, equally likely
        counts = np.convolve(counts, np.ones(k) / k)
    tau = 1 - 4 * np.arange(len(counts)) / (n * (n - 1))  # descending in the number of inversions
    upper = np.cumsum(counts)  # P(tau >= tau[i])
    hi = float(tau[np.searchsorted(upper, (1 - level) / 2, side="right")])  # P(tau > hi) <= (1 - level) / 2
    return -hi, hi


def _retrain(ctx: RunContext, lesson: Trace) -> tuple[TrainState, np.ndarray, str | None]:
    """Run the lesson's steps (as replay_state does with nothing removed: the same bits), with each step's
    losses, and why it diverged if it did: a loss or the parameters non-finite or EXPLODED-fold."""
    state = to_state(ctx, lesson.layout, lesson.states[0])
    start_norm = float(torch.cat([state.theta_d, state.theta_g]).norm())
    losses, peak_loss, peak_norm = [], 0.0, start_norm
    for t in range(lesson.steps):
        state, l_d, l_g = step(ctx.gan, lesson.rule, state, trace_inputs(ctx, lesson, t))
        losses.append((math.nan if l_d is None else l_d, math.nan if l_g is None else l_g))
        norm = float(torch.cat([state.theta_d, state.theta_g]).norm())
        if not math.isfinite(norm) or any(v is not None and not math.isfinite(v) for v in (l_d, l_g)):
            return state, np.array(losses), f"the losses or parameters became NaN or infinite at step {t + 1}"
        peak_loss, peak_norm = max(peak_loss, abs(l_d) if l_d is not None else 0.0), max(peak_norm, norm)
    losses = np.array(losses, dtype=np.float64).reshape(-1, 2)
    first_d = losses[np.isfinite(losses[:, 0]), 0][:1]
    if first_d.size and peak_loss > EXPLODED * max(1.0, abs(first_d[0])):
        return state, losses, f"the D loss reached {peak_loss:.2g} (it was {first_d[0]:.3g} at the epoch's start)"
    if peak_norm > EXPLODED * start_norm:
        return state, losses, f"the parameters grew {peak_norm / start_norm:.2g}-fold"
    return state, losses, None


def lr_lesson(ctx: RunContext, trace: Trace, lr: float, metric: str = "all", n_check: int = 16) -> LrLesson:
    """Retrain the last epoch at learning rate `lr` (both players) and see whether the estimate holds.

    From the stored state before the run's last epoch, the epoch's steps are re-run with the
    same batches and z at the new rate (in memory: the run is not changed). The estimator
    then walks those steps back: |adjoint| per step, growth factor and verdict as on the
    Influence page, and the estimates of `n_check` instances spread over the epoch against
    leave-one-out replays of it. A run that diverges (losses, parameters, the metric or a
    replay non-finite or EXPLODED-fold) says so instead: nothing can be checked on it.
    """
    check_metric(metric, ctx.cfg.is_2d)
    if not lr > 0:
        raise ConfigError("the learning rate must be positive")
    started = time.perf_counter()
    start = last_epoch_start(ctx, trace)
    state0 = next(states_backward(ctx, trace, first=start, last=start))[1]
    steps = trace.steps - start
    lrs = np.where(trace.lrs[start:] > 0, lr, 0.0)  # a player the step does not update keeps lr 0
    lesson = _window(trace, start, state0.flat().cpu().numpy(), lrs)
    empty = np.zeros(0)

    def failed(why: str, losses: np.ndarray) -> LrLesson:
        return LrLesson(lr, steps, why, losses, np.zeros((0, 3)), math.inf, "unreliable",
                        why, empty.astype(np.int64), empty, empty, math.nan, (math.nan, math.nan), math.nan,
                        time.perf_counter() - started)

    final, losses, why = _retrain(ctx, lesson)
    if why is not None:
        return failed(f"training diverged: {why}", losses)
    valid = ctx.evaluator("valid")
    before = valid.evaluate(state0.theta_d, state0.eval_generator(trace.ema_eval), (metric,))[metric]
    after = valid.evaluate(final.theta_d, final.eval_generator(trace.ema_eval), (metric,))[metric]
    if not (math.isfinite(after) and abs(after - before) <= EXPLODED * max(1.0, abs(before))):
        return failed(f"training diverged: validation {metric.upper()} went from {before:.4g} to {after:.3g}", losses)
    lesson = dataclasses.replace(lesson, final_state=final.flat().cpu().numpy())
    state = start_pass(ctx, lesson, metric_objectives([metric], True))
    try:
        for _ in walk_back(ctx, lesson, state, 0):
            pass
    except DivergenceError:
        return failed(f"the backward pass diverged at step {state.t_next} of {steps}: |u| became infinite", losses)
    norms = pass_norms(ctx, lesson, state)[:, 0].numpy()  # the Influence page's whole-state norm
    _, growth = growth_of(norms[:, 2])
    verdict, message = verdict_for(growth)
    scores = state.scores[0].numpy()
    ids, estimated, actual = _check(ctx, lesson, scores, metric, n_check)
    blown = ~np.isfinite(actual) | (np.abs(actual) > EXPLODED * max(1.0, abs(state.values[0])))
    if blown.any():
        return failed(f"the replay without #{ids[blown][0]} diverged (its {metric.upper()} changed by "
                      f"{actual[blown][0]:.2g})", losses)
    tau = float(stats.kendalltau(estimated, actual).statistic) if len(ids) >= 2 else math.nan
    return LrLesson(lr, steps, None, losses, norms, growth, verdict, message, ids, estimated, actual, tau,
                    random_tau_range(len(ids)), state.values[0], time.perf_counter() - started)


def _check(ctx: RunContext, lesson: Trace, scores: np.ndarray, metric: str, n_check: int):
    """(ids, estimated, actual) for `n_check` instances spread evenly over the lesson's steps."""
    steps = np.unique(np.linspace(0, lesson.steps - 1, n_check).round().astype(int))
    ids = np.array(list(dict.fromkeys(int(lesson.batch(t)[0]) for t in steps if len(lesson.batch(t)))), dtype=np.int64)
    valid = ctx.evaluator("valid")
    after, before = _without_each(ctx, lesson, ids, lambda d, g: valid.evaluate(d, g, (metric,))[metric])
    actual = [a - b for a, b in zip(after, before)]
    return ids, scores[ids], np.array(actual)


def conclusion(lesson: LrLesson) -> Conclusion:
    """One story from the growth factor and the replays; where they disagree, which to believe and why."""
    lr = f"{lesson.lr:g}"
    if lesson.diverged:
        return Conclusion("diverged", f"Diverged at lr {lr}",
                          f"{lesson.diverged[0].upper()}{lesson.diverged[1:]}. A diverged run has no meaningful "
                          "influence: neither the growth factor nor the replays can be read, so neither is shown.")
    lo, hi = lesson.random_range
    n = len(lesson.ids)
    tau = (f"Kendall τ {lesson.kendall_tau:.2f} over {n} replays, where a random ranking of {n} points gives "
           f"{lo:.2f} to {hi:.2f} in {RANDOM_LEVEL:.0%} of cases")
    growth = f"|u| grew {lesson.growth:.3g}x (verdict: {lesson.verdict})"
    if lesson.verdict == "reliable" and lesson.agrees:
        return Conclusion("holds", f"The estimate holds at lr {lr}",
                          f"{growth}, and the replays rank the points as the estimate does ({tau}).")
    if lesson.verdict != "reliable" and not lesson.agrees:
        return Conclusion("fails", f"The estimate fails at lr {lr}",
                          f"{growth}, and the replays do not rank the points as the estimate does ({tau}).")
    if lesson.verdict == "reliable":
        within = lo <= lesson.kendall_tau <= hi
        return Conclusion(
            "replays disagree", f"The replays do not confirm the estimate at lr {lr}",
            f"{growth}, but the replays do not rank the points as the estimate does ({tau}). Believe the replays: "
            "they are the change itself. The growth factor only checks that the backward pass does not amplify "
            "perturbations; it cannot see that at this rate one removal already moves training beyond where the "
            "linearisation holds (ReLU units switch on or off)."
            + (f" With τ inside the random range, {n} replays cannot tell a useful estimate from a useless one: "
               "check more points on the Validate page." if within else ""))
    return Conclusion(
        "replays agree", f"The replays agree at lr {lr}, although |u| grew",
        f"{growth}, yet the replays rank the checked points as the estimate does ({tau}). Believe the replays for "
        "these points: the growth factor warns that errors can be amplified; it does not measure them. Points early "
        "in the epoch, whose estimates the growth affects most, deserve a check on the Validate page.")


# ---------------------------------------------------------------- mode collapse
COVERING_PRESET = "toy2d-adam-ema"
# Measured (coverage of grids/epoch_050.npy; `gan-influence train --preset toy2d-adam --seed S --set
# model.activation=default --set train.ema_decay=0.999`): seeds 0/1/2 fill 67% / 76% / 83% of the data's
# 1-sigma area within 0.05 sigma of its centre. toy2d-adam itself (softplus, no EMA) ends on a line through
# the data (4% / 10% / 21%), toy2d seed 0 at 30%; Adam without the EMA moves the cloud's centre by up to 1 sigma
# from epoch to epoch.
COVERING_NOTE = ("Its generator covers the data: at epoch 50, seeds 0, 1 and 2 fill 67%, 76% and 83% of the data's "
                 "1σ area, within 0.05σ of its centre (toy2d seed 0: 30%; toy2d-adam: 4-21%, on a line).")


def covering_toy(seed: int = 0) -> RunConfig:
    """The 2D toy whose generator covers the Gaussian, for the mode-collapse lesson: toy2d-adam with ReLU
    units and an EMA of the generator (decay 0.999), which averages out Adam's epoch-to-epoch swings."""
    base = preset("toy2d-adam", seed)
    return dataclasses.replace(base, preset=COVERING_PRESET,
                               model=dataclasses.replace(base.model, activation="default"),
                               train=dataclasses.replace(base.train, ema_decay=0.999))


@dataclass
class Coverage:
    spread: float  # sqrt(det cov(generated) / det cov(real)): area of the samples' 1-sigma ellipse vs the data's
    offset: float  # distance of the samples' mean from the data's, in the data's standard deviations (Mahalanobis)
    verdict: str  # "covers", "partly covers" or "collapsed"
    message: str


def coverage(real: np.ndarray, generated: np.ndarray) -> Coverage:
    """Does the generator cover the data? Compares the two clouds' means and covariances.

    Collapsed: the samples fill less than a quarter of the data's 1-sigma area, or their
    centre lies more than one standard deviation off. Partly: less than 60%, or more
    than 0.3 off, or more than twice the area.
    """
    real, generated = np.asarray(real, dtype=np.float64), np.asarray(generated, dtype=np.float64)
    cov_r, cov_g = np.cov(real.T), np.cov(generated.T)
    spread = float(np.sqrt(max(np.linalg.det(cov_g), 0.0) / np.linalg.det(cov_r)))
    diff = generated.mean(axis=0) - real.mean(axis=0)
    offset = float(np.sqrt(diff @ np.linalg.solve(cov_r, diff)))
    if spread < 0.25 or offset > 1.0:
        verdict = "collapsed"
    elif spread < 0.6 or offset > 0.3 or spread > 2.0:
        verdict = "partly covers"
    else:
        verdict = "covers"
    message = (f"the samples fill {spread:.0%} of the data's 1-sigma area, their centre {offset:.2f} standard "
               f"deviations from the data's")
    return Coverage(spread, offset, verdict, message)
