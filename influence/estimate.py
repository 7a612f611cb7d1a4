"""ASGD-Influence for GANs trained with simultaneous SGD (Terashita et al., ICLR 2021).

Sign convention: influence_j ~= metric(trained without j) - metric(trained with j).
Harmful = removing j improves the metric: influence > 0 for IS and ALL,
influence < 0 for FID and D-loss.

Algorithm (per metric m, all metrics stacked into one pass):
    u = d m / d theta at the final parameters (validation split, fixed validation z);
        the D block is zero for metrics of G alone.
    for t = T-1 .. 0 (traced steps, backwards), with g_t(theta, w) the step's gradient map:
        score[j] += d <Lambda u, g_t> / d w_j      = lr_D / B * <u_D, grad_D loss_real(x_j)>
        u        <- (1 - damping) u - J_t^T Lambda u,   J_t = d g_t / d theta (cross blocks included)
Both terms come from one vector-Jacobian product of g_t w.r.t. (theta_D, theta_G, w)
with cotangent Lambda u = (lr_D u_D, lr_G u_G): the exact transpose of the
simultaneous update, and the per-instance terms of a whole batch at once.
"""

from __future__ import annotations

import logging
import time
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
from .train import Trace

log = logging.getLogger(__name__)

ESTIMATOR_VERSION = 1
# |u| may grow by this factor over the pass before estimates become doubtful / unreliable.
# Calibrated on the quick preset (stable: growth ~1) and its lr=1e-2 variant (explodes): see docs.
GROWTH_DOUBTFUL = 10.0
GROWTH_UNRELIABLE = 100.0
FLAG_NEVER_TRACED, FLAG_RELIABLE, FLAG_DOUBTFUL, FLAG_UNRELIABLE = 0, 1, 2, 3
FLAG_NAMES = {0: "not in a traced batch", 1: "reliable", 2: "doubtful", 3: "unreliable"}
AFFORDABLE_FLOAT64_PARAMS = 50_000


@dataclass(frozen=True)
class EstimateOptions:
    dtype: str = field(default="auto", metadata={"help": "auto (float64 for models up to 50k parameters), float32, float64"})
    damping: float = field(default=0.0, metadata={"help": "u <- (1-d) u - J^T u; biases estimates toward recent steps"})
    last_steps: int | None = field(default=None, metadata={"help": "use only the last N traced steps"})
    checkpoint_every: int = field(default=25, metadata={"help": "save the backward state every N steps (resumable)"})

    def key(self, metric: str, n_params: int) -> str:
        steps = f"-last{self.last_steps}" if self.last_steps else ""
        damp = f"-d{self.damping:g}" if self.damping else ""
        return f"{metric}-{self.resolved_dtype(n_params)}{damp}{steps}-v{ESTIMATOR_VERSION}"

    def resolved_dtype(self, n_params: int) -> str:
        if self.dtype == "auto":
            return "float64" if n_params <= AFFORDABLE_FLOAT64_PARAMS else "float32"
        if self.dtype not in ("float32", "float64"):
            raise ConfigError(f"dtype must be auto, float32 or float64, got '{self.dtype}'")
        return self.dtype

    def identity(self, n_params: int) -> dict:
        d = asdict(self)
        d.pop("checkpoint_every")
        d["dtype"] = self.resolved_dtype(n_params)
        return d


@dataclass
class InfluenceResult:
    metric: str
    scores: np.ndarray  # (n_train,) float64
    flags: np.ndarray  # (n_train,) int8, FLAG_*
    u_norms: np.ndarray  # (T, 2): |u_D|, |u_G| before each traced step's propagation (index = step)
    meta: dict

    @property
    def verdict(self) -> str:
        return self.meta["verdict"]


def verdict_for(growth: float) -> tuple[str, str]:
    if not np.isfinite(growth) or growth >= GROWTH_UNRELIABLE:
        return "unreliable", (
            f"unreliable - the traced steps amplify perturbations by a factor {growth:.3g}; lower the learning "
            "rate of the traced epochs or trace fewer steps"
        )
    if growth >= GROWTH_DOUBTFUL:
        return "doubtful", (
            f"doubtful - the traced steps amplify perturbations by a factor {growth:.3g}; estimates for instances "
            "early in the trace may be off"
        )
    return "reliable", f"reliable - perturbations grow at most {growth:.3g}x over the traced steps"


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


