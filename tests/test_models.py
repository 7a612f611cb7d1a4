"""Generators and discriminators: shapes, the paper's spatial sizes, no BatchNorm, per-sample independence."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from influence.config import ModelConfig
from influence.gan import GanFunctions, ParamLayout
from influence.models import MnistClassifier, build_gan

# (arch, width, z_dim, channels, size, data shape of one instance)
CASES = [
    ("smallcnn", 8, 32, 1, 28, (1, 28, 28)),
    ("dcgan", 8, 32, 1, 28, (1, 28, 28)),
    ("dcgan", 8, 32, 3, 32, (3, 32, 32)),
    ("dcgan-radford", 4, 32, 3, 32, (3, 32, 32)),
    ("dcgan-radford", 2, 16, 1, 64, (1, 64, 64)),
    ("fcgan", 8, 10, 1, 28, (2,)),
]


def _build(arch, width, z_dim, channels, size):
    torch.manual_seed(0)
    return build_gan(ModelConfig(arch=arch, width=width, z_dim=z_dim), channels=channels, size=size)


@pytest.mark.parametrize("arch, width, z_dim, channels, size, shape", CASES)
def test_output_shapes(arch, width, z_dim, channels, size, shape):
    G, D = _build(arch, width, z_dim, channels, size)
    z = torch.randn(5, z_dim)
    x = G(z)
    assert x.shape == (5, *shape)
    assert D(x).shape == (5,)
    assert D(torch.randn(1, *shape)).shape == (1,)


def test_smallcnn_generator_maps_z_to_28x28_in_minus1_1():
    G, D = _build("smallcnn", 8, 32, 1, 28)
    x = G(torch.randn(7, 32))
    assert x.shape == (7, 1, 28, 28)
    assert x.min() >= -1 and x.max() <= 1  # tanh output, the data's range
    assert D(x).shape == (7,)


def test_smallcnn_discriminator_spatial_sizes_follow_the_paper():
    _, D = _build("smallcnn", 8, 32, 1, 28)
    sizes = []
    hooks = [m.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[-2:])))
             for m in D.modules() if isinstance(m, nn.Conv2d)]
    D(torch.randn(2, 1, 28, 28))
    for h in hooks:
        h.remove()
    assert [s[0] for s in sizes] == [25, 12, 10, 9, 4, 2, 1]
    assert all(h == w for h, w in sizes)


def test_smallcnn_generator_spatial_sizes_mirror_the_discriminator():
    G, _ = _build("smallcnn", 8, 32, 1, 28)
    sizes = []
    hooks = [m.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1]))
             for m in G.modules() if isinstance(m, nn.ConvTranspose2d)]
    G(torch.randn(2, 32))
    for h in hooks:
        h.remove()
    assert sizes == [2, 4, 9, 10, 12, 25, 28]


BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.InstanceNorm2d)


@pytest.mark.parametrize("arch, width, z_dim, channels, size, shape", CASES)
def test_no_batch_norm_anywhere(arch, width, z_dim, channels, size, shape):
    for net in _build(arch, width, z_dim, channels, size):
        kinds = {type(m) for m in net.modules()}
        assert not any(issubclass(k, nn.modules.batchnorm._NormBase) for k in kinds), kinds
        assert not any(issubclass(k, BATCH_NORMS) for k in kinds)
        # the norm layers present are per-sample GroupNorm(1, C) (LayerNorm over C, H, W)
        for m in net.modules():
            if isinstance(m, nn.GroupNorm):
                assert m.num_groups == 1


@pytest.mark.parametrize("arch, width, z_dim, channels, size, shape", CASES)
def test_outputs_of_one_sample_do_not_depend_on_the_rest_of_the_batch(arch, width, z_dim, channels, size, shape):
    G, D = _build(arch, width, z_dim, channels, size)
    D.train(), G.train()  # training mode: where BatchNorm would mix samples
    g = torch.Generator().manual_seed(1)
    x1 = torch.randn(6, *shape, generator=g, dtype=torch.float64)
    x2 = x1.clone()
    x2[1:] = 3 * torch.randn(5, *shape, generator=g, dtype=torch.float64) + 1
    D.double(), G.double()
    with torch.no_grad():
        assert torch.equal(D(x1)[0], D(x2)[0]) or abs(float(D(x1)[0] - D(x2)[0])) < 1e-12
        assert abs(float(D(x1)[0] - D(x1[:1])[0])) < 1e-12  # batch of one
        z1 = torch.randn(6, z_dim, generator=g, dtype=torch.float64)
        z2 = z1.clone()
        z2[1:] = torch.randn(5, z_dim, generator=g, dtype=torch.float64)
        assert (G(z1)[0] - G(z2)[0]).abs().max() < 1e-12
    # ... and the gradient of sample 0's loss ignores the others as well.
    gan = GanFunctions(G, D, 0.0).to(torch.device("cpu"), torch.float64)
    theta = gan.layout_d.flatten(D).requires_grad_(True)
    grads = []
    for x in (x1, x2):
        (gr,) = torch.autograd.grad(gan.real_losses(theta, x)[0], theta)
        grads.append(gr)
    assert (grads[0] - grads[1]).abs().max() < 1e-12


def test_param_layout_round_trip_and_decay_mask():
    G, D = _build("smallcnn", 8, 32, 1, 28)
    layout = ParamLayout.of(D)
    flat = layout.flatten(D)
    assert flat.shape == (sum(p.numel() for p in D.parameters()),) == (layout.numel,)
    D2 = _build("smallcnn", 8, 32, 1, 28)[1]
    torch.manual_seed(5)
    for p in D2.parameters():
        nn.init.normal_(p)
    layout.load_into(D2, flat)
    assert torch.equal(layout.flatten(D2), flat)
    # decay applies to conv/linear kernels only: not biases, not GroupNorm affine
    expected = torch.cat([
        torch.full((p.numel(),), 1.0 if n.endswith("weight") and not isinstance(D.get_submodule(n.rsplit(".", 1)[0]), nn.GroupNorm) else 0.0)
        for n, p in D.named_parameters()
    ])
    assert torch.equal(layout.decay_mask, expected)
    n_kernels = sum(m.weight.numel() for m in D.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert int(layout.decay_mask.sum()) == n_kernels


def test_mnist_classifier_feature_and_logit_shapes():
    net = MnistClassifier()
    h, logits = net.features_and_logits(torch.randn(3, 1, 28, 28))
    assert h.shape == (3, 128) and logits.shape == (3, 10)
    assert ((h > 0) & (h < 1)).all()  # sigmoid features
    assert torch.equal(net(torch.zeros(2, 1, 28, 28)), net.logits(net.features(torch.zeros(2, 1, 28, 28))))


def test_fcgan_as_the_papers_code_builds_it_has_no_biases_and_glorot_uniform_kernels():
    torch.manual_seed(0)
    G, D = build_gan(ModelConfig(arch="fcgan", z_dim=10, bias=False, init="glorot-uniform"))
    linears = [m for m in (*G.modules(), *D.modules()) if isinstance(m, nn.Linear)]
    assert len(linears) == 6 and all(m.bias is None for m in linears)
    assert sum(p.numel() for p in (*G.parameters(), *D.parameters())) == 10 * 32 + 32 * 32 + 32 * 2 + 2 * 64 + 64 * 64 + 64
    for m in linears:
        fan_out, fan_in = m.weight.shape
        bound = (6 / (fan_in + fan_out)) ** 0.5  # TensorFlow's glorot_uniform
        w = m.weight.detach()
        assert w.abs().max() <= bound and w.abs().max() > 0.8 * bound
        if w.numel() >= 1000:  # uniform on [-b, b]: variance b^2/3, within 10%
            assert abs(float(w.var()) / (bound**2 / 3) - 1) < 0.1


def test_fcgan_defaults_keep_the_earlier_initial_weights():
    # Pinned from the code before model.bias / model.init existed: stored toy2d runs must train identically.
    torch.manual_seed(0)
    G, D = build_gan(ModelConfig(arch="fcgan", z_dim=10))
    flat = torch.cat([p.detach().reshape(-1).double() for p in (*G.parameters(), *D.parameters())])
    assert flat.numel() == 5891
    assert float(flat.sum()) == pytest.approx(-7.292035744700115, abs=1e-12)
    assert float(flat.abs().sum()) == pytest.approx(481.3169665946043, abs=1e-10)


@pytest.mark.parametrize("size, stages", [(32, 4), (64, 5)])
def test_radford_dcgan_follows_the_papers_layout(size, stages):
    """G: z -> 4x4 x 8w -> 8x8 x 4w -> 16x16 x 2w -> 32x32 x w -> image (64 px: from 4x4 x 16w); D mirrors it."""
    w = 4
    G, D = _build("dcgan-radford", w, 16, 3, size)
    shapes = []
    hooks = [m.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[1:])))
             for m in (*G.modules(), *D.modules()) if isinstance(m, nn.GroupNorm)]
    D(G(torch.randn(2, 16)))
    for h in hooks:
        h.remove()
    sides = [4 * 2**i for i in range(stages)]
    g_shapes = [(w * 2 ** (stages - 1 - i), s, s) for i, s in enumerate(sides)]
    d_shapes = [(w * 2**i, s, s) for i, s in enumerate(reversed(sides))][1:]  # no norm after D's first conv
    assert shapes == g_shapes + d_shapes
    assert sum(isinstance(m, nn.LeakyReLU) and m.negative_slope == 0.2 for m in D.modules()) == stages


@pytest.mark.parametrize("activation", ["softplus", "silu", "gelu"])
@pytest.mark.parametrize("arch", ["smallcnn", "dcgan", "dcgan-radford", "fcgan"])
def test_a_smooth_activation_takes_the_place_of_every_hidden_unit(arch, activation):
    """mnist-adam relies on it: with any ReLU/LeakyReLU left, a whole removal stops being first order."""
    from influence.models import SMOOTH_ACTIVATIONS

    _, width, z_dim, channels, size, _ = next(c for c in CASES if c[0] == arch)

    def hidden(act):
        torch.manual_seed(0)
        nets = build_gan(ModelConfig(arch=arch, width=width, z_dim=z_dim, activation=act), channels=channels, size=size)
        return [type(m) for net in nets for m in net.modules() if type(m) in (nn.ReLU, nn.LeakyReLU, nn.Sigmoid,
                                                                                *SMOOTH_ACTIVATIONS.values())]

    default, smooth = hidden("default"), hidden(activation)
    assert len(smooth) == len(default) > 0
    assert set(smooth) == {SMOOTH_ACTIVATIONS[activation]}
