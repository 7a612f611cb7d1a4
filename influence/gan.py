"""The GAN as pure functions of flat parameter vectors.

One function, `step_gradients`, defines a training step's gradients. Training,
counterfactual replay and the influence estimator all call it, so a replay with
nothing removed reproduces training bit for bit and the estimator differentiates
exactly the map that training applied.

Objective (non-saturating; `stepmap.step` turns the gradients into an optimizer update):
    L_D = 1/B sum_j w_j softplus(-D(x_j)) + 1/B sum_i softplus(D(G(z_i))) + wd/2 |theta_D|^2
    L_G = 1/B sum_i softplus(-D(G(z_i)))                                     + wd/2 |theta_G|^2
w are per-instance weights of the real images (1 = kept, 0 = removed); B stays the
recorded batch size, so removing an instance drops its term and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call


@dataclass(frozen=True)
class ParamLayout:
    """Names, shapes and offsets of a module's parameters inside one flat vector."""

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    sizes: tuple[int, ...]
    decay_mask: torch.Tensor  # 1 where L2 weight decay applies (weights, not biases/norm affine)

    @staticmethod
    def of(module: nn.Module) -> "ParamLayout":
        params = list(module.named_parameters())
        mask = torch.cat(
            [torch.full((p.numel(),), 1.0 if _decays(module, n, p) else 0.0) for n, p in params]
        )
        return ParamLayout(
            names=tuple(n for n, _ in params),
            shapes=tuple(p.shape for _, p in params),
            sizes=tuple(p.numel() for _, p in params),
            decay_mask=mask,
        )

    @property
    def numel(self) -> int:
        return sum(self.sizes)

    def flatten(self, module: nn.Module) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in module.parameters()])

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        return {n: t.view(s) for n, t, s in zip(self.names, flat.split(self.sizes), self.shapes)}

    def load_into(self, module: nn.Module, flat: torch.Tensor) -> None:
        with torch.no_grad():
            for p, t in zip(module.parameters(), flat.split(self.sizes)):
                p.copy_(t.view_as(p))


def _decays(module: nn.Module, name: str, p: torch.Tensor) -> bool:
    """Kernels of conv/linear layers decay; biases and LayerNorm affine parameters do not."""
    owner = module.get_submodule(name.rsplit(".", 1)[0]) if "." in name else module
    return name.endswith("weight") and not isinstance(owner, nn.GroupNorm)


class GanFunctions:
    """Stateless G and D evaluated at flat parameter vectors."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module, weight_decay: float):
        self.G, self.D = generator, discriminator
        self.layout_g, self.layout_d = ParamLayout.of(generator), ParamLayout.of(discriminator)
        self.weight_decay = weight_decay
        self._mask_g, self._mask_d = self.layout_g.decay_mask, self.layout_d.decay_mask

    def to(self, device: torch.device, dtype: torch.dtype) -> "GanFunctions":
        self.G.to(device=device, dtype=dtype)
        self.D.to(device=device, dtype=dtype)
        self._mask_g = self.layout_g.decay_mask.to(device, dtype)
        self._mask_d = self.layout_d.decay_mask.to(device, dtype)
        return self

    def generate(self, theta_g: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return functional_call(self.G, self.layout_g.unflatten(theta_g), (z,))

    def logits(self, theta_d: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.D, self.layout_d.unflatten(theta_d), (x,))

    def real_losses(self, theta_d: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-instance loss_real(x_j) = -log sigmoid(D(x_j))."""
        return F.softplus(-self.logits(theta_d, x))

    def _decay(self, theta: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.weight_decay * ((theta * mask) ** 2).sum()

    @property
    def decay_mask_d(self) -> torch.Tensor:
        return self._mask_d

    @property
    def decay_mask_g(self) -> torch.Tensor:
        return self._mask_g

    def losses(
        self,
        theta_d: torch.Tensor,
        theta_g: torch.Tensor,
        x: torch.Tensor,
        z: torch.Tensor,
        w: torch.Tensor,
        players: str = "both",
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(L_D, L_G) of a step at the given parameters; None for a player not asked for.

        players = "both" (a simultaneous step), "d" or "g" (one half of an alternating step; a G
        step uses no real data, so x may be empty there). A pure function of its arguments: the
        training step takes its gradients with autograd, the batched replay lanes with torch.func.
        """
        batch = z.shape[0]
        fake = self.generate(theta_g, z)
        fake_logits = self.logits(theta_d, fake)
        loss_d = loss_g = None
        if players in ("both", "d"):
            real = (w * self.real_losses(theta_d, x)).sum() / batch
            loss_d = real + F.softplus(fake_logits).sum() / batch + self._decay(theta_d, self._mask_d)
        if players in ("both", "g"):
            loss_g = F.softplus(-fake_logits).sum() / batch + self._decay(theta_g, self._mask_g)
        return loss_d, loss_g

    def step_gradients(
        self,
        theta_d: torch.Tensor,
        theta_g: torch.Tensor,
        x: torch.Tensor,
        z: torch.Tensor,
        w: torch.Tensor,
        create_graph: bool = False,
        players: str = "both",
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """(grad_D L_D, grad_G L_G, L_D, L_G), both at the given parameters; None for a player not asked for.

        theta_d and theta_g must require grad. With create_graph=True the gradients stay
        differentiable w.r.t. (theta_d, theta_g, w): the estimator takes the step's
        Jacobian-transpose product (G<->D cross blocks included) from them. Plain autograd here:
        on these small nets nested torch.func transforms cost 3-4x more.
        """
        loss_d, loss_g = self.losses(theta_d, theta_g, x, z, w, players)
        g_d = g_g = None
        if loss_d is not None:
            (g_d,) = torch.autograd.grad(loss_d, theta_d, retain_graph=loss_g is not None or create_graph,
                                       create_graph=create_graph)
            loss_d = loss_d.detach()
        if loss_g is not None:
            (g_g,) = torch.autograd.grad(loss_g, theta_g, create_graph=create_graph)
            loss_g = loss_g.detach()
        return g_d, g_g, loss_d, loss_g
