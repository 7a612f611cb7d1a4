"""Check an explanation by replays: the traced steps without a sample's top-k responsible images, and without
k random ones, in one counterfactual replay (counterfactual.replay_lanes; lane 0 = nothing removed).

Every lane measures the objective on all the explanation's samples (the same fixed z, D, class or reference)
and G(z) of the checked samples, so the picked samples can be shown before (lane 0) and after. Actual change
= lane - lane 0 of the same replay; predicted = the sum of the removed images' influences (first order).

Stored under explain/<name>/checks/<key>: .json (lanes with predicted and actual changes of their sample, the
plan, seconds), -predicted.npy / -actual.npy ((lanes, rows): every lane on every row), -generated.npy
((1 + lanes, checked samples, ...): lane 0 first).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass

import numpy as np
import torch

from .. import store
from ..context import RunContext, load_run_config
from ..counterfactual import Lane, replay_lanes
from ..counterfactual.plan import choose_plan, reproduces_training
from ..errors import ConfigError
from ..progress import CancelToken, ProgressFn
from ..stepmap import TrainState
from ..train import Trace
from .explain import Explanation, folder, restore_objective

KINDS = ("top", "random")


@dataclass
class Replayed:
    """Every lane's predicted and actual change on every objective row, and G(z) of the measured samples."""

    predicted: np.ndarray  # (lanes, rows)
    actual: np.ndarray  # (lanes, rows)
    generated: np.ndarray | None  # (1 + lanes, len(samples), ...): lane 0 first; None when no samples were asked for
    plan: dict
    baseline: str
    seconds: float


def replay_removals(run: store.Run, explanation: Explanation, lanes: list[Lane], samples: list[int] | None = None,
                    lanes_per_pass: int | None = None, progress: ProgressFn | None = None,
                    cancel: CancelToken | None = None) -> Replayed:
    """Replay the traced steps (those the explanation's pass walked) without each lane's images; measure the
    objective on every row, and G(z) of `samples` if given."""
    cfg = load_run_config(run)
    trace = Trace.load(run)
    ctx = RunContext.create(cfg, run.root)
    obj = restore_objective(run, explanation, ctx, trace)
    z = torch.from_numpy(explanation.z[samples]).to(ctx.device, ctx.dtype) if samples else None

    def measure(state: TrainState) -> tuple[np.ndarray, np.ndarray | None]:
        theta_d, theta_g = state.theta_d.detach(), state.eval_generator(trace.ema_eval).detach()
        with torch.no_grad():
            return (obj.values(ctx, theta_d, theta_g).double().cpu().numpy(),
                    None if z is None else ctx.gan.generate(theta_g, z).float().cpu().numpy())

    plan = choose_plan(ctx, trace, len(lanes), lanes_per_pass)
    out = replay_lanes(ctx, trace, lanes, measure, plan, first_estimated(explanation, trace), progress, cancel,
                       baseline_from_trace=reproduces_training(ctx, trace))
    actual = np.stack([v[0] - b[0] for v, b in zip(out.values, out.baselines)]) if lanes else np.zeros((0, obj.rows))
    predicted = np.stack([explanation.matrix[:, lane.removed].sum(1) for lane in lanes]) if lanes else actual
    generated = None if z is None else np.stack([out.baseline[1], *(v[1] for v in out.values)])
    return Replayed(predicted, actual, generated, plan.as_dict(),
                    "recorded trajectory" if out.baseline_from_trace else "replayed", out.seconds)


def first_estimated(explanation: Explanation, trace: Trace) -> int:
    """The first traced step the explanation's pass walked (an estimate over the last N steps is checked by
    replaying those steps only)."""
    return trace.steps - explanation.meta["traced_steps"]


def check_arguments(samples: list[int], k: int, n_samples: int, n_traced: int) -> None:
    """ConfigError unless the checked samples are among the n_samples and k is at most half the traced images
    (the random lanes draw k of them)."""
    if not samples or any(not 0 <= i < n_samples for i in samples):
        raise ConfigError(f"check: samples must lie in 0..{n_samples - 1}")
    if not 1 <= k <= n_traced // 2:
        raise ConfigError(f"check: k must lie in 1..{n_traced // 2} (half the {n_traced} traced images)")


def check_key(samples: list[int], k: int, seed: int) -> str:
    return hashlib.sha256(json.dumps([samples, k, seed]).encode()).hexdigest()[:12]


