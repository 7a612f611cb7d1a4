"""Fine-tune and trace: a GAN people already trained, its next K epochs traced on the training set.

A fine-tune is a run like any other (`train.train`), configured here from
- a run of this store (`from_run`): its config (data, model, optimizer, seed), its final G and D
  (weights/generator.pt, discriminator.pt) as model.init_g / init_d, and, when asked, its final optimizer
  state, written once as torch.optim state dicts under <store>/_init/<run id>/ (model.init_opt_d / init_opt_g);
- or files (`from_files`): G and D state dicts of a preset's architecture (and optimizer states, if given).
Every epoch is traced (train.epochs = train.trace_epochs = K) at the rate train.trace_lr decides: auto by
default (the probe, `tracelr`, from the rate training stopped at down: a store run's last epoch's rate, or the
rate a preset's recipe ends at for files). The optimizer state starts fresh
unless supplied; the run's summary says which (`pretrained.start_record`). The files' sha256 and own images'
fingerprint enter the run id. `weights_report` compares the files with the configured architecture, every
layer named, before anything runs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from . import store
from .config import TRACE_LRS, RunConfig, apply_overrides, validate, with_init_checksums
from .context import load_run_config
from .data import prepare
from .errors import ConfigError
from .gan import ParamLayout
from .models import build_gan
from .pretrained import compare_state_dict, optimizer_buffers, optimizer_state_dict, read_optimizer_state, read_state_dict
from .stepmap import KIND_D, KIND_G
from .train import Trace

SUFFIX = "-ft"  # a fine-tune's preset name: the source's, marked
INIT_DIR = "_init"  # <store>/_init/<run id>/optimizer_{d,g}.pt: a store run's final optimizer state as files


def parse_trace_lr(text: str) -> tuple[str, float | None]:
    """(train.trace_lr, the user's rate or None) from auto, schedule, check or a learning rate (kept: check)."""
    if text in TRACE_LRS:
        return text, None
    try:
        rate = float(text)
    except ValueError:
        raise ConfigError(f"the traced learning rate must be auto, schedule, check or a number, got '{text}'") from None
    if not rate > 0 or rate == float("inf"):
        raise ConfigError(f"the traced learning rate must be positive, got {text}")
    return "check", rate


def configure(root: Path, trace_epochs: int = 1, trace_lr: str = "auto", *, from_run_id: str | None = None,
              base: RunConfig | None = None, init_g: str | None = None, init_d: str | None = None,
              keep_optimizer: bool = False, opt_d: str | None = None, opt_g: str | None = None,
              overrides: list[str] = ()) -> RunConfig:
    """The fine-tune the CLI and the Train page start: of store run `from_run_id`, or of the G and D files with
    `base`'s architecture and recipe; `overrides` as --set (after the fine-tune's rate, so a rate set is kept);
    trace_lr as `parse_trace_lr`. Its weights are checked against the architecture (every bad layer named)."""
    mode, rate = parse_trace_lr(trace_lr)
    sets = list(overrides) + ([f"train.lr_d={rate}", f"train.lr_g={rate}"] if rate else [])
    if from_run_id is not None:
        cfg = from_run(root, from_run_id, trace_epochs, keep_optimizer, mode, sets)
    else:
        if base is None or init_g is None or init_d is None:
            raise ConfigError("a fine-tune starts from trained weights: give both G and D files (or a run of the "
                              "store)")
        cfg = prepare(apply_overrides(from_files(base, init_g, init_d, trace_epochs, opt_d, opt_g, mode), sets))
    check_weights(cfg)
    return cfg


def finetune_config(base: RunConfig, trace_epochs: int, trace_lr: str = "auto") -> RunConfig:
    """`base` (its init files set) as a fine-tune: `trace_epochs` epochs, all traced, at the rate base's recipe
    ends at (its schedule's last rate: training continues where it stopped), which train.trace_lr=auto replaces by
    the probe's pick from that rate down."""
    if trace_epochs < 1:
        raise ConfigError("--trace-epochs must be at least 1")
    if base.model.init_g is None or base.model.init_d is None:
        raise ConfigError("a fine-tune starts from trained weights: give both G and D (--init-g and --init-d), or "
                          "--from a run of the store")
    lr_d, lr_g = base.lr_at_epoch(base.train.epochs)
    train = dataclasses.replace(base.train, epochs=trace_epochs, trace_epochs=trace_epochs, trace_steps=None,
                                lr_d=lr_d, lr_g=lr_g, lr_schedule=(), trace_lr=trace_lr)
    name = base.preset if base.preset.endswith(SUFFIX) else base.preset[: 40 - len(SUFFIX)] + SUFFIX
    out = with_init_checksums(dataclasses.replace(base, train=train, preset=name))
    validate(out)
    return out


def from_files(base: RunConfig, init_g: str, init_d: str, trace_epochs: int, opt_d: str | None = None,
               opt_g: str | None = None, trace_lr: str = "auto") -> RunConfig:
    """A fine-tune of the G and D in these files (of base's architecture), optimizer states if given."""
    model = dataclasses.replace(base.model, init_g=_absolute(init_g), init_d=_absolute(init_d),
                                init_opt_d=_absolute(opt_d), init_opt_g=_absolute(opt_g), init_from_run=None)
    return finetune_config(dataclasses.replace(base, model=model), trace_epochs, trace_lr)


def from_run(root: Path, run_id: str, trace_epochs: int, keep_optimizer: bool = False, trace_lr: str = "auto",
             overrides: list[str] = ()) -> RunConfig:
    """A fine-tune of a finished run of this store: its config, its final weights, and (keep_optimizer) its final
    optimizer state; `overrides` as --set."""
    run = store.open_run(root, run_id)
    if not run.exists("summary.json"):
        raise ConfigError(f"run {run_id} has not finished training: nothing to fine-tune yet")
    cfg = load_run_config(run)
    if cfg.is_2d:
        raise ConfigError("fine-tuning is for image GANs; the 2D toys train in seconds from scratch")
    g, d = (str(run.verify(f"weights/{name}.pt")) for name in ("generator", "discriminator"))
    opt_d = opt_g = None
    if keep_optimizer:
        opt_d, opt_g = (str(p) for p in export_optimizer_state(run, cfg))
    model = dataclasses.replace(cfg.model, init_g=g, init_d=d, init_opt_d=opt_d, init_opt_g=opt_g,
                                init_from_run=run_id)
    last = run.read_json("history.json")[-1]  # the rate its last epoch ran at (a probe's pick, where one chose it)
    train = dataclasses.replace(cfg.train, lr_d=float(last["lr_d"]), lr_g=float(last["lr_g"]), lr_schedule=())
    out = finetune_config(dataclasses.replace(cfg, model=model, train=train), trace_epochs, trace_lr)
    return apply_overrides(out, list(overrides)) if overrides else out


def export_optimizer_state(run: store.Run, cfg: RunConfig) -> tuple[Path, Path]:
    """The run's final optimizer state (D, G) as torch.optim state dicts under <store>/_init/<run id>/ (written
    once: a finished run's state never changes), with each player's update count as Adam's step."""
    trace = Trace.load(run)
    if not trace.layout.n_buffers:
        raise ConfigError(f"run {run.run_id} trained with plain SGD: it has no optimizer state to keep")
    s = trace.layout.split(torch.from_numpy(np.array(trace.final_state)))
    kind = int(trace.kinds[-1])
    counts = trace.counts[-1] + np.array([kind != KIND_G, kind != KIND_D])  # updates after the last step
    G, D = _modules(cfg)
    lr_d, lr_g = cfg.lr_at_epoch(cfg.train.epochs)
    folder = store.store_root(run.root) / INIT_DIR / run.run_id
    paths = []
    for player, module, buffers, count, lr in (("d", D, s.buf_d, counts[0], lr_d), ("g", G, s.buf_g, counts[1], lr_g)):
        path = folder / f"optimizer_{player}.pt"
        if not path.exists():
            state = optimizer_state_dict(buffers, ParamLayout.of(module), trace.rule.optimizer, int(count), lr)
            store.write_bytes(path, store.encode_state_dict(state))
        paths.append(path)
    return paths[0], paths[1]


def weights_report(cfg: RunConfig) -> list[dict]:
    """Every file of a fine-tune against the configured architecture: one row per layer that does not fit
    ({"file", "player", "layer", "problem"}), or one per file that fits ({"layer": None, "problem": None}).
    Reads the files; builds the modules only (no data, nothing trained)."""
    G, D = _modules(cfg)
    m, rows = cfg.model, []
    for player, module, path in (("G", G, m.init_g), ("D", D, m.init_d)):
        if path is None:
            continue
        try:
            problems = compare_state_dict(module, read_state_dict(path))
        except ConfigError as e:
            problems = [("(file)", str(e))]
        rows += [{"file": path, "player": player, "layer": layer, "problem": why} for layer, why in problems] or [
            {"file": path, "player": player, "layer": None, "problem": None}]
    kind = cfg.train.optimizer
    for player, module, path in (("D optimizer", D, m.init_opt_d), ("G optimizer", G, m.init_opt_g)):
        if path is None:
            continue
        try:
            optimizer_buffers(read_optimizer_state(path, player), ParamLayout.of(module), kind, player)
            rows.append({"file": path, "player": player, "layer": None, "problem": None})
        except ConfigError as e:
            rows.append({"file": path, "player": player, "layer": _layer_named(str(e)), "problem": str(e)})
    return rows


def check_weights(cfg: RunConfig) -> None:
    """ConfigError naming the layers that do not fit, before anything runs."""
    bad = [r for r in weights_report(cfg) if r["problem"] is not None]
    if bad:
        shown = "; ".join(f"{r['player']} layer '{r['layer']}': {r['problem']}" if r["layer"] else
                          f"{r['player']}: {r['problem']}" for r in bad[:3])
        raise ConfigError(f"the weights do not fit the configured {cfg.model.arch} (width {cfg.model.width}, z_dim "
                          f"{cfg.model.z_dim}): {shown}" + (f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""))


def _modules(cfg: RunConfig):
    channels = 3 if cfg.data.color == "rgb" else 1
    size = cfg.data.image_size if isinstance(cfg.data.image_size, int) else 32
    return build_gan(cfg.model, channels=channels, size=size)


def _layer_named(message: str) -> str | None:
    return message.split("layer '", 1)[1].split("'", 1)[0] if "layer '" in message else None


def _absolute(path: str | None) -> str | None:
    return None if path is None else str(Path(path).expanduser().resolve())
