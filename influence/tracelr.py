"""The traced epochs' learning rate chosen by measurement (`train.trace_lr=auto`), or measured beside a user's (`check`).

Before the first traced epoch, from the training state there, the probe trains a short segment (the first S
steps of that epoch, with the batches and z the epoch will use: drawn from a copy of the run's generator, so
the run's own stream is untouched) at each rung of a ladder of rates, the largest first, and walks the
estimator's backward loop (`estimator.backward`, the very pass of an estimate) back over it for the validation
objectives in PROBE_METRICS, stacked. Its growth of |u| over the whole state (the verdict's number) over S steps
is extrapolated to the T traced steps: after the fill-up of an adjoint that starts at zero (u_D for FID), |u|
changes by a steady factor per step, fitted to the second half of the walk, so
    G_T = max(G_S, r_0 * rate^(T - S))      (r_0: |u| at the segment's start over its end; rate >= 1)
A short segment misreads an epoch both ways: it under-read folder32 (7.8 extrapolated from 13 steps, 689 over the
epoch's 126) and over-read dcgan32 after one epoch (8-step screens not monotone in the rate). So a rung is confirmed
(`train.trace_lr_confirm`) by training and walking the whole first traced epoch at its rate (stored as the run's
trace mode would store it), and its verdict is that walk's: the growth an estimate of those steps will report,
extrapolated only where more than one epoch is traced. Every rung is confirmed unless its segment alone already
grew |u| past GROWTH_DOUBTFUL (measured), so a rung is refused on measured growth only and the extrapolation
decides nothing; `passed` confirms only a rung whose segment extrapolates under it, `off` none. Stable is not yet
accurate: quick's epoch at 3.2e-3 grew |u| 2.2-fold, yet its most harmful 5% moved FID a fifth of the predicted
amount. So by default (replayed) a rung that passes its walk also replays the epoch without the main metric's most
harmful 5% (`counterfactual.replay_lanes`; lane 0 is the segment's recorded trajectory) and passes only when that
set moved the metric the predicted way by between a third and three times the prediction (the spot check's bar for
"trustworthy" groups, `validation.trust.moved_as_predicted`). auto takes the largest rung that passes and stops
there; when no rung passes the replay, the largest stable one, and when none is stable, the smallest; the reason
says which. A walk
stops as soon as |u| has grown past the threshold (the rung fails on measurement alone), so a refused
confirmation costs a part of the epoch's walk, not all of it. check keeps the user's rate (the first rung) and
says when it lies far above the probe's pick. On the chosen rung a small batched spot check where lanes batch
(GPU, the dense toys; `counterfactual.plan`): random groups and the harmful and helpful sets replayed over the
segment, predicted against actual. Nothing here depends on timing; the probe's cost is reported against the
traced epochs' training. Where the pick's walk covers every traced step (one traced epoch), the probe keeps it
with its segment (`Probe.walk`, in memory): training at that rate keeps the segment as its traced epoch instead of
training the epoch again (`train.run`), and the finished run stores the walk as its influence pass
(`estimator.adopt_pass`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from .context import RunContext
from .counterfactual import replay_lanes
from .counterfactual.plan import choose_plan, reproduces_training
from .errors import DivergenceError
from .estimator import (GROWTH_DOUBTFUL, EstimateOptions, last_updates, pass_norms, start_pass, training_context,
                        verdict_for, walk_back, window_first)
from .metrics import METRIC_LABELS, harmful_sign
from .objectives import metric_objectives
from .progress import CancelToken, ProgressFn, Reporter
from .stepmap import TrainState
from .train import Segment, Trace, epoch_kinds, record_segment, storage_for

RUNGS = 7  # the ladder: base x 10^(-i/2), i = 0..6, down to a thousandth of the base
RUNG_FACTOR = 10 ** -0.5
PROBE_STEPS_SHARE, PROBE_STEPS_MIN, PROBE_STEPS_MAX = 10, 8, 50  # S = T / 10, within 8..50 (at most T)
WARN_FACTOR = 3.0  # check: a user's rate this many times the probe's pick (a rung above it or more) is warned about
PROBE_CHECK = {"groups": 8, "fraction": 0.05, "singles": 0}
PROBE_HARMFUL = 0.05  # the share of the epoch's instances whose removal a stable rung replays (the spot check's sets)


def probe_metrics(is_2d: bool) -> tuple[str, ...]:
    """The objectives the probe walks back: the run's main quality metric and D-loss (whose adjoint starts in
    both players); the largest growth of the two decides."""
    return ("all", "dloss") if is_2d else ("fid", "dloss")


def probe_steps(cfg, traced_steps: int) -> int:
    if cfg.train.trace_lr_probe_steps:
        return min(cfg.train.trace_lr_probe_steps, traced_steps)
    share = math.ceil(traced_steps / PROBE_STEPS_SHARE)
    return min(traced_steps, max(PROBE_STEPS_MIN, min(PROBE_STEPS_MAX, share)))


def confirm_steps(cfg, n_train: int, traced_steps: int) -> int:
    """The steps a rung's confirmation walks: the first traced epoch (all of the trace when it is shorter)."""
    return min(traced_steps, len(epoch_kinds(cfg, n_train)))


