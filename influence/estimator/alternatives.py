"""Baselines from the same trace: what the adjoint recursion buys (`EstimateOptions.method`).

The exact estimate carries lambda_t = d metric / d s_t back through every traced step. A baseline
does not. A real image reaches a generator's metric only through the generator's next update,
which reads the discriminator that the image moved. Without that one hop, both baselines would be
identically 0 for metrics of G alone (IS, FID, ALL). So each baseline carries an adjoint c through the
steps up to and including the generator's next update, and restarts it there:

    score[j] -= c_{t+1}^T d s_{t+1} / d w_j         (as the exact pass, with c for lambda)
    c_t       = (d s_{t+1} / d s_t)^T r_t            r_t = the restart if step t updates G, else c_{t+1}
    c_T       = lambda_T

- no-propagation: r_t = lambda_T, the metric's gradient at the final state;
- tracin: r_t = d metric / d s at s_{t+1}, the state after that update (TracIn: the test gradient
  at the training step's own parameters, times the instance's gradient there, times lr).

In a simultaneous scheme the hop is the one step after the instance's; alternating, it is the
steps up to G's next half-step. With a metric of theta_D alone the hop adds nothing beyond a
discriminator step: plain SGD, alternating, gives no-propagation score_j = sum over j's steps of
lr_D / B <grad_D metric(s_T), grad_D loss_real(x_j)>. The products are the exact pass's
(`stepmap.state_vjp`, walked by `backward.walk_back`); a simultaneous step takes c_{t+1} and r_t as
stacked rows of one product.
"""

from __future__ import annotations

import torch

from ..context import RunContext
from ..objectives import Objective
from ..stepmap import KIND_D, KIND_G, TrainState, state_vjp
from ..train import Trace, trace_inputs
from .backward import Advance, PassState, adjoint_at, initial_adjoint

BASELINES = ("no-propagation", "tracin")


def baseline_advance(ctx: RunContext, trace: Trace, objectives: list[Objective], method: str,
                     frozen: bool = False) -> Advance:
    """`walk_back`'s step for a baseline: the pass state's adjoint holds c."""
    if method not in BASELINES:
        raise ValueError(method)
    restart_at_end = initial_adjoint(ctx, trace, objectives)[0] if method == "no-propagation" else None

    def advance(t: int, s: TrainState, after: TrainState, state: PassState) -> torch.Tensor:
        inp = trace_inputs(ctx, trace, t)
        kind = int(trace.kinds[t])
        if kind == KIND_D:  # no generator update here: c goes on through the discriminator's step
            state.adjoint, jw = state_vjp(ctx.gan, trace.rule, s, inp, state.adjoint, frozen)
            return -jw
        restart = restart_at_end if restart_at_end is not None else adjoint_at(ctx, trace, objectives, after)[0]
        if kind == KIND_G:  # no real data: only the restart
            state.adjoint, jw = state_vjp(ctx.gan, trace.rule, s, inp, restart, frozen)
            return -jw
        k = state.adjoint[0].shape[0]
        both, jw = state_vjp(ctx.gan, trace.rule, s, inp, [torch.cat([c, r]) for c, r in zip(state.adjoint, restart)],
                             frozen)
        state.adjoint = [b[k:] for b in both]
        return -jw[:k]

    return advance


def baseline_verdict(method: str) -> tuple[str, str]:
    """A baseline's verdict and its sentence: none of its own (its adjoint restarts at every generator update, so
    its size says nothing about stability); validation says how far it agrees with replays."""
    what = {"no-propagation": "the metric's gradient at the final state",
            "tracin": "the metric's gradient at each step's state"}[method]
    return "baseline", (f"baseline ({method}): {what}, carried only through the generator's next update, without "
                        "the recursion through the traced steps; no stability verdict - compare it with the exact "
                        "estimate by validation")
