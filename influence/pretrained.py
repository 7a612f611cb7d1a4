"""Bring your own GAN: start a run from pretrained G and D state dicts of a built-in architecture.

Files are torch state dicts loaded with weights_only=True (no code runs) or safetensors.
The run records each file's sha256 in its config and id (config.with_init_checksums); a
file that changed since is refused. A BatchNorm layer (its running statistics) or a shape
that does not fit the configured architecture is refused with the layer's name.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import torch
from torch import nn

from .config import ModelConfig, read_init_file
from .errors import ConfigError

BATCHNORM_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def read_state_dict(path: str | Path, data: bytes | None = None, key: str = "weights file") -> dict[str, torch.Tensor]:
    """The state dict in `path` (its bytes `data` when read already): regular files up to
    config.MAX_INIT_BYTES only (`config.read_init_file`)."""
    path = Path(path)
    data = read_init_file(path, key) if data is None else data
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load

            state = load(data)
        else:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # torch/safetensors raise many kinds on a foreign or damaged file
        raise ConfigError(f"cannot read state dict '{path}' (torch weights_only or .safetensors): {e}") from None
    if isinstance(state, dict) and set(state) == {"state_dict"}:  # a common wrapper
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"'{path}' does not hold a state dict (parameter name -> tensor)")
    return state


def check_state_dict(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """ConfigError naming the first layer that does not fit `module` (BatchNorm, missing, extra, shape)."""
    for name in state:
        if name.rsplit(".", 1)[-1] in BATCHNORM_BUFFERS:
            layer = name.rsplit(".", 1)[0]
            raise ConfigError(f"{what}: layer '{layer}' is a BatchNorm layer ({name}); BatchNorm mixes the images of "
                              "a batch, so per-instance influence is undefined: use a model with LayerNorm/GroupNorm")
    expected = module.state_dict()
    for name, tensor in expected.items():
        if name not in state:
            raise ConfigError(f"{what}: layer '{name}' of the configured {type(module).__name__} is missing in the file")
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise ConfigError(f"{what}: layer '{name}' has shape {tuple(state[name].shape)} in the file but "
                              f"{tuple(tensor.shape)} in the configured {type(module).__name__} (check model.arch, "
                              "width, z_dim and the image size)")
    extra = sorted(set(state) - set(expected))
    if extra:
        raise ConfigError(f"{what}: layer '{extra[0]}' in the file does not exist in the configured "
                          f"{type(module).__name__}")


def load_initial_weights(cfg: ModelConfig, generator: nn.Module, discriminator: nn.Module) -> None:
    """Replace the seed's initial weights by model.init_g / init_d where given (checksums verified)."""
    for player, module, path, digest in (("G", generator, cfg.init_g, cfg.init_g_sha256),
                                         ("D", discriminator, cfg.init_d, cfg.init_d_sha256)):
        if path is None:
            continue
        key = f"model.init_{player.lower()}"
        data = read_init_file(path, key)
        if hashlib.sha256(data).hexdigest() != digest:
            raise ConfigError(f"{key}: '{path}' changed since the run was configured "
                              "(its sha256 differs from the one in the run's config)")
        state = read_state_dict(path, data, key)  # the bytes checked, not the file read again
        what = f"{player} weights '{Path(path).name}'"
        check_state_dict(module, state, what)
        module.load_state_dict({k: v.to(module.state_dict()[k].dtype) for k, v in state.items()})