def final_growth(row: dict) -> float:
    """A rung's growth extrapolated to the trace: its confirmation's where it ran, else its segment's."""
    return (row.get("confirmed") or row)["extrapolated"]


def worth_confirming(row: dict, confirm: str) -> bool:
    """Whether a rung's segment leaves it to the epoch's walk: replayed and measured, unless the segment itself
    grew |u| past the threshold (or diverged: its growth is then inf); passed, only when the segment extrapolates
    under it."""
    if confirm in ("replayed", "measured"):
        return row["growth"] < GROWTH_DOUBTFUL
    return confirm == "passed" and row["extrapolated"] < GROWTH_DOUBTFUL


def stable(row: dict) -> bool:
    return final_growth(row) < GROWTH_DOUBTFUL


def passes(row: dict) -> bool:
    """Stable, and where its harmful set was replayed, moved as predicted."""
    return stable(row) and row.get("replayed", {}).get("agrees", True)


def ladder(base: tuple[float, float]) -> list[tuple[float, float]]:
    """The rates probed, largest first: both players scaled together (their ratio kept)."""
    return [(base[0] * RUNG_FACTOR**i, base[1] * RUNG_FACTOR**i) for i in range(RUNGS)]


def ladder_base(cfg, epoch: int, mode: str) -> tuple[float, float]:
    """auto: the rate in force before the traced epochs (the training rate; a fine-tune's configured rate);
    check: the user's rate of the traced epochs."""
    return cfg.lr_at_epoch(epoch if mode == "check" or epoch == 1 else epoch - 1)


