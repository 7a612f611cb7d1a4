"""The training step as one pure map s_{t+1} = step(s_t, batch, z, w).

The state s = (theta_D, theta_G, D's optimizer buffers, G's optimizer buffers, the EMA of
theta_G). Training, replay and the estimator all call `step`: a replay with nothing
removed reproduces training bit for bit, and the estimator's vector-Jacobian product is
taken through exactly the map that training applied, optimizer state and EMA included.

A traced step is one of three kinds:
- KIND_BOTH: a simultaneous step (both gradients at the same parameters; the paper);
- KIND_D: the discriminator half of an alternating step (a real minibatch and its own z);
- KIND_G: the generator half (its own z, at the updated D; no real data, so no instance terms).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .gan import GanFunctions
from .optim import OptimizerSpec

KIND_BOTH, KIND_D, KIND_G = 0, 1, 2
KIND_PLAYERS = {KIND_BOTH: "both", KIND_D: "d", KIND_G: "g"}


@dataclass(frozen=True)
class TrainingRule:
    """What turns gradients into the next state (beyond the GAN's loss): optimizer and EMA."""

    optimizer: OptimizerSpec = OptimizerSpec()
    ema_decay: float = 0.0  # 0 = no EMA generator

    @staticmethod
    def from_config(cfg) -> "TrainingRule":
        return TrainingRule(OptimizerSpec.from_train_config(cfg.train), cfg.train.ema_decay)

    def as_dict(self) -> dict:
        return {"optimizer": self.optimizer.as_dict(), "ema_decay": self.ema_decay}

    @staticmethod
    def from_dict(d: dict) -> "TrainingRule":
        return TrainingRule(OptimizerSpec.from_dict(d["optimizer"]), d["ema_decay"])


@dataclass
class TrainState:
    theta_d: torch.Tensor
    theta_g: torch.Tensor
    buf_d: tuple[torch.Tensor, ...]
    buf_g: tuple[torch.Tensor, ...]
    ema: torch.Tensor | None

    def tensors(self) -> list[torch.Tensor]:
        return [self.theta_d, self.theta_g, *self.buf_d, *self.buf_g] + ([self.ema] if self.ema is not None else [])

    def with_tensors(self, tensors: list[torch.Tensor]) -> "TrainState":
        nb = len(self.buf_d)
        ema = tensors[2 + 2 * nb] if self.ema is not None else None
        return TrainState(tensors[0], tensors[1], tuple(tensors[2 : 2 + nb]), tuple(tensors[2 + nb : 2 + 2 * nb]), ema)

    def flat(self) -> torch.Tensor:
        return torch.cat([t.detach().reshape(-1) for t in self.tensors()])

    def eval_generator(self, use_ema: bool) -> torch.Tensor:
        """The generator parameters that metrics (and so influence) are taken on."""
        return self.ema if use_ema and self.ema is not None else self.theta_g


@dataclass(frozen=True)
class StateLayout:
    """Blocks of the flat state vector stored in traces: names and sizes, in `TrainState.tensors` order."""

    names: tuple[str, ...]
    sizes: tuple[int, ...]
    n_buffers: int  # buffers per player
    ema: bool

    @staticmethod
    def of(n_d: int, n_g: int, rule: TrainingRule) -> "StateLayout":
        bufs = rule.optimizer.buffer_names
        names = ("theta_d", "theta_g", *(f"{b}_d" for b in bufs), *(f"{b}_g" for b in bufs))
        sizes = (n_d, n_g, *([n_d] * len(bufs)), *([n_g] * len(bufs)))
        if rule.ema_decay:
            names, sizes = names + ("ema_g",), sizes + (n_g,)
        return StateLayout(names, sizes, len(bufs), bool(rule.ema_decay))

    @property
    def numel(self) -> int:
        return sum(self.sizes)

    @property
    def n_d(self) -> int:
        return self.sizes[0]

    @property
    def n_theta(self) -> int:
        return self.sizes[0] + self.sizes[1]

    def split(self, flat: torch.Tensor) -> TrainState:
        parts = list(flat.split(list(self.sizes)))
        nb = self.n_buffers
        return TrainState(parts[0], parts[1], tuple(parts[2 : 2 + nb]), tuple(parts[2 + nb : 2 + 2 * nb]),
                          parts[2 + 2 * nb] if self.ema else None)

    def as_dict(self) -> dict:
        return {"names": list(self.names), "sizes": list(self.sizes), "n_buffers": self.n_buffers, "ema": self.ema}

    @staticmethod
    def from_dict(d: dict) -> "StateLayout":
        return StateLayout(tuple(d["names"]), tuple(d["sizes"]), d["n_buffers"], d["ema"])


def initial_state(theta_d: torch.Tensor, theta_g: torch.Tensor, rule: TrainingRule) -> TrainState:
    return TrainState(theta_d, theta_g, rule.optimizer.init_buffers(theta_d), rule.optimizer.init_buffers(theta_g),
                      theta_g.clone() if rule.ema_decay else None)


@dataclass
class StepInputs:
    """Everything a step reads besides the state (all recorded in the trace)."""

    kind: int
    x: torch.Tensor  # real minibatch (empty for KIND_G)
    z: torch.Tensor  # the step's latents; B = len(z) is the loss divisor, also when instances are removed
    w: torch.Tensor  # real-loss weight per instance (1 kept, 0 removed)
    lr_d: float
    lr_g: float
    count_d: int  # updates each player made before this step (Adam's bias correction)
    count_g: int


def step(
    gan: GanFunctions,
    rule: TrainingRule,
    s: TrainState,
    inp: StepInputs,
    differentiable: bool = False,
    frozen: bool = False,
) -> tuple[TrainState, float | None, float | None]:
    """(s_{t+1}, loss_D, loss_G). Blocks a step leaves alone are returned as the same tensor objects.

    differentiable=True: the caller's state tensors and w require grad and the result
    stays differentiable w.r.t. them (the estimator's vector-Jacobian product).
    frozen=True: the incoming optimizer buffers count as constants (the follow-up's approximation); the
    fresh gradient is still differentiated through the whole update.
    """
    if differentiable:
        td, tg = s.theta_d, s.theta_g
    else:
        td, tg = s.theta_d.detach().requires_grad_(True), s.theta_g.detach().requires_grad_(True)
    g_d, g_g, l_d, l_g = gan.step_gradients(td, tg, inp.x, inp.z, inp.w, differentiable, KIND_PLAYERS[inp.kind])
    theta_d, buf_d, theta_g, buf_g, ema = s.theta_d, s.buf_d, s.theta_g, s.buf_g, s.ema
    opt = rule.optimizer
    if g_d is not None:
        theta_d, buf_d = opt.update(s.theta_d, s.buf_d, g_d, inp.lr_d, inp.count_d, gan.decay_mask_d, frozen)
    if g_g is not None:
        theta_g, buf_g = opt.update(s.theta_g, s.buf_g, g_g, inp.lr_g, inp.count_g, gan.decay_mask_g, frozen)
        if ema is not None:
            ema = rule.ema_decay * s.ema + (1 - rule.ema_decay) * theta_g
    new = TrainState(theta_d, theta_g, buf_d, buf_g, ema)
    return new, (None if l_d is None else float(l_d)), (None if l_g is None else float(l_g))


def state_vjp(
    gan: GanFunctions,
    rule: TrainingRule,
    s: TrainState,
    inp: StepInputs,
    adjoint: list[torch.Tensor],
    frozen: bool = False,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """One vector-Jacobian product of the step map for k stacked adjoints.

    adjoint[i] has shape (k, size of block i) and is d metric / d s_{t+1}. Returns
    (d metric / d s_t per block, d metric / d w of shape (k, |batch|)) in one autograd call.

    Frozen mode (the follow-up's approximation) holds every step's incoming buffers constant, so nothing
    depends on a buffer: its adjoint is zero at every step (no objective reads a buffer either). The new
    buffers m', v' do depend on the fresh gradient, but with a zero adjoint they add nothing, so they are
    left out of the product; d s_{t+1} / d (theta, w) still runs through them into theta'. The follow-up's
    code does the same: it carries adjoints of the parameters only.
    """
    leaves = [t.detach().requires_grad_(True) for t in s.tensors()]
    w = inp.w.detach().requires_grad_(True)
    new, _, _ = step(gan, rule, s.with_tensors(leaves), StepInputs(**{**inp.__dict__, "w": w}), True, frozen)
    outs = new.tensors()
    nb = len(s.buf_d)
    buffer_blocks = set(range(2, 2 + 2 * nb)) if frozen else set()
    changed = [i for i, (o, leaf) in enumerate(zip(outs, leaves)) if o is not leaf and i not in buffer_blocks]
    k = adjoint[0].shape[0]
    grads = _stacked_grad([outs[i] for i in changed], leaves + [w], [adjoint[i] for i in changed])
    out = []
    for i, leaf in enumerate(leaves):
        g = grads[i]
        g = torch.zeros_like(adjoint[i]) if g is None else (g if k > 1 else g[None]).detach()
        if i in buffer_blocks:
            out.append(torch.zeros_like(adjoint[i]))
        else:
            out.append(g if i in changed else adjoint[i] + g)
    jw = grads[-1]
    jw = torch.zeros(k, len(w), dtype=w.dtype, device=w.device) if jw is None else (jw if k > 1 else jw[None]).detach()
    return out, jw


def _stacked_grad(outputs: list[torch.Tensor], inputs: list[torch.Tensor], cotangents: list[torch.Tensor],
                  per_row: bool | None = None) -> tuple[torch.Tensor | None, ...]:
    """Vector-Jacobian products for k stacked cotangents (leading axis): one vmapped backward on the CPU;
    on CUDA one backward per row, since autograd's batched backward gave wrong shapes there (torch 2.11 on an
    H200: "size of tensor a (100) must match the size of tensor b (8)" with 2-3 metrics)."""
    k = cotangents[0].shape[0]
    if per_row is None:
        per_row = inputs[0].device.type == "cuda"
    if k == 1 or not per_row:
        return torch.autograd.grad(outputs, inputs, [c if k > 1 else c[0] for c in cotangents],
                                   allow_unused=True, is_grads_batched=k > 1)
    rows = [torch.autograd.grad(outputs, inputs, [c[r] for c in cotangents], allow_unused=True,
                                retain_graph=r < k - 1) for r in range(k)]
    return tuple(None if parts[0] is None else torch.stack(parts) for parts in zip(*rows))


# The backward pass holds one segment of states in memory; it recomputes every step once,
# whatever the segment length, so the longest segment the budget allows stores the least.
SEGMENT_BUDGET_BYTES = 4 * 1024**3


@dataclass(frozen=True)
class TraceStorage:
    """How a trace stores its states: the mode training used, steps between stored states, and why."""

    mode: str  # "snapshots" or "checkpoints"
    every: int
    reason: str

    def as_dict(self) -> dict:
        return {"trace_mode": self.mode, "checkpoint_every": self.every, "trace_mode_reason": self.reason}


def trace_storage(traced_steps: int, mode: str, every: int | None, state_bytes: int, input_bytes: int,
                  budget_mb: int) -> TraceStorage:
    """The trace's storage for train.trace_mode (auto: snapshots when the whole trace, a state before every traced
    step plus the final one and the steps' inputs, fits `budget_mb`, else checkpoints). Both give the same results
    bit for bit; checkpoints cost a recompute of each segment in the backward pass and in replays."""
    snapshot_mb = ((traced_steps + 1) * state_bytes + traced_steps * input_bytes) / 2**20
    size = f"snapshots of the {traced_steps} traced steps take {_mb(snapshot_mb)}"
    if mode == "auto":
        fits = snapshot_mb <= budget_mb
        mode = "snapshots" if fits else "checkpoints"
        why = f"auto: {size}, {'within' if fits else 'over'} the {budget_mb} MB budget (train.trace_budget_mb)"
    else:
        why = f"{mode} as configured ({size})"
    k = checkpoint_spacing(traced_steps, mode, every, state_bytes)
    if mode == "checkpoints":
        stored_mb = ((math.ceil(traced_steps / k) + 1) * state_bytes + traced_steps * input_bytes) / 2**20
        why += f"; a state every {k} steps takes {_mb(stored_mb)}"
    return TraceStorage(mode, k, why)


def _mb(mb: float) -> str:
    return f"{mb / 1024:.3g} GB" if mb >= 1024 else f"{mb:.3g} MB"


def checkpoint_spacing(traced_steps: int, mode: str, every: int | None, state_bytes: int) -> int:
    """Steps between stored states: 1 for snapshots; for checkpoints `every`, else the longest
    segment whose states fit SEGMENT_BUDGET_BYTES (at least about sqrt(steps), the classic choice)."""
    if mode == "snapshots":
        return 1
    if every:
        return every
    fits = max(1, SEGMENT_BUDGET_BYTES // max(1, state_bytes))
    return max(1, int(round(np.sqrt(traced_steps))), min(traced_steps, fits))


def batched_step(gan: GanFunctions, rule: TrainingRule, inp: StepInputs, n_buffers: int,
                 tensors: tuple[torch.Tensor, ...], w: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """`step` for L replay lanes at once, as a pure function of the state tensors (`TrainState.tensors` order)
    and the batch weights: every one carries a leading lane axis; x, z and the lrs are shared.

    Only the forward pass is vmapped (torch.func.vmap); each player's gradient comes from one autograd pass
    over the lanes' summed losses (lane k's parameters reach only lane k's loss). Vmapping the backward pass as
    well (vmap of torch.func.vjp) was 1.45x slower on toy2d at 32 lanes (docs/benchmarks.md). The same losses
    and update as `step`, so a lane agrees with `step` to float rounding.
    """
    players = KIND_PLAYERS[inp.kind]
    theta_d, theta_g = tensors[0], tensors[1]
    buf_d, buf_g = tuple(tensors[2:2 + n_buffers]), tuple(tensors[2 + n_buffers:2 + 2 * n_buffers])
    ema = tensors[2 + 2 * n_buffers] if len(tensors) > 2 + 2 * n_buffers else None

    def losses(td: torch.Tensor, tg: torch.Tensor, wl: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(loss for loss in gan.losses(td, tg, inp.x, inp.z, wl, players) if loss is not None)

    with torch.enable_grad():
        td, tg = theta_d.detach().requires_grad_(True), theta_g.detach().requires_grad_(True)
        values = torch.func.vmap(losses)(td, tg, w)
        wanted = [(values[0], td)] if players in ("both", "d") else []
        wanted += [(values[-1], tg)] if players in ("both", "g") else []
        # one call per player: a single call over both would add L_G's gradient w.r.t. theta_D to D's
        grads = [torch.autograd.grad(v.sum(), leaf, retain_graph=j + 1 < len(wanted))[0]
                 for j, (v, leaf) in enumerate(wanted)]
    # the update is elementwise (`optim`): on the lanes' (L, P) tensors as they are, without vmap's overhead
    update = rule.optimizer.update
    if players in ("both", "d"):
        theta_d, buf_d = update(theta_d, buf_d, grads[0], inp.lr_d, inp.count_d, gan.decay_mask_d)
    if players in ("both", "g"):
        theta_g, buf_g = update(theta_g, buf_g, grads[-1], inp.lr_g, inp.count_g, gan.decay_mask_g)
        if ema is not None:
            ema = rule.ema_decay * ema + (1 - rule.ema_decay) * theta_g
    return (theta_d, theta_g, *buf_d, *buf_g) + ((ema,) if ema is not None else ())
