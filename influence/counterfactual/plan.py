"""How to run a set of lanes: sequentially or batched, and how many lanes per batched pass.

Chosen by memory and by measured throughput (`bench/lanes.py`), never by timing at run time: a
lane's digits depend on the way it ran (batched lanes agree with sequential ones to float rounding,
not bit for bit), so the choice is a deterministic function of the model, the device and the
number of lanes, and every result records the plan it ran with.
- On a GPU, batching wins everywhere: as many lanes as fit the memory budget.
- On the CPU it pays only for small dense nets, whose steps are dominated by per-call overhead (the
  2D toys); a conv net fills the cores already, and its batched step was measured slower. So the CPU
  default is sequential for conv nets and for anything above BATCHED_CPU_MAX_PARAMS parameters.
"""

from __future__ import annotations

import torch

from .. import conditions
from ..context import RunContext
from ..errors import ConfigError
from ..stepmap import step
from ..train import Trace, to_state, trace_inputs
from .lanes import LanePlan

MAX_LANES = 64
# CPU: batched lanes measured faster than sequential only for the dense toys (fcgan, 5.7k-5.9k parameters;
# bench/lanes.py, docs/benchmarks.md); conv nets were slower at every K.
BATCHED_CPU_ARCHS = ("fcgan",)
BATCHED_CPU_MAX_PARAMS = 50_000
CPU_MEMORY_BUDGET = 4 * 1024**3
GPU_MEMORY_SHARE = 0.5  # of the free device memory


def lane_bytes(ctx: RunContext, trace: Trace) -> int:
    """Memory one more lane takes in a batched pass: its state, the state it becomes, and what one step keeps
    for its backward (measured by summing the tensors autograd saves during a step of this run)."""
    saved = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    t = int(trace.stored_steps[-1])
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step(ctx.gan, trace.rule, to_state(ctx, trace.layout, trace.states[-1]), trace_inputs(ctx, trace, t))
    state = trace.layout.numel * torch.empty((), dtype=ctx.dtype).element_size()
    return 3 * state + 2 * saved  # vjp keeps the forward's tensors for two pullbacks


def memory_budget(ctx: RunContext) -> int:
    if ctx.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(ctx.device)
        return int(free * GPU_MEMORY_SHARE)
    return CPU_MEMORY_BUDGET


def choose_plan(ctx: RunContext, trace: Trace, n_lanes: int, lanes: int | None = None) -> LanePlan:
    """The plan for n_lanes removal lanes. lanes: None = automatic, 1 = sequential, K > 1 = batched, K per pass
    (fewer where the memory budget holds fewer)."""
    if lanes is not None and lanes < 1:
        raise ConfigError("lanes must be at least 1 (1 = one lane after another)")
    if lanes == 1:
        return LanePlan("sequential", 1, "asked for")
    n_params = trace.layout.n_theta
    if lanes is None and ctx.device.type != "cuda":
        if ctx.cfg.model.arch not in BATCHED_CPU_ARCHS or n_params > BATCHED_CPU_MAX_PARAMS:
            return LanePlan("sequential", 1, f"CPU, {ctx.cfg.model.arch} with {n_params:,} parameters: batched lanes "
                                             "were measured slower than one after another for such nets")
    fit = max(1, memory_budget(ctx) // lane_bytes(ctx, trace))
    want = min(lanes or MAX_LANES, max(n_lanes, 1))
    k = min(want, fit)
    where = "GPU" if ctx.device.type == "cuda" else "CPU"
    reason = "asked for" if lanes else f"{where}, {n_params:,} parameters"
    if k < want:
        reason += f"; {fit} lanes fit the memory budget"
    if k == 1:
        return LanePlan("sequential", 1, reason)
    return LanePlan("batched", k, reason)


def reproduces_training(ctx: RunContext, trace: Trace) -> bool:
    """Whether a sequential replay here gives the recorded trajectory bit for bit: the trace recorded the
    conditions of its training (torch version, thread count, device, dtype, processor) and they are this
    process's."""
    return trace.conditions is not None and not conditions.differences(trace.conditions,
                                                                        conditions.current(ctx.device, ctx.dtype))
