"""Optimizer update rules against independent implementations: torch.optim for the updates themselves, and
the 2025 follow-up's `differential_adam_step` / `differential_sgd_step` (written here from its formulas) for
the frozen mode's Jacobian, taken with torch.func.jacrev on a tiny GAN."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jacrev

from influence.gan import GanFunctions
from influence.optim import OptimizerSpec
from influence.stepmap import (
    KIND_BOTH,
    KIND_D,
    KIND_G,
    KIND_PLAYERS,
    StepInputs,
    TrainingRule,
    TrainState,
    state_vjp,
)


# ---------------------------------------------------------------- the update against torch.optim
def _torch_steps(make, theta0, grads, lrs):
    p = nn.Parameter(theta0.clone())
    opt = make([p])
    out = []
    for g, lr in zip(grads, lrs):
        for group in opt.param_groups:
            group["lr"] = lr
        p.grad = g.clone()
        opt.step()
        out.append(p.detach().clone())
    return out


def _our_steps(spec: OptimizerSpec, theta0, grads, lrs, mask, l2: float = 0.0):
    theta, bufs, out = theta0.clone(), spec.init_buffers(theta0), []
    for k, (g, lr) in enumerate(zip(grads, lrs)):
        # coupled L2 lives in the loss (gan.step_gradients): its gradient wd * theta joins g
        theta, bufs = spec.update(theta, bufs, g + l2 * mask * theta, lr, k, mask)
        out.append(theta)
    return out


CASES = {
    "adam": (OptimizerSpec("adam", betas=(0.5, 0.999), eps=1e-8),
             lambda p: torch.optim.Adam(p, betas=(0.5, 0.999), eps=1e-8, foreach=False), 0.0),
    "adam-coupled-l2": (OptimizerSpec("adam", betas=(0.9, 0.99)),
                        lambda p: torch.optim.Adam(p, betas=(0.9, 0.99), weight_decay=0.03, foreach=False), 0.03),
    "adamw": (OptimizerSpec("adam", betas=(0.0, 0.99), decoupled_wd=0.05),
              lambda p: torch.optim.AdamW(p, betas=(0.0, 0.99), weight_decay=0.05, foreach=False), 0.0),
    "momentum": (OptimizerSpec("momentum", momentum=0.9),
                 lambda p: torch.optim.SGD(p, lr=1.0, momentum=0.9, foreach=False), 0.0),
    "nesterov": (OptimizerSpec("momentum", momentum=0.8, nesterov=True),
                 lambda p: torch.optim.SGD(p, lr=1.0, momentum=0.8, nesterov=True, foreach=False), 0.0),
    "sgd": (OptimizerSpec("sgd"), lambda p: torch.optim.SGD(p, lr=1.0, foreach=False), 0.0),
}


@pytest.mark.parametrize("name", list(CASES))
def test_updates_equal_torch_optim_over_steps_with_changing_learning_rates(name):
    spec, make, l2 = CASES[name]
    gen = torch.Generator().manual_seed(0)
    theta0 = torch.randn(50, generator=gen, dtype=torch.float64)
    grads = [torch.randn(50, generator=gen, dtype=torch.float64) * 10 ** (-k % 3) for k in range(12)]
    lrs = [1e-2] * 4 + [3e-3] * 4 + [1e-3, 5e-2, 1e-3, 2e-2]  # a schedule, then a change at every step
    ours = _our_steps(spec, theta0, grads, lrs, torch.ones(50, dtype=torch.float64), l2)
    theirs = _torch_steps(make, theta0, grads, lrs)
    for k, (a, b) in enumerate(zip(ours, theirs)):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14), (name, k, float((a - b).abs().max()))
    assert not torch.allclose(ours[-1], theta0, atol=1e-3)  # the parameters did move


def test_decoupled_weight_decay_leaves_masked_entries_alone_like_a_param_group_without_it():
    spec = OptimizerSpec("adam", betas=(0.9, 0.999), decoupled_wd=0.1)
    gen = torch.Generator().manual_seed(1)
    theta0, mask = torch.randn(40, generator=gen, dtype=torch.float64), (torch.arange(40) % 3 != 0).double()
    grads, lrs = [torch.randn(40, generator=gen, dtype=torch.float64) for _ in range(6)], [1e-2, 1e-2, 5e-3, 5e-3, 1e-3, 2e-2]
    ours = _our_steps(spec, theta0, grads, lrs, mask)[-1]
    keep = mask.bool()
    p_decay, p_plain = nn.Parameter(theta0[keep].clone()), nn.Parameter(theta0[~keep].clone())
    opt = torch.optim.AdamW([{"params": [p_decay], "weight_decay": 0.1}, {"params": [p_plain], "weight_decay": 0.0}],
                            betas=(0.9, 0.999), foreach=False)
    for g, lr in zip(grads, lrs):
        for group in opt.param_groups:
            group["lr"] = lr
        p_decay.grad, p_plain.grad = g[keep].clone(), g[~keep].clone()
        opt.step()
    assert torch.allclose(ours[keep], p_decay.detach(), rtol=1e-12)
    assert torch.allclose(ours[~keep], p_plain.detach(), rtol=1e-12)


# ---------------------------------------------------------------- frozen mode = the follow-up's approximation
class _TinyG(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(2, 3), nn.Linear(3, 2)

    def forward(self, z):
        return self.b(F.softplus(self.a(z)))


class _TinyD(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(2, 4), nn.Linear(4, 1)

    def forward(self, x):
        return self.b(F.softplus(self.a(x))).squeeze(1)


def _unflatten(module: nn.Module, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    out, i = {}, 0
    for name, p in module.named_parameters():
        out[name] = flat[i : i + p.numel()].view(p.shape)
        i += p.numel()
    return out


def _follow_up_adam_diff(g, m, v, lr, step, b1, b2, eps):
    """`differential_adam_step`'s param_diff: m and v are fresh leaves (constants), g carries the derivative."""
    avg = m.lerp(g, 1 - b1)
    sq = v * b2 + (1 - b2) * g * g
    step_size = lr / (1 - b1**step)
    denom = sq.sqrt() / (math.sqrt(1 - b2**step) * -step_size) + eps / -step_size
    return avg / denom