def backward_step(ctx: RunContext, trace: Trace, t: int, u_d: torch.Tensor, u_g: torch.Tensor):
    """One step of the backward pass for k stacked u vectors.

    Returns (J^T Lambda u for the D block, for the G block, per-instance terms (k, |batch|)).
    """
    ids = trace.batch(t)
    flat = torch.from_numpy(np.array(trace.params[t])).to(ctx.device, ctx.dtype)
    td, tg = (p.detach().requires_grad_(True) for p in trace.split(flat))
    x = ctx.train_x[torch.as_tensor(ids, device=ctx.device)]
    z = torch.from_numpy(np.array(trace.z[t, : len(ids)])).to(ctx.device, ctx.dtype)
    w = torch.ones(len(ids), device=ctx.device, dtype=ctx.dtype, requires_grad=True)
    g_d, g_g, _, _ = ctx.gan.step_gradients(td, tg, x, z, w, create_graph=True)
    lr_d, lr_g = (float(v) for v in trace.lrs[t])
    cot_d, cot_g = lr_d * u_d, lr_g * u_g
    if u_d.shape[0] == 1:
        jd, jg, jw = torch.autograd.grad((g_d, g_g), (td, tg, w), (cot_d[0], cot_g[0]))
        return jd[None], jg[None], jw[None]
    return torch.autograd.grad((g_d, g_g), (td, tg, w), (cot_d, cot_g), is_grads_batched=True)


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
    if options.last_steps is not None and not 1 <= options.last_steps <= trace.steps:
        raise ConfigError(f"last_steps must lie in 1..{trace.steps} (the traced steps)")
    results = {m: r for m in dict.fromkeys(metrics) if (r := load_result(run, m, options, n_params)) is not None}
    todo = [m for m in dict.fromkeys(metrics) if m not in results]
    if todo:
        ctx = RunContext.create(cfg, run.root, dtype=options.resolved_dtype(n_params))
        results.update(_backward_pass(ctx, run, trace, todo, options, progress, cancel))
        write_table(run, ctx.dataset)
    return {m: results[m] for m in metrics}


def _backward_pass(ctx, run, trace, metrics, options, progress, cancel) -> dict[str, InfluenceResult]:
    started = time.perf_counter()
    n_params = trace.final.shape[0]
    first = trace.steps - (options.last_steps or trace.steps)
    partial = f"influence/_partial/{'+'.join(metrics)}-{options.key('', n_params)}"
    state = _load_partial(run, partial, metrics, options, n_params)
    if state is None:
        theta_d, theta_g = trace.split(torch.from_numpy(np.array(trace.final)).to(ctx.device, ctx.dtype))
        u_d, u_g, values = metric_gradients(ctx, metrics, theta_d, theta_g)
        scores = torch.zeros(len(metrics), ctx.dataset.n_train, dtype=torch.float64)
        norms = torch.full((trace.steps + 1, len(metrics), 2), float("nan"), dtype=torch.float64)
        norms[trace.steps] = _norms(u_d, u_g)
        t_next, elapsed = trace.steps - 1, 0.0
    else:
        u_d, u_g, scores, norms, values, t_next, elapsed = state
        u_d, u_g = u_d.to(ctx.device, ctx.dtype), u_g.to(ctx.device, ctx.dtype)
    report = Reporter("influence", trace.steps - first, progress, cancel)
    for t in range(t_next, first - 1, -1):
        jd, jg, jw = backward_step(ctx, trace, t, u_d, u_g)
        ids = torch.as_tensor(trace.batch(t))
        scores[:, ids] += jw.detach().double().cpu()
        u_d = (1 - options.damping) * u_d - jd.detach()
        u_g = (1 - options.damping) * u_g - jg.detach()
        norms[t] = _norms(u_d, u_g)
        if not (torch.isfinite(u_d).all() and torch.isfinite(u_g).all() and torch.isfinite(scores).all()):
            raise DivergenceError(
                f"influence pass diverged at traced step {t}: u became NaN or infinite; lower the learning rate "
                "of the traced epochs, trace fewer steps (--last-steps) or add damping"
            )
        done = trace.steps - t
        if options.checkpoint_every and done % options.checkpoint_every == 0 and t > first:
            _save_partial(run, partial, metrics, options, n_params, u_d, u_g, scores, norms, values, t - 1,
                          elapsed + time.perf_counter() - started)
        report(done)
    seconds = elapsed + time.perf_counter() - started
    step_of = trace.step_of_instance(ctx.dataset.n_train, first)
    out = {}
    for i, metric in enumerate(metrics):
        out[metric] = _save_result(run, metric, options, n_params, scores[i].numpy(), norms[:, i].numpy(),
                                   step_of, values[i], seconds / len(metrics), first, trace)
    run.forget(partial + "/")  # the finished result replaces the pass's checkpoint (and any temp file
    folder = run.path(partial)  # of a checkpoint write that a kill interrupted)
    for f in sorted(folder.iterdir()) if folder.is_dir() else []:
        if f.is_file():
            f.unlink(missing_ok=True)
    return out


def _norms(u_d: torch.Tensor, u_g: torch.Tensor) -> torch.Tensor:
    return torch.stack([u_d.norm(dim=1), u_g.norm(dim=1)], dim=1).double().cpu()


def _save_partial(run, partial, metrics, options, n_params, u_d, u_g, scores, norms, values, t_next, elapsed) -> None:
    run.write_state_dict(f"{partial}/state.pt", {
        "u_d": u_d.cpu(), "u_g": u_g.cpu(), "scores": scores, "norms": norms,
        "values": torch.tensor(values, dtype=torch.float64), "t_next": torch.tensor(t_next),
        "elapsed": torch.tensor(elapsed),
    })
    run.write_json(f"{partial}/meta.json", {"metrics": metrics, "options": options.identity(n_params)})