def check(run: store.Run, explanation: Explanation, samples: list[int], k: int, seed: int = 0,
          lanes_per_pass: int | None = None, progress: ProgressFn | None = None,
          cancel: CancelToken | None = None) -> dict:
    """Per checked sample, two lanes: its k most responsible images (harmful side; the largest displacements for
    the 2D position) and k random traced images (seeded per sample), over the steps the pass walked. Stored; a
    stored check is read back."""
    if not explanation.meta["per_sample"]:
        samples = [0]
    samples = sorted({int(i) for i in samples})
    trace = Trace.load(run)
    n_train = explanation.matrix.shape[1]
    traced = np.flatnonzero(trace.step_of_instance(n_train, first_estimated(explanation, trace)) >= 0)
    check_arguments(samples, k, explanation.n_samples, len(traced))
    key = check_key(samples, k, seed)
    base = f"{folder(explanation.name)}/checks/{key}"
    if run.exists(f"{base}.json"):
        return run.read_json(f"{base}.json")
    started = time.perf_counter()
    lanes, kinds = [], []
    for i in samples:
        top = explanation.responsible(i, n_train, "harmful")
        lanes.append(Lane.of(top[np.isin(top, traced)][:k]))
        lanes.append(Lane.of(np.random.default_rng([seed, i]).choice(traced, k, replace=False)))
        kinds += [("top", i), ("random", i)]
    out = replay_removals(run, explanation, lanes, samples, lanes_per_pass, progress, cancel)
    row_sample = explanation.row_sample
    result = {
        "key": key, "k": k, "seed": seed, "samples": samples, "lanes_plan": out.plan, "baseline": out.baseline,
        "seconds": time.perf_counter() - started, "replay_seconds": out.seconds,
        "sign": explanation.meta["sign"], "harmful_sign": explanation.harmful_sign,
        "lanes": [{"kind": kind, "sample": i, "ids": lane.removed.tolist(),
                   "predicted": out.predicted[n][row_sample == i].tolist(),
                   "actual": out.actual[n][row_sample == i].tolist()}
                  for n, ((kind, i), lane) in enumerate(zip(kinds, lanes))],
    }
    result["summary"] = summarize(result, explanation.is_vector)
    run.write_npy(f"{base}-predicted.npy", out.predicted)
    run.write_npy(f"{base}-actual.npy", out.actual)
    run.write_npy(f"{base}-generated.npy", out.generated)
    run.write_json(f"{base}.json", result)
    return result


def summarize(result: dict, is_vector: bool) -> dict:
    """Agreement of the check's lanes. Scalar objectives: the share of samples whose top-k lane moved the way
    predicted, and moved it further the wanted way than the random k did; Pearson r of predicted against
    actual over all lanes. Vector objectives (2D position): per sample the cosine between predicted and actual
    displacement and their length ratio (actual / predicted), and the medians."""
    from scipy import stats

    top = [lane for lane in result["lanes"] if lane["kind"] == "top"]
    rand = {lane["sample"]: lane for lane in result["lanes"] if lane["kind"] == "random"}
    if is_vector:
        cos, ratio = [], []
        for lane in top:
            p, a = np.asarray(lane["predicted"]), np.asarray(lane["actual"])
            denom = np.linalg.norm(p) * np.linalg.norm(a)
            cos.append(float(p @ a / denom) if denom > 0 else float("nan"))
            ratio.append(float(np.linalg.norm(a) / np.linalg.norm(p)) if np.linalg.norm(p) > 0 else float("nan"))
        return {"cosine": cos, "length_ratio": ratio, "median_cosine": float(np.nanmedian(cos)),
                "median_length_ratio": float(np.nanmedian(ratio))}
    sign = result["harmful_sign"]
    direction = [float(np.sign(lane["predicted"][0]) == np.sign(lane["actual"][0])) for lane in top]
    beats = [float(lane["actual"][0] * sign > rand[lane["sample"]]["actual"][0] * sign) for lane in top]
    p = np.array([lane["predicted"][0] for lane in result["lanes"]])
    a = np.array([lane["actual"][0] for lane in result["lanes"]])
    r = float(stats.pearsonr(p, a).statistic) if len(p) >= 3 and np.ptp(p) > 0 and np.ptp(a) > 0 else float("nan")
    return {"top_moves_as_predicted": float(np.mean(direction)), "top_beats_random": float(np.mean(beats)),
            "pearson": r, "n_samples": len(top)}
