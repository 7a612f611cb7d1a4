"""The checks a configuration must pass before anything runs: one clear error per fault."""

from __future__ import annotations

import re

from ..errors import ConfigError
from .init_files import INIT_FILES
from .schema import (
    ACTIVATIONS,
    ARCH_SIZES,
    ARCHS,
    AUTO,
    COLORS,
    DATA_SOURCES,
    DEVICES,
    DTYPES,
    FEATURES,
    INITS,
    LABELS,
    OPTIMIZERS,
    SCHEMES,
    TRACE_LR_CONFIRMS,
    TRACE_LRS,
    TRACE_MODES,
    RunConfig,
)

_PRESET_NAME = re.compile(r"[A-Za-z0-9_-]{1,40}")


def validate(cfg: RunConfig) -> None:
    """Reject configs that cannot train, with one clear reason."""
    d, m, t, e = cfg.data, cfg.model, cfg.train, cfg.eval
    checks = [
        (isinstance(cfg.seed, int) and 0 <= cfg.seed < 2**32, "seed must be an integer in 0..2^32-1"),
        (_PRESET_NAME.fullmatch(cfg.preset) is not None, "preset names use letters, digits, '-' and '_' (at most 40)"),
        (d.source in DATA_SOURCES, f"data.source must be one of {DATA_SOURCES}, got '{d.source}'"),
        (d.n_train is None or d.n_train >= 1, "data.n_train must be positive"),
        (d.color in COLORS, f"data.color must be one of {COLORS}"),
        (d.labels in LABELS, f"data.labels must be one of {LABELS}"),
        (all((getattr(m, f) is None) == (getattr(m, f + "_sha256") is None) for f in INIT_FILES),
         "model.init_g/init_d/init_opt_g/init_opt_d need their sha256: give the files with --init-g/--init-d (or "
         "--set, which records it)"),
        ((m.init_opt_d is None and m.init_opt_g is None) or t.optimizer != "sgd",
         "model.init_opt_d/init_opt_g: plain SGD keeps no optimizer state to start from"),
        (d.image_size in (28, 32, 64, AUTO), "data.image_size must be 28, 32, 64 or auto"),
        (d.image_size == AUTO or d.image_size in ARCH_SIZES.get(m.arch, (d.image_size,)),
         f"{m.arch} generates images of {' or '.join(f'{s}x{s}' for s in ARCH_SIZES.get(m.arch, ()))} pixels "
         f"(data.image_size)"),
        (all(isinstance(n, int) and n >= 2 or n == AUTO for n in (d.n_valid, d.n_test)),
         "data.n_valid and data.n_test must be at least 2 (or auto)"),
        (d.source == "folder" or AUTO not in (d.color, d.image_size, d.n_valid, d.n_test),
         "data.color, data.image_size, data.n_valid and data.n_test can be auto for the folder source only"),
        (d.fingerprint is None or d.source == "folder", "data.fingerprint belongs to the folder source"),
        (d.root_in_id or d.fingerprint is not None, "data.root_in_id=false needs data.fingerprint: a run must be "
         "bound to its data by the folder's path or by the images' fingerprint"),
        (d.name is None or _PRESET_NAME.fullmatch(d.name) is not None,
         "data.name uses letters, digits, '-' and '_' (at most 40)"),
        (m.arch in ARCHS, f"model.arch must be one of {ARCHS}, got '{m.arch}'"),
        (1 <= m.width <= 512, "model.width must lie in 1..512"),
        (1 <= m.z_dim <= 1024, "model.z_dim must lie in 1..1024"),
        (m.activation in ACTIVATIONS, f"model.activation must be one of {ACTIVATIONS}"),
        (m.init in INITS, f"model.init must be one of {INITS}, got '{m.init}'"),
        (m.bias or m.arch == "fcgan", "model.bias=false is implemented for fcgan only"),
        (d.dtype in DTYPES, f"data.dtype must be one of {DTYPES}"),
        (d.dtype == "float32" or d.source == "normal2d", "data.dtype=float64 applies to normal2d data only"),
        ((m.arch == "fcgan") == (d.source == "normal2d"), "fcgan goes with normal2d data and only with it"),
        (t.epochs >= 1, "train.epochs must be at least 1"),
        (t.batch_size >= 1, "train.batch_size must be at least 1"),
        (t.lr_d > 0 and t.lr_g > 0, "learning rates must be positive"),
        (all(lr_d > 0 and lr_g > 0 for _, lr_d, lr_g in t.lr_schedule), "learning rates must be positive"),
        (all(1 <= ep <= t.epochs for ep, _, _ in t.lr_schedule), "lr_schedule epochs must lie in 1..epochs"),
        (t.weight_decay >= 0, "train.weight_decay must not be negative"),
        (1 <= t.trace_epochs <= t.epochs, "train.trace_epochs must lie in 1..epochs"),
        (t.trace_steps is None or t.trace_steps >= 1, "train.trace_steps must be positive"),
        (t.dtype in DTYPES, f"train.dtype must be one of {DTYPES}"),
        (t.device in DEVICES, f"train.device must be one of {DEVICES}"),
        (t.optimizer in OPTIMIZERS, f"train.optimizer must be one of {OPTIMIZERS}, got '{t.optimizer}'"),
        (len(t.betas) == 2 and all(0 <= b < 1 for b in t.betas), "train.betas must be two numbers in [0, 1)"),
        (t.eps > 0, "train.eps must be positive"),
        (0 <= t.momentum < 1, "train.momentum must lie in [0, 1)"),
        (not t.decoupled_wd or t.optimizer == "adam", "train.decoupled_wd (AdamW) needs train.optimizer=adam"),
        (t.scheme in SCHEMES, f"train.scheme must be one of {SCHEMES}, got '{t.scheme}'"),
        (1 <= t.d_steps <= 100, "train.d_steps must lie in 1..100"),
        (t.d_steps == 1 or t.scheme == "alternating", "train.d_steps > 1 needs train.scheme=alternating"),
        (0 <= t.ema_decay < 1, "train.ema_decay must lie in [0, 1) (0 = off)"),
        (t.trace_mode in TRACE_MODES, f"train.trace_mode must be one of {TRACE_MODES}"),
        (t.checkpoint_every is None or t.checkpoint_every >= 1, "train.checkpoint_every must be positive"),
        (t.trace_budget_mb >= 1, "train.trace_budget_mb must be at least 1"),
        (t.trace_lr in TRACE_LRS, f"train.trace_lr must be one of {TRACE_LRS}, got '{t.trace_lr}'"),
        (t.trace_lr_confirm in TRACE_LR_CONFIRMS,
         f"train.trace_lr_confirm must be one of {TRACE_LR_CONFIRMS}, got '{t.trace_lr_confirm}'"),
        (t.trace_lr_probe_steps is None or t.trace_lr_probe_steps >= 2, "train.trace_lr_probe_steps must be at least 2"),
        (2 <= e.n_valid_z <= 100_000 and 2 <= e.n_test_z <= 100_000, "eval.n_valid_z and eval.n_test_z must lie in 2..100000"),
        (1 <= e.n_grid <= 10_000, "eval.n_grid must lie in 1..10000"),
        (e.feature in FEATURES, f"eval.feature must be one of {FEATURES}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