def _follow_up_sgd_diff(g, buf, lr, momentum, nesterov):
    """`differential_sgd_step`'s param_diff with a momentum buffer from an earlier step (a constant)."""
    buf = buf * momentum + g
    d_p = g + momentum * buf if nesterov else buf
    return -lr * d_p


SPECS = {
    "adam": OptimizerSpec("adam", betas=(0.5, 0.999), eps=1e-8),
    "adam-beta1-0": OptimizerSpec("adam", betas=(0.0, 0.99), eps=1e-8),  # the follow-up's betas
    "momentum": OptimizerSpec("momentum", momentum=0.9),
    "nesterov": OptimizerSpec("momentum", momentum=0.9, nesterov=True),
}


@pytest.mark.parametrize("kind", [KIND_BOTH, KIND_D, KIND_G])
@pytest.mark.parametrize("name", list(SPECS))
def test_frozen_jacobian_equals_the_follow_ups_differential_step(name, kind):
    """d (theta_D', theta_G') / d (theta_D, theta_G, w) of one step with frozen buffers, from `state_vjp` (one
    adjoint row per output) against jacrev of the follow-up's update written out here: the loss gradients by
    torch.func.grad, m, v (or the momentum buffer) constants, the fresh gradient differentiated through the
    moments and the denominator. Coupled L2 (0.02) is on, as the follow-up's `weight_decay` adds it to g."""
    spec, wd = SPECS[name], 0.02
    torch.manual_seed(0)
    G, D = _TinyG().double(), _TinyD().double()
    gan = GanFunctions(G, D, wd)
    gen = torch.Generator().manual_seed(3)
    td = torch.cat([p.detach().reshape(-1) for p in D.parameters()])
    tg = torch.cat([p.detach().reshape(-1) for p in G.parameters()])
    n_d, n_g, batch = len(td), len(tg), 5
    x, z = torch.randn(batch, 2, generator=gen, dtype=torch.float64), torch.randn(batch, 2, generator=gen, dtype=torch.float64)
    w = torch.ones(batch, dtype=torch.float64)
    # buffers as after a few steps: Adam's v positive and of the size of g^2
    bufs = {p: tuple((torch.randn(n, generator=gen, dtype=torch.float64) * 0.1).abs() if i == 1 and spec.kind == "adam"
                     else torch.randn(n, generator=gen, dtype=torch.float64) * 0.1 for i in range(len(spec.buffer_names)))
            for p, n in (("d", n_d), ("g", n_g))}
    lr_d, lr_g, count = 0.05, 0.03, 3
    players = KIND_PLAYERS[kind]

    def losses(td, tg, w):
        fake = functional_call(G, _unflatten(G, tg), (z,))
        fake_logits = functional_call(D, _unflatten(D, td), (fake,))
        real_logits = functional_call(D, _unflatten(D, td), (x,))
        loss_d = (w * F.softplus(-real_logits)).sum() / batch + F.softplus(fake_logits).sum() / batch
        loss_g = F.softplus(-fake_logits).sum() / batch
        return loss_d, loss_g

    def update(theta, g, buffers, lr, mask):
        g = g + wd * mask * theta  # the follow-up: grad.add(param, alpha=decay)
        if spec.kind == "adam":
            return theta + _follow_up_adam_diff(g, *buffers, lr, count + 1, *spec.betas, spec.eps)
        return theta + _follow_up_sgd_diff(g, buffers[0], lr, spec.momentum, spec.nesterov)

    def step_of_follow_up(td, tg, w):
        g_d = grad(lambda a: losses(a, tg, w)[0])(td)
        g_g = grad(lambda b: losses(td, b, w)[1])(tg)
        new_d = update(td, g_d, bufs["d"], lr_d, gan.decay_mask_d) if players in ("both", "d") else td
        new_g = update(tg, g_g, bufs["g"], lr_g, gan.decay_mask_g) if players in ("both", "g") else tg
        return torch.cat([new_d, new_g])

    jac = jacrev(step_of_follow_up, argnums=(0, 1, 2))(td, tg, w)  # (n_d + n_g, inputs) each

    state = TrainState(td, tg, bufs["d"], bufs["g"], None)
    inp = StepInputs(kind, x, z, w, lr_d, lr_g, count, count)
    k = n_d + n_g
    eye, nb = torch.eye(k, dtype=torch.float64), len(spec.buffer_names)
    # one adjoint row per output entry of theta_D', theta_G'; the buffers' outputs get none (TrainState order)
    adjoint = [eye[:, :n_d], eye[:, n_d:]] + [torch.zeros(k, n_d, dtype=torch.float64)] * nb \
        + [torch.zeros(k, n_g, dtype=torch.float64)] * nb
    (lam_d, lam_g, *lam_bufs), jw = state_vjp(gan, TrainingRule(spec), state, inp, adjoint, frozen=True)
    assert torch.allclose(lam_d, jac[0], rtol=1e-10, atol=1e-13), float((lam_d - jac[0]).abs().max())
    assert torch.allclose(lam_g, jac[1], rtol=1e-10, atol=1e-13), float((lam_g - jac[1]).abs().max())
    assert torch.allclose(jw, jac[2], rtol=1e-10, atol=1e-13)
    assert all(float(b.abs().max()) == 0 for b in lam_bufs)  # constants: the follow-up carries no buffer adjoint
    # not vacuous: the step moved its player through the optimizer, and the instance weights matter where
    # there is real data
    if players != "g":
        assert float((jac[0][:n_d] - torch.eye(n_d, dtype=torch.float64)).abs().max()) > 1e-3
        assert float(jac[2].abs().max()) > 1e-4
    else:
        assert float(jac[2].abs().max()) == 0
    if spec.kind == "adam" and players != "g":
        # the denominator's derivative is part of the follow-up's Jacobian: holding it constant (this mode's
        # version 1) gives another one
        held = _held_denominator_jacobian(spec, td, lambda a: grad(lambda b: losses(b, tg, w)[0])(a) + wd * gan.decay_mask_d * a,
                                          bufs["d"], lr_d, count)
        moved = jac[0][:n_d] - torch.eye(n_d, dtype=torch.float64)  # the update's own Jacobian
        assert float((held - jac[0][:n_d]).abs().max()) > 0.005 * float(moved.abs().max())


def _held_denominator_jacobian(spec, td, g_of, bufs, lr, count):
    """d theta_D' / d theta_D with Adam's whole denominator a constant (evaluated at td)."""
    b1, b2 = spec.betas
    k = count + 1
    denom = ((b2 * bufs[1] + (1 - b2) * g_of(td) ** 2) / (1 - b2**k)).sqrt() + spec.eps

    def new(a):
        m = b1 * bufs[0] + (1 - b1) * g_of(a)
        return a - lr * (m / (1 - b1**k)) / denom

    return jacrev(new)(td)
