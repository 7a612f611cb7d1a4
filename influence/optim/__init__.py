"""Optimizer update rules as pure functions: (theta, buffers, gradient) -> (theta', buffers').

The training step, replay and the estimator all apply these, so the estimator can
differentiate the very update that training made, optimizer state included:
- `sgd`: theta' = theta - lr g (the paper; L2 weight decay lives in the loss).
- `momentum`: heavy ball b' = mu b + g, theta' = theta - lr b' (Nesterov: theta - lr (g + mu b')),
  as torch.optim.SGD does it.
- `adam`: m' = b1 m + (1-b1) g, v' = b2 v + (1-b2) g^2, theta' = theta - lr m'/(1-b1^k) / (sqrt(v'/(1-b2^k)) + eps),
  k = the player's update count; `decoupled_wd` adds AdamW's - lr wd theta (kernels only).

`frozen=True` is the 2025 follow-up's approximation (*Data Cleansing for GANs*; its code's
`differential_adam_step` / `differential_sgd_step`): the incoming buffers (Adam's m and v, the
momentum buffer) count as constants; the fresh gradient is still differentiated through the whole
update, Adam's m' = b1 m + (1-b1) g and v' = b2 v + (1-b2) g^2 in the denominator included. The
exact mode differentiates through everything.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

OPTIMIZERS = ("sgd", "momentum", "adam")
_BUFFERS = {"sgd": (), "momentum": ("mom",), "adam": ("m", "v")}


@dataclass(frozen=True)
class OptimizerSpec:
    """One player's optimizer; both players use the same spec with their own lr and buffers."""

    kind: str = "sgd"
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    momentum: float = 0.9
    nesterov: bool = False
    decoupled_wd: float = 0.0  # AdamW's coefficient; 0 = weight decay as an L2 term of the loss

    @staticmethod
    def from_train_config(t) -> "OptimizerSpec":
        return OptimizerSpec(kind=t.optimizer, betas=tuple(t.betas), eps=t.eps, momentum=t.momentum,
                             nesterov=t.nesterov, decoupled_wd=t.weight_decay if t.decoupled_wd else 0.0)

    @staticmethod
    def from_dict(d: dict) -> "OptimizerSpec":
        return OptimizerSpec(**{**d, "betas": tuple(d["betas"])})

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def buffer_names(self) -> tuple[str, ...]:
        return _BUFFERS[self.kind]

    @property
    def buffer_decays(self) -> tuple[float, ...]:
        """Each buffer's decay per step: it remembers about 1 / (1 - decay) steps of gradients."""
        return {"sgd": (), "momentum": (self.momentum,), "adam": self.betas}[self.kind]

    def init_buffers(self, theta: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(torch.zeros_like(theta) for _ in self.buffer_names)

    def update(
        self,
        theta: torch.Tensor,
        buffers: tuple[torch.Tensor, ...],
        grad: torch.Tensor,
        lr: float,
        count: int,
        decay_mask: torch.Tensor,
        frozen: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """The player's update; `count` = its updates before this one (Adam's bias correction)."""
        if self.kind == "sgd":
            return theta - lr * grad, ()
        if frozen:
            buffers = tuple(b.detach() for b in buffers)
        if self.kind == "momentum":
            (b,) = buffers
            b = self.momentum * b + grad
            direction = grad + self.momentum * b if self.nesterov else b
            return theta - lr * direction, (b,)
        b1, b2 = self.betas
        m, v = buffers
        m = b1 * m + (1 - b1) * grad
        v = b2 * v + (1 - b2) * grad * grad
        k = count + 1
        # clamp: sqrt has an infinite derivative at 0 (a parameter that never got a gradient)
        denom = (v / (1 - b2**k)).clamp_min(torch.finfo(v.dtype).tiny).sqrt() + self.eps
        new = theta - lr * (m / (1 - b1**k)) / denom
        if self.decoupled_wd:
            new = new - (lr * self.decoupled_wd) * decay_mask * theta
        return new, (m, v)