def extrapolate(total: np.ndarray, traced_steps: int) -> tuple[float, float, float]:
    """(growth over the walked steps, per-step rate, growth extrapolated to `traced_steps`) of one row's
    whole-state |u| (`total`: (S + 1,), index = step, |u| at the segment's end last; nan where not walked)."""
    walked = total[np.isfinite(total)][::-1]  # from the end backwards: tau = 0 .. walked steps
    ratio = walked / walked[0] if walked[0] > 0 else np.ones_like(walked)
    growth = float(np.max(ratio))
    steps = len(ratio) - 1
    if steps < 2:
        return growth, 1.0, growth
    tail = np.arange(steps // 2, steps + 1)
    slope = float(np.polyfit(tail, np.log(np.maximum(ratio[tail], 1e-300)), 1)[0])
    rate = math.exp(max(slope, 0.0))
    # in logs: a steady rate over a long trace overflows a float (that rung is simply unreliable)
    more = max(traced_steps - steps, 0)
    log_far = math.log(max(float(ratio[-1]), 1e-300)) + more * math.log(rate)
    far = float(ratio[-1]) if more == 0 else math.exp(log_far) if log_far < 700 else math.inf
    return growth, rate, max(growth, far)


@dataclass
class Probe:
    mode: str  # auto or check
    metrics: list[str]
    probe_steps: int
    traced_steps: int
    threshold: float
    rungs: list[dict]
    chosen: tuple[float, float]  # auto: the traced epochs' rate; check: the probe's pick (the user's rate is kept)
    reliable: bool  # the pick's extrapolated growth is under the threshold
    reason: str
    warning: str | None
    spot_check: dict | None
    seconds: float
    user_lr: tuple[float, float] | None = None  # check: the user's rate of the traced epochs
    traced_seconds: float | None = field(default=None)
    epoch_kept: bool = False  # training kept the pick's segment as its traced epoch (trained once, by the probe)
    # the pick's walk over every traced step, in memory only: {"metrics", "state", "window", "seconds", "segment"
    # (train.Segment), "notes", "replays"}; training keeps the segment as its traced epoch and the finished run
    # adopts the walk as its influence pass when they are the run's very steps
    walk: dict | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict:
        d = asdict(dataclasses.replace(self, walk=None))
        del d["walk"]
        d["chosen"], d["user_lr"] = list(self.chosen), list(self.user_lr) if self.user_lr else None
        d["cost"] = self.cost()
        return d

    def cost(self) -> dict:
        ratio = self.seconds / self.traced_seconds if self.traced_seconds else None
        # a kept epoch was trained inside the probe: its seconds count once, in the probe's
        added = self.seconds - self.traced_seconds if self.epoch_kept and self.traced_seconds else self.seconds
        sentence = f"the probe took {self.seconds:.1f} s" + (
            f", {ratio:.2f}x the {self.traced_seconds:.1f} s of training the traced epochs" if ratio is not None else "")
        if self.epoch_kept and ratio is not None:
            sentence += (f"; its segment at the pick is the traced epoch (trained once, inside the probe), so the "
                         f"probe added {added:.1f} s to training")
        # each stable rung's replay without its most harmful set (records before 2026-12-07 kept no seconds)
        replays = [r["replayed"]["seconds"] for r in self.rungs if "seconds" in r.get("replayed", {})]
        if replays:
            sentence += (f"; its replay of the epoch without the most harmful {PROBE_HARMFUL:.0%} took "
                         f"{replays[0]:.1f} s" if len(replays) == 1 else
                         f"; its {len(replays)} replays of the epoch, each without a rung's most harmful "
                         f"{PROBE_HARMFUL:.0%}, took {sum(replays):.1f} s")
        return {"probe_seconds": self.seconds, "traced_seconds": self.traced_seconds, "ratio": ratio,
                "added_seconds": added, "replay_seconds": sum(replays) if replays else None, "sentence": sentence}

    def with_traced_seconds(self, seconds: float | None) -> dict:
        self.traced_seconds = seconds
        return self.as_dict()

    @staticmethod
    def from_dict(d: dict) -> "Probe":
        keep = {k: v for k, v in d.items() if k not in ("cost", "influence")}  # what the record adds to the probe
        keep["chosen"] = tuple(keep["chosen"])
        keep["user_lr"] = tuple(keep["user_lr"]) if keep.get("user_lr") else None
        return Probe(**keep)


def probe_traced_lr(ctx: RunContext, state: TrainState, epoch: int, rng: torch.Generator, traced_steps: int,
                    progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> Probe:
    """Probe the ladder from `state`, the state before traced epoch `epoch` (`rng`: a copy of the run's generator
    there; each rung draws from its own copy of it)."""
    started = time.perf_counter()
    cfg, mode = ctx.cfg, ctx.cfg.train.trace_lr
    base = ladder_base(cfg, epoch, mode)
    steps = probe_steps(cfg, traced_steps)
    metrics = list(probe_metrics(cfg.is_2d))
    n_params = state.theta_d.numel() + state.theta_g.numel()
    pass_dtype = getattr(torch, EstimateOptions().resolved_dtype(n_params))  # the dtype an estimate will use
    pass_ctx = ctx if pass_dtype == ctx.dtype else ctx.with_dtype(pass_dtype)
    confirm = cfg.train.trace_lr_confirm
    whole = confirm_steps(cfg, ctx.dataset.n_train, traced_steps) if confirm != "off" else steps
    # the total expects one confirmation and grows by one at each further one; a refused one walks less than its
    # share (it stops at the threshold)
    report = Reporter("trace-lr probe", RUNGS * 2 * steps + (2 * whole if whole > steps else 0), progress, cancel)
    first = (epoch - 1) * len(epoch_kinds(cfg, ctx.dataset.n_train))  # a segment reports global step numbers
    rungs, pick, checked, walk, done = [], None, None, None, 0

    def measure(lr: tuple[float, float], length: int, every: int = 1) -> tuple[dict, Segment | None, dict]:
        nonlocal done
        copy = torch.Generator()
        copy.set_state(rng.get_state())
        at = done
        out = _rung(ctx, pass_ctx, state, epoch, copy, lr, length, traced_steps, metrics,
                    lambda k, **_: report(at + k - first), lambda k: report(at + length + k), every)
        done = at + 2 * length
        return out

    for i, lr in enumerate(ladder(base)):
        row, seg, passed = measure(lr, steps)
        if whole > steps and worth_confirming(row, confirm):
            del seg, passed  # the short segment's states are not needed beside the epoch's
            if any("confirmed" in r for r in rungs):
                report.total += 2 * whole
            long_row, seg, passed = measure(lr, whole, storage_for(ctx, state, whole).every)
            row["confirmed"] = {k: long_row[k] for k in ("steps", "walked", "growth", "rate", "extrapolated",
                                                         "stopped_early", "diverged", "seconds")}
            row["verdict"] = long_row["verdict"]
        if stable(row) and confirm == "replayed":
            row["replayed"] = _harmful_replay(ctx, seg.trace, passed["scores"], metrics, progress, cancel)
        rungs.append(row)
        if passes(row):
            pick, checked = i, (seg.trace, passed["scores"])
            walk = _whole_walk(seg, passed, metrics, traced_steps, row.get("replayed"))
            break
        del seg, passed  # a refused rung's states go before the next rung records its own
    steady = [i for i, r in enumerate(rungs) if stable(r)]
    reliable = pick is not None or bool(steady)
    unreplayed = pick is None and bool(steady)  # stable rungs, none whose harmful set moved as predicted
    pick = pick if pick is not None else steady[0] if steady else len(rungs) - 1
    chosen = (rungs[pick]["lr_d"], rungs[pick]["lr_g"])
    growth = final_growth(rungs[pick])
    off = [r for r in rungs if stable(r) and not passes(r)]
    replay_note = "" if not off or unreplayed else (
        f"; {len(off)} larger stable rate{'s' if len(off) > 1 else ''} refused on the replay: "
        + ", ".join(_replay_words(r) for r in off))
    if unreplayed:
        from .validation.trust import HARMFUL_RATIO

        reason = (f"no rate down to {rungs[-1]['lr_d']:.3g} whose most harmful {PROBE_HARMFUL:.0%} moved "
                  f"{rungs[pick]['replayed']['metric'].upper()} as predicted (within {HARMFUL_RATIO[0]:.2g}x to "
                  f"{HARMFUL_RATIO[1]:g}x): the largest stable one, growth {growth:.3g} "
                  f"({_replay_words(rungs[pick])}); group-level predictions will be only indicative")
    elif reliable and "confirmed" in rungs[pick]:
        over = (f"over the first traced epoch's {whole} steps" if whole == traced_steps else
                f"walked over the first traced epoch's {whole} steps and extrapolated to {traced_steps}")
        refused = sum("confirmed" in r and not stable(r) for r in rungs[:pick])
        reason = (f"the largest of {len(rungs)} rates probed whose growth of |u| stays under {GROWTH_DOUBTFUL:g} "
                  f"(reliable), {over}: {growth:.3g}" + (
                      f" ({refused} larger rate{'s' if refused > 1 else ''} walked over the epoch and refused)"
                      if refused else "") + replay_note)
    elif reliable:
        reason = (f"the largest of {len(rungs)} rates probed whose growth of |u|, extrapolated from {steps} to "
                  f"{traced_steps} traced steps, stays under {GROWTH_DOUBTFUL:g} (reliable): {growth:.3g}"
                  + replay_note)
    else:
        reason = (f"no rate down to {chosen[0]:.3g} keeps the extrapolated growth under {GROWTH_DOUBTFUL:g} (the "
                  f"smallest reaches {growth:.3g}): the estimate will be doubtful or unreliable; trace fewer steps")
        m = cfg.model
        if cfg.train.optimizer == "adam" and m.init_g is not None and m.init_opt_d is None and m.init_opt_g is None:
            # measured on a tiny fine-tune (docs/finetune.md): fresh moments amplified |u| at every rate, kept ones not
            reason += ("; the optimizer state started fresh, and Adam's first steps from zero moments amplify |u| "
                       "at any rate: supply the trained optimizer state (finetune --keep-optimizer, --opt-d/--opt-g)")
    warning = None
    user = base if mode == "check" else None
    if mode == "check" and reliable and base[0] >= WARN_FACTOR * chosen[0]:
        why = (f"|u| extrapolates to {final_growth(rungs[0]):.3g}x over the trace, so the estimate will not be "
               "reliable" if not stable(rungs[0]) else
               f"{_replay_words(rungs[0])}, so group predictions will be only indicative")
        warning = (f"the traced epochs' rate lr_D {base[0]:.3g} is {base[0] / chosen[0]:.3g}x the largest the probe "
                   f"found reliable ({chosen[0]:.3g}): {why}; train.trace_lr=auto would use the probe's rate")
    elif mode == "check" and unreplayed:
        warning = f"no rate the probe tried down to {rungs[-1]['lr_d']:.3g} moved as predicted: {reason}"
    elif mode == "check" and not reliable:
        warning = (f"the traced epochs' rate lr_D {base[0]:.3g} is not reliable (|u| extrapolates to "
                   f"{final_growth(rungs[0]):.3g}x over the trace), and no rate the probe tried down to "
                   f"{chosen[0]:.3g} is: trace fewer steps")
    check = _spot_check(ctx, *checked, metrics, cfg.seed) if checked is not None else None
    return Probe(mode, metrics, steps, traced_steps, GROWTH_DOUBTFUL, rungs, chosen, reliable, reason, warning, check,
                 time.perf_counter() - started, user, walk=walk)


def _whole_walk(seg: Segment, passed: dict, metrics: list[str], traced_steps: int,
                replayed: dict | None) -> dict | None:
    """The pick's walk where it covers every traced step (one traced epoch, walked to its start), with its segment:
    the traced epoch and the influence pass of FID (ALL) and D-loss over it, if training runs at this rate; "notes":
    per metric what its result should say besides (the replay of its most harmful set, where made); "replays": that
    replay per metric, which the spot check of the adopted result takes instead of replaying it again."""
    if seg.trace.steps != traced_steps or passed.get("walked") != traced_steps or "window" not in passed:
        return None
    notes = {} if replayed is None else {replayed["metric"]: (
        f"the probe's replay of the epoch without this estimate's most harmful {PROBE_HARMFUL:.0%}: "
        f"{_moved(replayed)} ({replayed['ratio']:.2f}x the prediction)")}
    replays = {} if replayed is None else {replayed["metric"]: replayed}
    return {"metrics": list(metrics), "state": passed["state"], "window": passed["window"],
            "seconds": passed["seconds"], "segment": seg, "notes": notes, "replays": replays}


def _harmful_replay(ctx: RunContext, seg: Trace, scores: np.ndarray, metrics: list[str],
                    progress: ProgressFn | None, cancel: CancelToken | None) -> dict:
    """The walked epoch replayed without the main metric's most harmful PROBE_HARMFUL of its instances against lane
    0, the segment's own trajectory (recorded in this process a moment ago, so a replay would repeat it bit for bit:
    the epoch's steps are not replayed a second time), the replay reported as its own stage: {"metric", "size",
    "ids_sha256" (`Lane.digest`), "predicted", "actual", "ratio", "agrees", "seconds"}."""
    from .validation.spotcheck import extreme_sets, harmful_side
    from .validation.trust import moved_as_predicted

    metric = metrics[0]  # the quality metric a curator cleanses by (FID; ALL on 2D)
    sign = harmful_sign(metric)
    lanes, kinds = extreme_sets(seg, ctx.dataset.n_train, 0, {metric: scores[0]}, PROBE_HARMFUL)
    lane = lanes[kinds.index(f"{harmful_side(sign)}:{metric}")]
    valid = ctx.evaluator("valid")
    outcome = replay_lanes(ctx, seg, [lane], lambda s: valid.evaluate(s.theta_d, s.eval_generator(seg.ema_eval),
                                                                       (metric,))[metric],
                           choose_plan(ctx, seg, 1), progress=progress, cancel=cancel,
                           baseline_from_trace=reproduces_training(ctx, seg))
    predicted, actual = float(scores[0][lane.removed].sum()), float(outcome.values[0] - outcome.baselines[0])
    return {"metric": metric, "size": int(len(lane.removed)), "ids_sha256": lane.digest, "predicted": predicted,
            "actual": actual, "ratio": actual / predicted if predicted else math.nan,
            "agrees": moved_as_predicted(predicted, actual), "seconds": outcome.seconds}


def _moved(r: dict) -> str:
    return (f"the most harmful {r['size']} moved {r['metric'].upper()} by {r['actual']:+.3g}, "
            f"predicted {r['predicted']:+.3g}")


def _replay_words(row: dict) -> str:
    return f"at {row['lr_d']:.3g} {_moved(row['replayed'])}"


def adopted_sentence(adopted: dict) -> str:
    """What the run kept of the probe's walk (`estimator.runner.adopt_pass`; the record's "influence")."""
    names = " and ".join(METRIC_LABELS[m] for m in adopted["metrics"])
    return (f"influence on {names} stored from the probe's walk of these very steps ({adopted['seconds']:.1f} s): "
            "an estimate of them needs no pass")


def refusal(row: dict) -> str | None:
    """The note of a rung its replay refused (the CLI's probe table and the Train page's), else None."""
    replayed = row.get("replayed")
    return None if replayed is None or replayed["agrees"] else f"refused: {_moved(replayed)}"


def _rung(ctx: RunContext, pass_ctx: RunContext, state: TrainState, epoch: int, rng: torch.Generator,
          lr: tuple[float, float], steps: int, traced_steps: int, metrics: list[str], train_report, walk_report,
          every: int = 1) -> tuple[dict, Segment | None, dict]:
    """One segment of a rung trained (the state every `every` steps) and walked back; (its row of the table, the
    segment, the walk)."""
    started = time.perf_counter()
    row = {"lr_d": lr[0], "lr_g": lr[1], "steps": steps, "walked": 0, "growth": math.inf, "rate": math.inf,
           "extrapolated": math.inf, "verdict": "unreliable", "stopped_early": False, "diverged": None}
    try:
        seg = record_segment(ctx, epoch, state, rng, lr, steps, train_report, every)
    except DivergenceError as e:
        row.update(diverged=f"training diverged: {e}", seconds=time.perf_counter() - started)
        return row, None, {}
    passed = walk_segment(pass_ctx, seg.trace, metrics, walk_report)
    row.update(walked=passed["walked"], stopped_early=passed["stopped_early"], diverged=passed["diverged"])
    if passed["diverged"] is None:
        # each column the worst of the objectives (as an estimate's verdict takes the worst of its metrics)
        growth, rate, far = np.max([extrapolate(total, traced_steps) for total in passed["norms"]], axis=0).tolist()
        row.update(growth=growth, rate=rate, extrapolated=far, verdict=verdict_for(far)[0])
    row["seconds"] = time.perf_counter() - started
    return row, seg, passed


def walk_segment(pass_ctx: RunContext, seg: Trace, metrics: list[str], report=None) -> dict:
    """The estimator's backward pass over a segment for the stacked objectives, stopped once |u| has grown past
    GROWTH_DOUBTFUL: {"norms": (rows, S + 1) whole-state |u| (nan where not walked), "scores", "walked",
    "stopped_early", "diverged", and what a finished pass stores (`estimator.adopt_pass`): "state", "window",
    "seconds"}."""
    started = time.perf_counter()
    train_ctx = training_context(pass_ctx)
    state = start_pass(pass_ctx, seg, metric_objectives(metrics, pass_ctx.cfg.is_2d))
    out = {"walked": 0, "stopped_early": False, "diverged": None}
    window_start = window_first(seg.steps)
    try:
        for t in walk_back(pass_ctx, seg, state, 0, train_ctx=train_ctx):
            if t == window_start:
                out["window"] = state.scores.clone()
            out["walked"] = seg.steps - t
            if report is not None:
                report(out["walked"])
            scaled = set(state.scales_found) >= set(last_updates(seg)) or not seg.layout.n_buffers
            if t > 0 and scaled and _measured_growth(train_ctx, seg, state) >= GROWTH_DOUBTFUL:
                out["stopped_early"] = True
                break
    except DivergenceError as e:
        out["diverged"] = f"the backward pass diverged: {e}"
        return out
    out["norms"] = pass_norms(train_ctx, seg, state)[..., 2].T.numpy()  # (rows, S + 1)
    out["scores"] = state.scores.numpy()
    out["state"], out["seconds"] = state, time.perf_counter() - started
    return out


def _measured_growth(train_ctx: RunContext, seg: Trace, state) -> float:
    """The largest |u| over the whole state so far, relative to where the pass started, over every row."""
    total = pass_norms(train_ctx, seg, state)[..., 2].numpy()  # (S + 1, rows)
    walked = total[state.t_next + 1:]
    return float(np.max(walked / walked[-1])) if np.all(walked[-1] > 0) else 1.0


def _spot_check(ctx: RunContext, seg: Trace, scores: np.ndarray, metrics: list[str], seed: int) -> dict:
    """Replays of a few random groups and the harmful / helpful sets over the chosen rung's segment, where lanes
    batch (`counterfactual.plan` decides by device and model, never by timing); skipped elsewhere."""
    from .validation.spotcheck import agreement, check_lanes
    from .validation.trust import group_level

    started = time.perf_counter()
    lanes, kinds = check_lanes(seg, ctx.dataset.n_train, 0, dict(zip(metrics, scores)), PROBE_CHECK, seed)
    plan = choose_plan(ctx, seg, len(lanes))
    if plan.mode != "batched":
        return {"skipped": f"lanes would run one after another here ({plan.reason}): not affordable beside the "
                           "probe", "plan": plan.as_dict()}
    valid = ctx.evaluator("valid")

    def measure(s: TrainState) -> dict:
        return valid.evaluate(s.theta_d, s.eval_generator(seg.ema_eval), tuple(metrics))

    outcome = replay_lanes(ctx, seg, lanes, measure, plan)
    per_metric = {}
    for row, m in enumerate(metrics):
        actual = [v[m] - b[m] for v, b in zip(outcome.values, outcome.baselines)]
        agreed = agreement(m, kinds, lanes, np.array([scores[row][lane.removed].sum() for lane in lanes]), actual,
                           harmful_sign(m))
        per_metric[m] = {"groups": group_level(agreed), "lds": agreed["random_groups"]["spearman"],
                         "harmful_set": agreed["harmful_set"]}
    return {"plan": plan.as_dict(), "lanes": len(lanes), "per_metric": per_metric,
            "seconds": time.perf_counter() - started}
