"""ASGD-Influence for GANs (Terashita et al., ICLR 2021), exact through the optimizer's state.

Sign convention: influence_j ~= metric(trained without j) - metric(trained with j).
Harmful = removing j improves the metric: influence > 0 for IS and ALL,
influence < 0 for FID and D-loss.

Algorithm (per metric m, all metrics stacked into one pass). The training state
s = (theta_D, theta_G, optimizer buffers, EMA) follows s_{t+1} = step_t(s_t, w) (`stepmap`),
w = per-instance real-loss weights (1 = kept). The adjoint lambda_t = d m / d s_t:
    lambda_T = d m / d s_T at the final state (validation split, fixed validation z): the
        D block for D-loss, the G block (or the EMA block when metrics use the EMA generator);
        buffers start at 0.
    for t = T-1 .. 0 (traced steps, backwards), one vector-Jacobian product of step_t gives
        score[j]  -= lambda_{t+1}^T d s_{t+1} / d w_j      (removing j moves w_j from 1 to 0)
        lambda_t   = (1 - damping) (d s_{t+1} / d s_t)^T lambda_{t+1}
For plain SGD this is the paper's u <- u - J^T Lambda u with score += lr_D/B <u_D, grad loss_real(x_j)>.
Adam and momentum buffers carry adjoints of their own (`optimizer_state="exact"`); the 2025
follow-up's approximation (`"frozen"`) treats them as constants.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import store
from .context import RunContext, load_run_config
from .errors import ConfigError, DivergenceError, StoreError
from .metrics import METRIC_LABELS, check_metric, harmful_sign, sign_sentence
from .progress import CancelToken, ProgressFn, Reporter
from .stepmap import KIND_BOTH, KIND_D, KIND_G, TrainState, state_vjp
from .train import Trace, states_backward, trace_inputs

log = logging.getLogger(__name__)

ESTIMATOR_VERSION = 1
# |u| may grow by this factor over the pass before estimates become doubtful / unreliable.
# Calibrated on the quick preset (stable: growth ~1) and its lr=1e-2 variant (explodes): see docs.
GROWTH_DOUBTFUL = 10.0
GROWTH_UNRELIABLE = 100.0
FLAG_NEVER_TRACED, FLAG_RELIABLE, FLAG_DOUBTFUL, FLAG_UNRELIABLE = 0, 1, 2, 3
FLAG_NAMES = {0: "not in a traced batch", 1: "reliable", 2: "doubtful", 3: "unreliable"}
# float32 ranks as well as float64 against leave-one-out on quick (7.9k parameters) and mnist-adam (174k) at
# a quarter of the time (README, "Precision"); float64 stays for the 2D toys (under 6k), where it costs 1.2x.
AFFORDABLE_FLOAT64_PARAMS = 6_000
OPTIMIZER_STATES = ("exact", "frozen")


@dataclass(frozen=True)
class EstimateOptions:
    dtype: str = field(default="auto", metadata={"help": "auto (float64 for models up to 6k parameters: the 2D toys), float32, float64"})
    damping: float = field(default=0.0, metadata={"help": "u <- (1-d) u - J^T u; biases estimates toward recent steps"})
    last_steps: int | None = field(default=None, metadata={"help": "use only the last N traced steps"})
    checkpoint_every: int = field(default=25, metadata={"help": "save the backward state every N steps (resumable)"})
    optimizer_state: str = field(
        default="exact",
        metadata={"help": "exact (adjoints through Adam's/momentum's buffers) or frozen (buffers as constants, "
                          "the 2025 follow-up's approximation; the same as exact for plain SGD)"},
    )

    def key(self, metric: str, n_params: int) -> str:
        steps = f"-last{self.last_steps}" if self.last_steps else ""
        damp = f"-d{self.damping:g}" if self.damping else ""
        frozen = "-frozen" if self.optimizer_state == "frozen" else ""
        return f"{metric}-{self.resolved_dtype(n_params)}{damp}{steps}{frozen}-v{ESTIMATOR_VERSION}"

    def resolved_dtype(self, n_params: int) -> str:
        if self.dtype == "auto":
            return "float64" if n_params <= AFFORDABLE_FLOAT64_PARAMS else "float32"
        if self.dtype not in ("float32", "float64"):
            raise ConfigError(f"dtype must be auto, float32 or float64, got '{self.dtype}'")
        return self.dtype

    def identity(self, n_params: int) -> dict:
        if self.optimizer_state not in OPTIMIZER_STATES:
            raise ConfigError(f"optimizer_state must be one of {OPTIMIZER_STATES}, got '{self.optimizer_state}'")
        d = asdict(self)
        d.pop("checkpoint_every")
        if d["optimizer_state"] == "exact":
            d.pop("optimizer_state")  # results from before the option existed stay valid
        d["dtype"] = self.resolved_dtype(n_params)
        return d


@dataclass
class InfluenceResult:
    metric: str
    scores: np.ndarray  # (n_train,) float64
    flags: np.ndarray  # (n_train,) int8, FLAG_*
    u_norms: np.ndarray  # (T, 2): |u_D|, |u_G| before each traced step's propagation (index = step)
    meta: dict
    state_norms: np.ndarray | None = None  # (T,): |lambda| over the whole state (the growth factor's); None: older result

    @property
    def verdict(self) -> str:
        return self.meta["verdict"]


def verdict_for(growth: float) -> tuple[str, str]:
    """The verdict and its sentence. `growth` = the largest |u| over the backward pass divided by |u| where
    the pass starts (u = the metric's gradient carried back through the traced steps)."""
    size = f"growth factor {growth:.3g}: carried back through the traced steps, the metric's gradient |u|"
    if not np.isfinite(growth) or growth >= GROWTH_UNRELIABLE:
        return "unreliable", (
            f"unreliable - {size} grows to {growth:.3g}x its starting size, so the steps amplify perturbations; "
            "lower the learning rate of the traced epochs or trace fewer steps"
        )
    if growth >= GROWTH_DOUBTFUL:
        return "doubtful", (
            f"doubtful - {size} grows to {growth:.3g}x its starting size; estimates for instances early in the "
            "trace may be off"
        )
    return "reliable", (f"reliable - {size} stays within {growth:.3g}x its starting size (doubtful from "
                        f"{GROWTH_DOUBTFUL:g}x, unreliable from {GROWTH_UNRELIABLE:g}x)")


def _flags(ratio_at_step: np.ndarray, step_of: np.ndarray) -> np.ndarray:
    flags = np.full(step_of.shape, FLAG_NEVER_TRACED, dtype=np.int8)
    traced = step_of >= 0
    r = ratio_at_step[step_of[traced]]
    flags[traced] = np.where(r >= GROWTH_UNRELIABLE, FLAG_UNRELIABLE, np.where(r >= GROWTH_DOUBTFUL, FLAG_DOUBTFUL, FLAG_RELIABLE))
    return flags


# ---------------------------------------------------------------- gradients of metrics
def metric_gradients(ctx: RunContext, metrics: list[str], theta_d: torch.Tensor, theta_g: torch.Tensor):
    """(U_D, U_G, values): rows are d metric / d theta at the given parameters, on the validation split."""
    evaluator = ctx.evaluator("valid")
    rows_d, rows_g, values = [], [], []
    for name in metrics:
        td, tg = theta_d.detach().requires_grad_(True), theta_g.detach().requires_grad_(True)
        value = evaluator.metric(name, td, tg)
        gd, gg = torch.autograd.grad(value, (td, tg), allow_unused=True)
        rows_d.append(torch.zeros_like(td) if gd is None else gd.to(td.dtype))
        rows_g.append(torch.zeros_like(tg) if gg is None else gg.to(tg.dtype))
        values.append(float(value.detach()))
    return torch.stack(rows_d), torch.stack(rows_g), values


def initial_adjoint(ctx: RunContext, trace: Trace, metrics: list[str]) -> tuple[list[torch.Tensor], list[float]]:
    """lambda_T per state block (k rows each) and the metrics' values at the final state."""
    final = trace.layout.split(torch.from_numpy(np.array(trace.final_state)).to(ctx.device, ctx.dtype))
    u_d, u_g, values = metric_gradients(ctx, metrics, final.theta_d, final.eval_generator(trace.ema_eval))
    adjoint = [torch.zeros(len(metrics), size, device=ctx.device, dtype=ctx.dtype) for size in trace.layout.sizes]
    adjoint[0] = u_d
    adjoint[trace.layout.names.index("ema_g") if trace.ema_eval else 1] = u_g
    return adjoint, values


def backward_step(ctx: RunContext, trace: Trace, t: int, state: TrainState, adjoint: list[torch.Tensor],
                  frozen: bool = False) -> tuple[list[torch.Tensor], torch.Tensor]:
    """One step of the backward pass for k stacked adjoints: (lambda_t per block, score terms (k, |batch|)).

    The score terms are -lambda_{t+1}^T d s_{t+1} / d w_j: the first-order change of the metric when
    instance j of the step's batch is removed.
    """
    new_adjoint, jw = state_vjp(ctx.gan, trace.rule, state, trace_inputs(ctx, trace, t), adjoint, frozen)
    return new_adjoint, -jw


# ---------------------------------------------------------------- the pass
def estimate(
    run: store.Run,
    metrics: list[str],
    options: EstimateOptions = EstimateOptions(),
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> dict[str, InfluenceResult]:
    """Influence of every training instance on each metric, from cache where possible."""
    cfg = load_run_config(run)
    if not metrics:
        raise ConfigError("name at least one metric")
    for m in metrics:
        check_metric(m, cfg.is_2d)
    trace = Trace.load(run)
    n_params = trace.final.shape[0]
    options.identity(n_params)  # rejects bad options before anything is computed
    if options.last_steps is not None and not 1 <= options.last_steps <= trace.steps:
        raise ConfigError(f"last_steps must lie in 1..{trace.steps} (the traced steps)")
    results = {m: r for m in dict.fromkeys(metrics) if (r := load_result(run, m, options, n_params)) is not None}
    todo = [m for m in dict.fromkeys(metrics) if m not in results]
    if todo:
        ctx = RunContext.create(cfg, run.root, dtype=options.resolved_dtype(n_params))
        results.update(_backward_pass(ctx, run, trace, todo, options, progress, cancel))
        if not run.exists(CHOSEN):  # the first result computed is the one in use until the user picks another
            run.write_json(CHOSEN, {"name": result_name(options, n_params)})
        write_table(run, ctx.dataset)
    return {m: results[m] for m in metrics}


# ---------------------------------------------------------------- the backward loop (in memory)
@dataclass
class PassState:
    """What the backward pass carries from one step to the next (and what its checkpoint stores)."""

    adjoint: list[torch.Tensor]  # lambda per state block, (k, size) each
    scores: torch.Tensor  # (k, n_train) float64
    block_norms: torch.Tensor  # (steps + 1, k, blocks): |lambda| per state block; index = traced step
    values: list[float]  # the metrics at the final state (validation split)
    t_next: int  # the next traced step to walk back
    # `block_scales`' weights of the players whose last update the walk has passed ("d", "g")
    scales_found: dict[str, list[float]] = field(default_factory=dict)


def start_pass(ctx: RunContext, trace: Trace, metrics: list[str]) -> PassState:
    """The pass before its first step: lambda_T at the final state, no scores yet."""
    adjoint, values = initial_adjoint(ctx, trace, metrics)
    block_norms = torch.full((trace.steps + 1, len(metrics), len(adjoint)), float("nan"), dtype=torch.float64)
    block_norms[trace.steps] = _block_norms(adjoint)
    scores = torch.zeros(len(metrics), ctx.dataset.n_train, dtype=torch.float64)
    return PassState(adjoint, scores, block_norms, values, trace.steps - 1)


def walk_back(ctx: RunContext, trace: Trace, state: PassState, first: int,
              frozen: bool = False, damping: float = 0.0, train_ctx: RunContext | None = None) -> Iterator[int]:
    """Walk the pass back from `state.t_next` down to traced step `first`, updating `state` in place.

    Yields each step once it is done (for progress, checkpoints and cancelling). States are
    recomputed by `train_ctx` (the training dtype, so checkpoint segments replay bit for bit)
    and cast to ctx's dtype. Raises DivergenceError when the adjoint or a score stops being finite.
    """
    train_ctx = train_ctx or ctx
    last = last_updates(trace) if trace.layout.n_buffers else {}
    for t, s in states_backward(train_ctx, trace, first, last=state.t_next):
        # The block scales need each player's state before its last update: take it from this walk,
        # which recomputes that segment anyway in checkpoint mode.
        for player in [p for p, at in last.items() if at == t and p not in state.scales_found]:
            state.scales_found[player] = player_scales(train_ctx, trace, player, t, s)
        s = trace.layout.split(s.flat().to(ctx.device, ctx.dtype))
        state.adjoint, terms = backward_step(ctx, trace, t, s, state.adjoint, frozen)
        state.scores[:, torch.as_tensor(trace.batch(t))] += terms.double().cpu()
        if damping:
            state.adjoint = [(1 - damping) * a for a in state.adjoint]
        state.block_norms[t] = _block_norms(state.adjoint)
        if not (all(torch.isfinite(a).all() for a in state.adjoint) and torch.isfinite(state.scores).all()):
            raise DivergenceError(
                f"influence pass diverged at traced step {t}: the adjoint became NaN or infinite; lower the learning "
                "rate of the traced epochs, trace fewer steps (--last-steps) or add damping"
            )
        state.t_next = t - 1
        yield t


def pass_norms(ctx: RunContext, trace: Trace, state: PassState) -> torch.Tensor:
    """(steps + 1, k, 3): |lambda_thetaD|, |lambda_thetaG|, |lambda| over the whole state (buffers and EMA
    included, each block in parameter units: `block_scales`); ctx recomputes states in the training dtype."""
    scales = torch.tensor(block_scales(ctx, trace, state.scales_found), dtype=torch.float64)
    b = state.block_norms
    return torch.stack([b[..., 0], b[..., 1], (scales * b).pow(2).sum(dim=-1).sqrt()], dim=-1)


def growth_of(total: np.ndarray, first: int = 0) -> tuple[np.ndarray, float]:
    """(|lambda| relative to where the pass starts, per traced step; the growth factor over steps first..)."""
    start_norm = total[-1]
    ratio = total / start_norm if start_norm > 0 else np.ones_like(total)
    return ratio, float(np.nanmax(ratio[first:]))


def _backward_pass(ctx, run, trace, metrics, options, progress, cancel) -> dict[str, InfluenceResult]:
    started = time.perf_counter()
    n_params = trace.final.shape[0]
    first = trace.steps - (options.last_steps or trace.steps)
    # States are recomputed (checkpoint mode) in the training dtype, bit for bit, then cast.
    train_ctx = ctx if str(ctx.dtype) == f"torch.{ctx.cfg.train.dtype}" else ctx.with_dtype(getattr(torch, ctx.cfg.train.dtype))
    partial = f"influence/_partial/{'+'.join(metrics)}-{options.key('', n_params)}"
    loaded = _load_partial(run, partial, metrics, options, n_params)
    if loaded is None:
        state, elapsed = start_pass(ctx, trace, metrics), 0.0
    else:
        state, elapsed = loaded
        state.adjoint = [a.to(ctx.device, ctx.dtype) for a in state.adjoint]
    report = Reporter("influence", trace.steps - first, progress, cancel)
    for t in walk_back(ctx, trace, state, first, options.optimizer_state == "frozen", options.damping, train_ctx):
        done = trace.steps - t
        if options.checkpoint_every and done % options.checkpoint_every == 0 and t > first:
            _save_partial(run, partial, metrics, options, n_params, state, elapsed + time.perf_counter() - started)
        report(done)
    seconds = elapsed + time.perf_counter() - started
    step_of = trace.step_of_instance(ctx.dataset.n_train, first)
    norms = pass_norms(train_ctx, trace, state)
    out = {}
    for i, metric in enumerate(metrics):
        out[metric] = _save_result(run, metric, options, n_params, state.scores[i].numpy(), norms[:, i].numpy(),
                                   step_of, state.values[i], seconds / len(metrics), first, trace)
    run.forget(partial + "/")  # the finished result replaces the pass's checkpoint (and any temp file
    folder = run.path(partial)  # of a checkpoint write that a kill interrupted)
    for f in sorted(folder.iterdir()) if folder.is_dir() else []:
        if f.is_file():
            f.unlink(missing_ok=True)
    return out


PLAYERS = (("d", (KIND_BOTH, KIND_D)), ("g", (KIND_BOTH, KIND_G)))


def last_updates(trace: Trace) -> dict[str, int]:
    """Each player's last traced update (the step whose state `block_scales` measures)."""
    return {p: int(np.flatnonzero(np.isin(trace.kinds, kinds))[-1]) for p, kinds in PLAYERS}


def block_scales(ctx: RunContext, trace: Trace, found: dict[str, list[float]] | None = None) -> list[float]:
    """Weights that put every state block's adjoint in parameter units, for the whole-state norm.

    An optimizer buffer's adjoint has the units of d metric / d buffer (Adam's v is ~1e-8, so
    its adjoint is huge without anything growing). A removal enters the state as a
    perturbation of a player's gradient; its first step moves each buffer b by delta_b and the
    player's parameters by delta_theta. Weighing lambda_b by RMS(delta_b) / RMS(delta_theta)
    (measured on the player's last traced update, gradient perturbed in proportion to
    itself) makes sum_b lambda_b delta_b comparable block by block. A buffer with decay beta
    sums about 1 / (1 - beta) steps of such perturbations (Adam's v: 1,000), so its adjoint
    accumulates by that much without anything becoming unstable: the weight also carries
    (1 - beta), so that the growth factor reads explosion, not memory. Parameters and the
    EMA weigh 1, so SGD runs keep the paper's |u|.

    `found`: players' weights already measured (by the pass's own walk); the others are
    measured here, with one walk for both players' states.
    """
    if not trace.layout.n_buffers:
        return [1.0] * len(trace.layout.sizes)
    scales, last = dict(found or {}), last_updates(trace)
    wanted = {t for p, t in last.items() if p not in scales}
    if wanted:
        for t, s in states_backward(ctx, trace, first=min(wanted), last=max(wanted)):
            for player in [p for p, at in last.items() if at == t and p not in scales]:
                scales[player] = player_scales(ctx, trace, player, t, s)
    return [1.0, 1.0] + scales["d"] + scales["g"] + ([1.0] if trace.layout.ema else [])


def player_scales(ctx: RunContext, trace: Trace, player: str, t: int, s: TrainState) -> list[float]:
    """`block_scales`' weights of one player's buffers, measured on its update at traced step t from state s."""
    rule, gen = trace.rule, torch.Generator().manual_seed(0 if player == "d" else 1)
    inp = trace_inputs(ctx, trace, t)
    td, tg = s.theta_d.detach().requires_grad_(True), s.theta_g.detach().requires_grad_(True)
    g_d, g_g, _, _ = ctx.gan.step_gradients(td, tg, inp.x, inp.z, inp.w, players=player)
    theta, bufs, grad = (s.theta_d, s.buf_d, g_d) if player == "d" else (s.theta_g, s.buf_g, g_g)
    lr, count = (inp.lr_d, inp.count_d) if player == "d" else (inp.lr_g, inp.count_g)
    mask = ctx.gan.decay_mask_d if player == "d" else ctx.gan.decay_mask_g
    delta = 1e-4 * grad * torch.randn(grad.shape, generator=gen, dtype=torch.float64).to(grad)
    plus = rule.optimizer.update(theta, bufs, grad + delta, lr, count, mask)
    minus = rule.optimizer.update(theta, bufs, grad - delta, lr, count, mask)
    moved = float((plus[0] - minus[0]).double().pow(2).mean().sqrt())
    return [(1 - decay) * float((p - m).double().pow(2).mean().sqrt()) / moved if moved > 0 else 1.0
            for p, m, decay in zip(plus[1], minus[1], rule.optimizer.buffer_decays)]


def _block_norms(adjoint: list[torch.Tensor]) -> torch.Tensor:
    """(k, blocks): |lambda| of each state block."""
    return torch.stack([a.double().norm(dim=1) for a in adjoint], dim=1).cpu()


def _save_partial(run, partial, metrics, options, n_params, state: PassState, elapsed: float) -> None:
    run.write_state_dict(f"{partial}/state.pt", {
        **{f"adjoint_{i}": a.cpu() for i, a in enumerate(state.adjoint)}, "scores": state.scores,
        "block_norms": state.block_norms,
        "values": torch.tensor(state.values, dtype=torch.float64), "t_next": torch.tensor(state.t_next),
        "elapsed": torch.tensor(elapsed),
    })
    run.write_json(f"{partial}/meta.json", {"metrics": metrics, "options": options.identity(n_params),
                                            "blocks": len(state.adjoint), "scales_found": state.scales_found})


def _load_partial(run, partial, metrics, options, n_params) -> tuple[PassState, float] | None:
    if not run.exists(f"{partial}/state.pt"):
        return None
    try:
        meta = run.read_json(f"{partial}/meta.json")
        s = run.read_state_dict(f"{partial}/state.pt")
        if meta.get("metrics") != metrics or meta.get("options") != options.identity(n_params):
            return None
        adjoint = [s[f"adjoint_{i}"] for i in range(meta["blocks"])]
        state = PassState(adjoint, s["scores"], s["block_norms"], s["values"].tolist(), int(s["t_next"]),
                          meta["scales_found"])
    except (StoreError, KeyError) as e:
        log.warning("ignoring the influence pass checkpoint, the pass starts again: %s", e)
        return None  # damaged or older partial state: start the pass again
    return state, float(s["elapsed"])


def _save_result(run, metric, options, n_params, scores, norms, step_of, value, seconds, first, trace) -> InfluenceResult:
    total = norms[:, 2]  # |lambda| over the whole state, index = traced step
    ratio, growth = growth_of(total, first)
    # An instance at step t is scored with u after the steps t+1.. : its amplification is ratio[t+1].
    verdict, message = verdict_for(growth)
    flags = _flags(ratio[1:], step_of)
    key = options.key(metric, n_params)
    meta = {
        "metric": metric, "label": METRIC_LABELS[metric], "sign": sign_sentence(metric),
        "harmful_sign": harmful_sign(metric), "options": options.identity(n_params),
        "optimizer": trace.rule.optimizer.kind, "ema_generator": trace.ema_eval,
        "estimator_version": ESTIMATOR_VERSION, "traced_steps": trace.steps - first,
        "trace_first_step": trace.first_step, "metric_value_valid": value, "seconds": seconds,
        "growth": growth, "verdict": verdict, "verdict_message": message,
        "n_flagged": {FLAG_NAMES[f]: int((flags == f).sum()) for f in FLAG_NAMES},
    }
    run.write_npy(f"influence/{key}/scores.npy", scores)
    run.write_npy(f"influence/{key}/flags.npy", flags)
    run.write_npy(f"influence/{key}/u_norms.npy", norms[:, :2])
    run.write_npy(f"influence/{key}/state_norms.npy", total)
    run.write_json(f"influence/{key}/meta.json", meta)
    return InfluenceResult(metric, scores, flags, norms[:, :2], meta, total)


def load_result(run: store.Run, metric: str, options: EstimateOptions, n_params: int) -> InfluenceResult | None:
    """The cached result if present, intact and computed with the same options; else None."""
    key = options.key(metric, n_params)
    if not run.exists(f"influence/{key}/meta.json"):
        return None
    try:
        meta = run.read_json(f"influence/{key}/meta.json")
        if meta["options"] != options.identity(n_params) or meta["estimator_version"] != ESTIMATOR_VERSION:
            return None
        return _read_result(run, key)
    except StoreError as e:
        log.warning("recomputing a damaged influence result: %s", e)
        return None  # a damaged cache entry is recomputed


def _read_result(run: store.Run, folder: str) -> InfluenceResult:
    meta = run.read_json(f"influence/{folder}/meta.json")
    state = run.read_npy(f"influence/{folder}/state_norms.npy") if run.exists(f"influence/{folder}/state_norms.npy") else None
    return InfluenceResult(meta["metric"], run.read_npy(f"influence/{folder}/scores.npy"),
                           run.read_npy(f"influence/{folder}/flags.npy"),
                           run.read_npy(f"influence/{folder}/u_norms.npy"), meta, state)


# ---------------------------------------------------------------- named results
# Estimates with different options are separate results, named by those options (the key without
# the metric, e.g. "float64-last10-v1"). One of them is in use for the table, cleansing's predicted
# change, the app and exports: the one chosen (influence/chosen.json), else the first computed.
# A later estimate with other options never takes its place unless chosen.
CHOSEN = "influence/chosen.json"


def result_name(options: EstimateOptions, n_params: int) -> str:
    return options.key("", n_params)[1:]


def result_sets(run: store.Run) -> dict[str, dict[str, InfluenceResult]]:
    """Every result on disk: name -> metric -> result, the oldest name first."""
    out: dict[str, dict[str, InfluenceResult]] = {}
    base = run.path("influence")
    if not base.exists():
        return out
    for d in sorted(base.iterdir(), key=lambda p: p.stat().st_mtime):
        if d.name.startswith("_") or not (d / "meta.json").exists():
            continue
        try:
            r = _read_result(run, d.name)
        except StoreError:
            continue
        out.setdefault(d.name[len(r.metric) + 1:], {})[r.metric] = r
    return out


def chosen_name(run: store.Run, sets: dict | None = None) -> str | None:
    sets = result_sets(run) if sets is None else sets
    if run.exists(CHOSEN):
        try:
            name = run.read_json(CHOSEN)["name"]
        except (StoreError, KeyError, TypeError):
            name = None
        if name in sets:
            return name
    return next(iter(sets), None)


def choose_results(run: store.Run, name: str, dataset=None) -> None:
    """Use the named result from now on (table, cleansing, app, exports); rewrites the table."""
    sets = result_sets(run)
    if name not in sets:
        raise ConfigError(f"run {run.run_id} has no influence result '{name}'; it has: {', '.join(sets) or 'none'}")
    run.write_json(CHOSEN, {"name": name})
    if dataset is not None:
        write_table(run, dataset)


def cached_results(run: store.Run, name: str | None = None) -> dict[str, InfluenceResult]:
    """metric -> result of the named result set (default: the one in use, see chosen_name)."""
    sets = result_sets(run)
    return sets.get(name or chosen_name(run, sets) or "", {})


def harmful_order(result: InfluenceResult) -> np.ndarray:
    """Training ids from most harmful to most helpful (instances never traced last)."""
    key = result.scores * result.meta["harmful_sign"]
    key = np.where(result.flags == FLAG_NEVER_TRACED, -np.inf, key)
    return np.argsort(-key, kind="stable")


def influence_table(run: store.Run, dataset, name: str | None = None) -> pd.DataFrame:
    """id, path (own images), label, then influence, harmful rank (1 = most harmful) and flag per metric."""
    results = cached_results(run, name)
    table = pd.DataFrame({"id": np.arange(dataset.n_train)})
    if dataset.train_paths is not None:
        table["path"] = dataset.train_paths
    y = dataset.train.y
    table["label"] = y.numpy() if y is not None else -1
    for metric, r in results.items():
        rank = np.empty(dataset.n_train, dtype=np.int64)
        rank[harmful_order(r)] = np.arange(1, dataset.n_train + 1)
        table[f"influence_{metric}"] = r.scores
        table[f"harmful_rank_{metric}"] = rank
        table[f"flag_{metric}"] = [FLAG_NAMES[int(f)] for f in r.flags]
    table.attrs["sign"] = {m: r.meta["sign"] for m, r in results.items()}
    return table


def table_metadata(run: store.Run, results: dict[str, InfluenceResult], name: str | None) -> dict:
    """What the table's numbers are: which named result, its options, and each metric's 'if removed' in full."""
    from .honesty import if_removed

    cfg = load_run_config(run)
    total = run.read_json("summary.json")["steps"] if run.exists("summary.json") else None
    return {
        "run_id": run.run_id, "result": name,
        "options": next(iter(results.values())).meta["options"] if results else None,
        "metrics": {m: {"sign": r.meta["sign"], "verdict": r.meta["verdict"],
                        "if_removed": if_removed(m, r.meta["traced_steps"], total, cfg.train.epochs) if total else None}
                    for m, r in results.items()},
        "columns": {"id": "training instance id (position in the run's training set)",
                    "path": "file path relative to data.root (own images only)",
                    "label": "class (-1 = unlabelled)", "influence_<m>": "estimated change of metric m if removed",
                    "harmful_rank_<m>": "1 = most harmful", "flag_<m>": "per-instance reliability"},
    }


def write_table(run: store.Run, dataset) -> pd.DataFrame:
    """influence/table.parquet and table.csv (plain CSV) of the result in use; table.json says what they hold."""
    name = chosen_name(run)
    table = influence_table(run, dataset, name)
    run.write("influence/table.parquet", _parquet_bytes(table))
    run.write("influence/table.csv", table.to_csv(index=False).encode())
    run.write_json("influence/table.json", table_metadata(run, cached_results(run, name), name))
    return table


def _parquet_bytes(table: pd.DataFrame) -> bytes:
    import io

    buf = io.BytesIO()
    table.to_parquet(buf, index=False)
    return buf.getvalue()


def result_dir(run: store.Run, metric: str, options: EstimateOptions, n_params: int) -> Path:
    return run.path(f"influence/{options.key(metric, n_params)}")

