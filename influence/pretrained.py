"""Bring your own GAN: start a run from pretrained G and D state dicts of a built-in architecture (and, if
supplied, their optimizers' state).

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
from .gan import ParamLayout
from .optim import OptimizerSpec

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


def compare_state_dict(module: nn.Module, state: dict[str, torch.Tensor]) -> list[tuple[str, str]]:
    """(layer, what does not fit) for every layer of the file that does not fit `module`: BatchNorm statistics,
    layers missing in the file, shapes that differ, layers the module does not have. [] = it fits."""
    out = []
    for layer in dict.fromkeys(n.rsplit(".", 1)[0] for n in state if n.rsplit(".", 1)[-1] in BATCHNORM_BUFFERS):
        out.append((layer, "a BatchNorm layer: BatchNorm mixes the images of a batch, so per-instance influence is "
                           "undefined: use a model with LayerNorm/GroupNorm"))
    expected = module.state_dict()
    for name, tensor in expected.items():
        if name not in state:
            out.append((name, f"missing in the file (the configured {type(module).__name__} has it)"))
        elif tuple(state[name].shape) != tuple(tensor.shape):
            out.append((name, f"shape {tuple(state[name].shape)} in the file but {tuple(tensor.shape)} in the configured "
                              f"{type(module).__name__} (check model.arch, width, z_dim and the image size)"))
    for name in sorted(set(state) - set(expected)):
        if name.rsplit(".", 1)[-1] not in BATCHNORM_BUFFERS:
            out.append((name, f"in the file but not in the configured {type(module).__name__}"))
    return out


def check_state_dict(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """ConfigError naming the first layer that does not fit `module` (BatchNorm, missing, extra, shape)."""
    problems = compare_state_dict(module, state)
    if problems:
        layer, why = problems[0]
        more = f" (and {len(problems) - 1} more layers: {', '.join(p[0] for p in problems[1:4])}" + (
            ", ...)" if len(problems) > 4 else ")") if len(problems) > 1 else ""
        if why.startswith("a BatchNorm"):
            raise ConfigError(f"{what}: layer '{layer}' is {why}{more}")
        if why.startswith("shape"):
            raise ConfigError(f"{what}: layer '{layer}' has {why}{more}")
        raise ConfigError(f"{what}: layer '{layer}' is {why}{more}")


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


# ---------------------------------------------------------------- optimizer state (a fine-tune's start)
# torch.optim's state per parameter, by optimizer kind, in the order of the engine's buffers (optim._BUFFERS).
OPTIMIZER_KEYS = {"adam": ("exp_avg", "exp_avg_sq"), "momentum": ("momentum_buffer",)}


def read_optimizer_state(path: str | Path, key: str) -> dict:
    """A torch.optim state dict ({"state": {index: {...}}, "param_groups": [...]}), loaded weights_only."""
    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds on a foreign or damaged file
        raise ConfigError(f"{key}: cannot read '{path}' as a torch.optim state dict (weights_only): {e}") from None
    if not (isinstance(state, dict) and isinstance(state.get("state"), dict)
            and isinstance(state.get("param_groups"), list)):
        raise ConfigError(f"{key}: '{path}' is not a torch.optim state dict (it needs 'state' and 'param_groups': "
                          "save optimizer.state_dict())")
    return state


def optimizer_buffers(state: dict, layout: ParamLayout, kind: str, what: str) -> tuple[tuple[torch.Tensor, ...], int]:
    """(the player's buffers as flat float64 vectors in the engine's order, its update count) from a torch.optim
    state dict over its parameters in module.parameters() order (as torch.optim numbers them). A parameter
    without state (never updated) gets zero buffers. ConfigError naming the layer that does not fit."""
    if kind not in OPTIMIZER_KEYS:
        raise ConfigError(f"{what}: train.optimizer={kind} keeps no state to start from")
    ids = [i for g in state["param_groups"] for i in (g.get("params") or [])]
    if len(ids) != len(layout.names):
        raise ConfigError(f"{what}: the optimizer state covers {len(ids)} parameters, the configured model has "
                          f"{len(layout.names)} (layers {', '.join(layout.names[:3])}, ...)")
    keys, per = OPTIMIZER_KEYS[kind], state["state"]
    flat: list[list[torch.Tensor]] = [[] for _ in keys]
    steps = set()
    for i, name, shape in zip(ids, layout.names, layout.shapes):
        entry = per.get(i, per.get(str(i), {}))
        if "max_exp_avg_sq" in entry:
            raise ConfigError(f"{what}: layer '{name}' holds AMSGrad's state, which the engine's Adam does not have")
        for b, k in enumerate(keys):
            t = entry.get(k)
            if t is None and entry and k != "momentum_buffer":
                raise ConfigError(f"{what}: layer '{name}' has no '{k}' (is it the state of another optimizer than "
                                  f"train.optimizer={kind}?)")
            t = torch.zeros(shape) if t is None else t
            if tuple(t.shape) != tuple(shape):
                raise ConfigError(f"{what}: layer '{name}' has {k} of shape {tuple(t.shape)} in the file but "
                                  f"{tuple(shape)} in the configured model")
            flat[b].append(t.detach().reshape(-1).to(torch.float64))
        if kind == "adam" and entry:
            steps.add(int(float(entry["step"])) if "step" in entry else -1)
    if -1 in steps or len(steps) > 1:
        raise ConfigError(f"{what}: Adam's step count must be one number for every parameter (found "
                          f"{sorted(s for s in steps if s >= 0) or 'none'})")
    return tuple(torch.cat(b) for b in flat), (steps.pop() if steps else 0)


def optimizer_state_dict(buffers: tuple[torch.Tensor, ...], layout: ParamLayout, spec: OptimizerSpec, count: int,
                         lr: float) -> dict:
    """The player's buffers as a torch.optim state dict (Adam / SGD with momentum, parameters numbered in
    module.parameters() order): what `optimizer_buffers` reads, and what torch.optim.load_state_dict takes."""
    keys = OPTIMIZER_KEYS[spec.kind]
    state = {}
    for i, chunks in enumerate(zip(*(b.detach().cpu().split(list(layout.sizes)) for b in buffers))):
        entry = {k: c.reshape(layout.shapes[i]).clone() for k, c in zip(keys, chunks)}
        if spec.kind == "adam":
            entry["step"] = torch.tensor(float(count))
        state[i] = entry
    group = {"lr": lr, "params": list(range(len(layout.names)))}
    if spec.kind == "adam":
        group.update(betas=tuple(spec.betas), eps=spec.eps, weight_decay=0.0, amsgrad=False)
    else:
        group.update(momentum=spec.momentum, nesterov=spec.nesterov, dampening=0.0, weight_decay=0.0)
    return {"state": state, "param_groups": [group]}


def _checked_optimizer_state(path: str, digest: str | None, key: str) -> dict:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"{key}: cannot read '{path}' ({e.strerror or e})") from None
    if hashlib.sha256(data).hexdigest() != digest:
        raise ConfigError(f"{key}: '{path}' changed since the run was configured (its sha256 differs from the one in "
                          "the run's config)")
    return read_optimizer_state(path, key)


def load_optimizer_state(cfg: ModelConfig, gan, rule) -> tuple[tuple, tuple] | None:
    """(D's buffers, G's buffers) from model.init_opt_d / init_opt_g (a player without a file starts fresh);
    None when neither is given: both start fresh."""
    if cfg.init_opt_d is None and cfg.init_opt_g is None:
        return None
    out = []
    for player, layout, path, digest in (("d", gan.layout_d, cfg.init_opt_d, cfg.init_opt_d_sha256),
                                         ("g", gan.layout_g, cfg.init_opt_g, cfg.init_opt_g_sha256)):
        if path is None:
            out.append(rule.optimizer.init_buffers(torch.zeros(layout.numel, dtype=torch.float64)))
            continue
        key = f"model.init_opt_{player}"
        state = _checked_optimizer_state(path, digest, key)
        out.append(optimizer_buffers(state, layout, rule.optimizer.kind, f"{player.upper()} optimizer state "
                                     f"'{Path(path).name}'")[0])
    return out[0], out[1]


def optimizer_counts(cfg: ModelConfig) -> tuple[int, int]:
    """Updates each player had made before the run: the supplied optimizer state's step count (Adam), else 0."""
    counts = []
    for player, path, digest in (("d", cfg.init_opt_d, cfg.init_opt_d_sha256), ("g", cfg.init_opt_g, cfg.init_opt_g_sha256)):
        if path is None:
            counts.append(0)
            continue
        state = _checked_optimizer_state(path, digest, f"model.init_opt_{player}")
        steps = {int(float(e["step"])) for e in state["state"].values() if isinstance(e, dict) and "step" in e}
        counts.append(max(steps) if steps else 0)
    return counts[0], counts[1]