def _load_partial(run, partial, metrics, options, n_params):
    if not run.exists(f"{partial}/state.pt"):
        return None
    try:
        meta = run.read_json(f"{partial}/meta.json")
        s = run.read_state_dict(f"{partial}/state.pt")
    except StoreError as e:
        log.warning("ignoring the influence pass checkpoint, the pass starts again: %s", e)
        return None  # damaged partial state: start the pass again
    if meta != {"metrics": metrics, "options": options.identity(n_params)}:
        return None
    return (s["u_d"], s["u_g"], s["scores"], s["norms"], s["values"].tolist(), int(s["t_next"]), float(s["elapsed"]))


def _save_result(run, metric, options, n_params, scores, norms, step_of, value, seconds, first, trace) -> InfluenceResult:
    total = np.linalg.norm(norms, axis=1)  # |u| over both players, index = traced step
    start_norm = total[-1]
    ratio = total / start_norm if start_norm > 0 else np.ones_like(total)
    # An instance at step t is scored with u after the steps t+1.. : its amplification is ratio[t+1].
    growth = float(np.nanmax(ratio[first:]))
    verdict, message = verdict_for(growth)
    flags = _flags(ratio[1:], step_of)
    key = options.key(metric, n_params)
    meta = {
        "metric": metric, "label": METRIC_LABELS[metric], "sign": sign_sentence(metric),
        "harmful_sign": harmful_sign(metric), "options": options.identity(n_params),
        "estimator_version": ESTIMATOR_VERSION, "traced_steps": trace.steps - first,
        "trace_first_step": trace.first_step, "metric_value_valid": value, "seconds": seconds,
        "growth": growth, "verdict": verdict, "verdict_message": message,
        "n_flagged": {FLAG_NAMES[f]: int((flags == f).sum()) for f in FLAG_NAMES},
    }
    run.write_npy(f"influence/{key}/scores.npy", scores)
    run.write_npy(f"influence/{key}/flags.npy", flags)
    run.write_npy(f"influence/{key}/u_norms.npy", norms)
    run.write_json(f"influence/{key}/meta.json", meta)
    return InfluenceResult(metric, scores, flags, norms, meta)


def load_result(run: store.Run, metric: str, options: EstimateOptions, n_params: int) -> InfluenceResult | None:
    """The cached result if present, intact and computed with the same options; else None."""
    key = options.key(metric, n_params)
    if not run.exists(f"influence/{key}/meta.json"):
        return None
    try:
        meta = run.read_json(f"influence/{key}/meta.json")
        if meta["options"] != options.identity(n_params) or meta["estimator_version"] != ESTIMATOR_VERSION:
            return None
        return InfluenceResult(metric, run.read_npy(f"influence/{key}/scores.npy"),
                               run.read_npy(f"influence/{key}/flags.npy"),
                               run.read_npy(f"influence/{key}/u_norms.npy"), meta)
    except StoreError as e:
        log.warning("recomputing a damaged influence result: %s", e)
        return None  # a damaged cache entry is recomputed


def cached_results(run: store.Run) -> dict[str, InfluenceResult]:
    """All influence results on disk for this run, newest option set per metric."""
    out: dict[str, InfluenceResult] = {}
    base = run.path("influence")
    if not base.exists():
        return out
    for d in sorted(base.iterdir(), key=lambda p: p.stat().st_mtime):
        if d.name.startswith("_") or not (d / "meta.json").exists():
            continue
        try:
            meta = run.read_json(f"influence/{d.name}/meta.json")
            out[meta["metric"]] = InfluenceResult(meta["metric"], run.read_npy(f"influence/{d.name}/scores.npy"),
                                                  run.read_npy(f"influence/{d.name}/flags.npy"),
                                                  run.read_npy(f"influence/{d.name}/u_norms.npy"), meta)
        except StoreError:
            continue
    return out


def harmful_order(result: InfluenceResult) -> np.ndarray:
    """Training ids from most harmful to most helpful (instances never traced last)."""
    key = result.scores * result.meta["harmful_sign"]
    key = np.where(result.flags == FLAG_NEVER_TRACED, -np.inf, key)
    return np.argsort(-key, kind="stable")


def influence_table(run: store.Run, dataset) -> pd.DataFrame:
    results = cached_results(run)
    table = pd.DataFrame({"id": np.arange(dataset.n_train)})
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


def write_table(run: store.Run, dataset) -> pd.DataFrame:
    """influence/table.parquet and .csv: id, label, influence, harmful rank (1 = most harmful), flag per metric."""
    table = influence_table(run, dataset)
    buf = _parquet_bytes(table)
    run.write("influence/table.parquet", buf)
    header = "".join(f"# {m}: {s}\n" for m, s in table.attrs["sign"].items())
    run.write("influence/table.csv", (header + table.to_csv(index=False)).encode())
    return table


def _parquet_bytes(table: pd.DataFrame) -> bytes:
    import io

    buf = io.BytesIO()
    table.to_parquet(buf, index=False)
    return buf.getvalue()


def result_dir(run: store.Run, metric: str, options: EstimateOptions, n_params: int) -> Path:
    return run.path(f"influence/{options.key(metric, n_params)}")

