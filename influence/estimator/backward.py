"""The backward pass in memory: the adjoint of the training state carried back through the traced steps.

For every objective row m (objectives stacked into one pass) the adjoint lambda_t = d m / d s_t of the
training state s = (theta_D, theta_G, optimizer buffers, EMA) (`stepmap`) starts at the final state and,
for t = T-1 .. 0, one vector-Jacobian product of the step map gives
    score[j]  -= lambda_{t+1}^T d s_{t+1} / d w_j      (removing j moves its weight w_j from 1 to 0)
    lambda_t   = (1 - damping) (d s_{t+1} / d s_t)^T lambda_{t+1}
For plain SGD this is the paper's u <- u - J^T Lambda u with score += lr_D/B <u_D, grad loss_real(x_j)>.
Adam and momentum buffers carry adjoints of their own (`optimizer_state="exact"`); the 2025 follow-up's
approximation (`"frozen"`) holds the incoming buffers constant.

The stored pass (`runner`) adds checkpoints, resume and progress; the classroom's lr lesson and the
trace-lr probe walk the same loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from ..context import RunContext
from ..counterfactual.plan import BATCHED_CPU_ARCHS
from ..errors import DivergenceError
from ..objectives import Objective
from ..stepmap import KIND_BOTH, KIND_D, KIND_G, TrainState, state_vjp
from ..train import Trace, states_backward, trace_inputs


# ---------------------------------------------------------------- the adjoint at the final state
def objective_gradients(ctx: RunContext, objectives: list[Objective], theta_d: torch.Tensor, theta_g: torch.Tensor):
    """(U_D, U_G, values): one row per objective output, d row / d theta at the given parameters."""
    rows_d, rows_g, values = [], [], []
    for objective in objectives:
        td, tg = theta_d.detach().requires_grad_(True), theta_g.detach().requires_grad_(True)
        out = objective.values(ctx, td, tg)
        for i in range(len(out)):
            gd, gg = torch.autograd.grad(out[i], (td, tg), allow_unused=True, retain_graph=i < len(out) - 1)
            rows_d.append(torch.zeros_like(td) if gd is None else gd.to(td.dtype))
            rows_g.append(torch.zeros_like(tg) if gg is None else gg.to(tg.dtype))
        values += [float(v) for v in out.detach()]
    return torch.stack(rows_d), torch.stack(rows_g), values


def adjoint_at(ctx: RunContext, trace: Trace, objectives: list[Objective], s: TrainState
               ) -> tuple[list[torch.Tensor], list[float]]:
    """d objective / d s per state block (k rows each: every objective's outputs) and the values, at state s."""
    u_d, u_g, values = objective_gradients(ctx, objectives, s.theta_d, s.eval_generator(trace.ema_eval))
    adjoint = [torch.zeros(len(values), size, device=ctx.device, dtype=ctx.dtype) for size in trace.layout.sizes]
    adjoint[0] = u_d
    adjoint[trace.layout.names.index("ema_g") if trace.ema_eval else 1] = u_g
    return adjoint, values


def final_state(ctx: RunContext, trace: Trace) -> TrainState:
    return trace.layout.split(torch.from_numpy(np.array(trace.final_state)).to(ctx.device, ctx.dtype))


def initial_adjoint(ctx: RunContext, trace: Trace, objectives: list[Objective]) -> tuple[list[torch.Tensor], list[float]]:
    """lambda_T per state block (k rows each: every objective's outputs) and their values at the final state."""
    return adjoint_at(ctx, trace, objectives, final_state(ctx, trace))


# CPU: stacked adjoint rows share one vector-Jacobian product only for the dense toys (their products are
# per-call overhead); a conv net's rows cost the same arithmetic batched or not, and a product over all 64 rows
# at once was measured slower than products over 8 rows at a time (tiny: 39.7 s against 20.1 s; mnist-adam's
# net: 31.7 s against 18.0 s; docs/benchmarks.md). The same nets as those whose replay lanes batch on the CPU.
CPU_ROWS_PER_PRODUCT = 8


def rows_per_product(device: torch.device, arch: str) -> int | None:
    """How many stacked adjoint rows one vector-Jacobian product takes (None: all of them). A function of the
    device and the model only, never of timings, so a pass's digits do not depend on the machine's load."""
    if device.type == "cuda" or arch in BATCHED_CPU_ARCHS:
        return None
    return CPU_ROWS_PER_PRODUCT


def backward_step(ctx: RunContext, trace: Trace, t: int, state: TrainState, adjoint: list[torch.Tensor],
                  frozen: bool = False) -> tuple[list[torch.Tensor], torch.Tensor]:
    """One step of the backward pass for k stacked adjoints: (lambda_t per block, score terms (k, |batch|)).

    The score terms are -lambda_{t+1}^T d s_{t+1} / d w_j: the first-order change of the metric when
    instance j of the step's batch is removed. The rows go through `rows_per_product` rows at a time.
    """
    inp, k, chunk = trace_inputs(ctx, trace, t), adjoint[0].shape[0], rows_per_product(ctx.device, ctx.cfg.model.arch)
    if chunk is None or k <= chunk:
        new_adjoint, jw = state_vjp(ctx.gan, trace.rule, state, inp, adjoint, frozen)
        return new_adjoint, -jw
    parts = [state_vjp(ctx.gan, trace.rule, state, inp, [a[i:i + chunk] for a in adjoint], frozen)
             for i in range(0, k, chunk)]
    return [torch.cat([p[0][b] for p in parts]) for b in range(len(adjoint))], -torch.cat([p[1] for p in parts])


# ---------------------------------------------------------------- the backward loop (in memory)
@dataclass
class PassState:
    """What the backward pass carries from one step to the next (and what its checkpoint stores)."""

    adjoint: list[torch.Tensor]  # lambda per state block, (k, size) each
    scores: torch.Tensor  # (k, n_train) float64
    block_norms: torch.Tensor  # (steps + 1, k, blocks): |lambda| per state block; index = traced step
    values: list[float]  # every objective row at the final state
    t_next: int  # the next traced step to walk back
    # `block_scales`' weights of the players whose last update the walk has passed ("d", "g")
    scales_found: dict[str, list[float]] = field(default_factory=dict)


def start_pass(ctx: RunContext, trace: Trace, objectives: list[Objective]) -> PassState:
    """The pass before its first step: lambda_T at the final state, no scores yet."""
    adjoint, values = initial_adjoint(ctx, trace, objectives)
    block_norms = torch.full((trace.steps + 1, len(values), len(adjoint)), float("nan"), dtype=torch.float64)
    block_norms[trace.steps] = _block_norms(adjoint)
    scores = torch.zeros(len(values), ctx.dataset.n_train, dtype=torch.float64)
    return PassState(adjoint, scores, block_norms, values, trace.steps - 1)


# A replacement for the exact backward step (the baselines, `alternatives`): (t, s_t, s_{t+1}, the pass state)
# -> score terms of step t's batch (k, |batch|), updating the pass state's adjoint in place.
Advance = Callable[[int, TrainState, TrainState, PassState], torch.Tensor]


def walk_back(ctx: RunContext, trace: Trace, state: PassState, first: int,
              frozen: bool = False, damping: float = 0.0, train_ctx: RunContext | None = None,
              advance: Advance | None = None) -> Iterator[int]:
    """Walk the pass back from `state.t_next` down to traced step `first`, updating `state` in place.

    Yields each step once it is done (for progress, checkpoints and cancelling). States are
    recomputed by `train_ctx` (the training dtype, so checkpoint segments replay bit for bit)
    and cast to ctx's dtype. Raises DivergenceError when the adjoint or a score stops being finite.
    `advance` replaces the exact step (`backward_step`) with a baseline's.
    """
    train_ctx = train_ctx or ctx
    last = last_updates(trace) if trace.layout.n_buffers else {}
    # the state after the next step: the final one, or (a resumed pass) recomputed with the walk
    after = final_state(ctx, trace) if state.t_next + 1 >= trace.steps else None
    for t, s in states_backward(train_ctx, trace, first, last=min(state.t_next + 1, trace.steps - 1)):
        if t > state.t_next:
            after = trace.layout.split(s.flat().to(ctx.device, ctx.dtype))
            continue
        # The block scales need each player's state before its last update: take it from this walk,
        # which recomputes that segment anyway in checkpoint mode.
        for player in [p for p, at in last.items() if at == t and p not in state.scales_found]:
            state.scales_found[player] = player_scales(train_ctx, trace, player, t, s)
        s = trace.layout.split(s.flat().to(ctx.device, ctx.dtype))
        if advance is None:
            state.adjoint, terms = backward_step(ctx, trace, t, s, state.adjoint, frozen)
        else:
            terms = advance(t, s, after, state)
        state.scores[:, torch.as_tensor(trace.batch(t))] += terms.double().cpu()
        if damping:
            state.adjoint = [(1 - damping) * a for a in state.adjoint]
        state.block_norms[t] = _block_norms(state.adjoint)
        if not (all(torch.isfinite(a).all() for a in state.adjoint) and torch.isfinite(state.scores).all()):
            raise DivergenceError(
                f"influence pass diverged at traced step {t}: the adjoint became NaN or infinite; lower the learning "
                "rate of the traced epochs, trace fewer steps (--last-steps) or add damping"
            )
        state.t_next, after = t - 1, s
        yield t


def pass_norms(ctx: RunContext, trace: Trace, state: PassState) -> torch.Tensor:
    """(steps + 1, k, 3): |lambda_thetaD|, |lambda_thetaG|, |lambda| over the whole state (buffers and EMA
    included, each block in parameter units: `block_scales`); ctx recomputes states in the training dtype."""
    scales = torch.tensor(block_scales(ctx, trace, state.scales_found), dtype=torch.float64)
    b = state.block_norms
    return torch.stack([b[..., 0], b[..., 1], (scales * b).pow(2).sum(dim=-1).sqrt()], dim=-1)


PLAYERS = (("d", (KIND_BOTH, KIND_D)), ("g", (KIND_BOTH, KIND_G)))


def last_updates(trace: Trace) -> dict[str, int]:
    """Each player's last traced update (the step whose state `block_scales` measures); a player without
    one (a trace of a single G half-step) is left out."""
    steps = {p: np.flatnonzero(np.isin(trace.kinds, kinds)) for p, kinds in PLAYERS}
    return {p: int(at[-1]) for p, at in steps.items() if len(at)}


def unmeasured_players(trace: Trace) -> list[str]:
    """Players with optimizer buffers but no traced update: `block_scales` weighs their buffers 1."""
    return [p for p, _ in PLAYERS if p not in last_updates(trace)] if trace.layout.n_buffers else []


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
    EMA weigh 1, so SGD runs keep the paper's |u|. A player without a traced update has nothing to
    measure on; its buffers weigh 1 (`unmeasured_players`; the result's meta says so).

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
    unmeasured = [1.0] * trace.layout.n_buffers
    return [1.0, 1.0] + scales.get("d", unmeasured) + scales.get("g", unmeasured) + ([1.0] if trace.layout.ema else [])


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