def start_record(cfg: ModelConfig, counts: tuple[int, int]) -> dict | None:
    """What a run started from, for its summary: pretrained weights (files and checksums, the store run they came
    from) and the optimizer state (fresh, or supplied with its update counts). None: the seed's weights."""
    if cfg.init_g is None and cfg.init_d is None:
        return None
    files = {name: {"file": getattr(cfg, name), "sha256": getattr(cfg, f"{name}_sha256")}
             for name in ("init_g", "init_d", "init_opt_g", "init_opt_d") if getattr(cfg, name) is not None}
    supplied = cfg.init_opt_d is not None or cfg.init_opt_g is not None
    origin = f"run {cfg.init_from_run}" if cfg.init_from_run else "the given files"
    if supplied:
        players = " and ".join(p for p, f in (("D", cfg.init_opt_d), ("G", cfg.init_opt_g)) if f)
        optimizer = (f"supplied for {players} (update counts D {counts[0]}, G {counts[1]}: Adam's bias correction "
                     "continues from them)")
    else:
        optimizer = "fresh (zero buffers, update count 0): no optimizer state was supplied"
    return {"from_run": cfg.init_from_run, "files": files, "optimizer_state": "supplied" if supplied else "fresh",
            "sentence": f"weights from {origin}; optimizer state {optimizer}"}
