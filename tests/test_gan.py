"""GanFunctions.step_gradients against the objective written out by hand on the modules."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from influence.config import ModelConfig
from influence.gan import GanFunctions
from influence.models import build_gan

CPU = torch.device("cpu")


def _setup(arch: str, wd: float):
    torch.manual_seed(0)
    if arch == "fcgan":
        G, D = build_gan(ModelConfig(arch="fcgan", z_dim=10))
        x = torch.randn(12, 2, dtype=torch.float64)
    else:
        G, D = build_gan(ModelConfig(arch="smallcnn", width=4, z_dim=8))
        x = torch.rand(12, 1, 28, 28, dtype=torch.float64) * 2 - 1
    gan = GanFunctions(G, D, wd).to(CPU, torch.float64)
    z = torch.randn(12, G.net[0].in_channels if arch != "fcgan" else 10, dtype=torch.float64)
    return gan, G, D, x, z


def _by_hand(G, D, x, z, w, wd):
    """L_D and L_G from the modules' own parameters, with BCE-with-logits and an explicit kernel-only L2."""
    B = x.shape[0]
    fake = G(z)
    logit_real, logit_fake = D(x), D(fake.detach())
    # L_D: real labelled 1 (weighted per instance), fake labelled 0; sum / B
    real = (w * F.binary_cross_entropy_with_logits(logit_real, torch.ones_like(logit_real), reduction="none")).sum() / B
    fake_term = F.binary_cross_entropy_with_logits(logit_fake, torch.zeros_like(logit_fake), reduction="sum") / B
    decay_d = sum((p**2).sum() for n, p in D.named_parameters() if n.endswith("weight") and p.dim() > 1)
    loss_d = real + fake_term + 0.5 * wd * decay_d
    g_d = torch.autograd.grad(loss_d, list(D.parameters()))
    # L_G: non-saturating, fake labelled 1, gradient w.r.t. G only (D at the same parameters)
    logit_g = D(fake)
    decay_g = sum((p**2).sum() for n, p in G.named_parameters() if n.endswith("weight") and p.dim() > 1)
    loss_g = F.binary_cross_entropy_with_logits(logit_g, torch.ones_like(logit_g), reduction="sum") / B + 0.5 * wd * decay_g
    g_g = torch.autograd.grad(loss_g, list(G.parameters()))
    return torch.cat([g.reshape(-1) for g in g_d]), torch.cat([g.reshape(-1) for g in g_g]), loss_d, loss_g


@pytest.mark.parametrize("arch", ["fcgan", "smallcnn"])
@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_step_gradients_equal_the_objective_by_hand(arch, wd):
    gan, G, D, x, z = _setup(arch, wd)
    w = torch.ones(12, dtype=torch.float64)
    w[[2, 7]] = 0.0
    w[5] = 0.5
    td = gan.layout_d.flatten(D).requires_grad_(True)
    tg = gan.layout_g.flatten(G).requires_grad_(True)
    g_d, g_g, l_d, l_g = gan.step_gradients(td, tg, x, z, w)
    h_d, h_g, hl_d, hl_g = _by_hand(G, D, x, z, w, wd)
    assert torch.allclose(g_d, h_d, rtol=1e-10, atol=1e-13)
    assert torch.allclose(g_g, h_g, rtol=1e-10, atol=1e-13)
    assert float(l_d) == pytest.approx(float(hl_d.detach()), rel=1e-12)
    assert float(l_g) == pytest.approx(float(hl_g.detach()), rel=1e-12)


def test_removing_an_instance_drops_only_its_term_with_batch_size_unchanged():
    gan, G, D, x, z = _setup("fcgan", 0.0)
    td = gan.layout_d.flatten(D).requires_grad_(True)
    tg = gan.layout_g.flatten(G).requires_grad_(True)
    ones = torch.ones(12, dtype=torch.float64)
    w = ones.clone()
    w[3] = 0
    full_d, full_g, _, _ = gan.step_gradients(td, tg, x, z, ones)
    cut_d, cut_g, _, _ = gan.step_gradients(td, tg, x, z, w)
    (g3,) = torch.autograd.grad(gan.real_losses(td, x[3:4]).sum(), td)
    assert torch.allclose(full_d - cut_d, g3 / 12, rtol=1e-10, atol=1e-14)  # 1/B with B = 12, not 11
    assert torch.equal(full_g, cut_g)  # the generator's gradient never sees real data


def test_real_losses_are_minus_log_sigmoid():
    gan, G, D, x, z = _setup("fcgan", 0.0)
    td = gan.layout_d.flatten(D)
    expected = -torch.log(torch.sigmoid(D(x)))
    assert torch.allclose(gan.real_losses(td, x), expected, rtol=1e-10)
    assert torch.allclose(gan.generate(gan.layout_g.flatten(G), z), G(z))
