"""From the Train page's choices to a RunConfig: data set, preset, edited hyperparameters.

Edited fields go through `influence.config.apply_overrides`, the same parser and
validation as the CLI's `--set key=value`, so the form rejects exactly what the engine
rejects, with the engine's reason.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import math
import re
import zipfile
from pathlib import Path

from influence import config as config_module
from influence import store
from influence.config import PRESETS, RunConfig, apply_overrides, describe_fields, own_images_defaults, preset, validate
from influence.data import Survey, describe, prepare
from influence.data.resolve import data_set_name
from influence.errors import ConfigError

DATASETS = {
    "mnist": "MNIST (embedded, no download)",
    "torchvision-mnist": "MNIST from a torchvision folder",
    "fashion-mnist": "Fashion-MNIST from a torchvision folder",
    "upload": "Your images: upload a zip",
    "folder": "Your images: a folder on this machine",
    "normal2d": "2D normal (the paper's toy)",
}
PRESET_NOTES = {
    "tiny": "1000 MNIST images, 2 epochs: seconds; for trying the app",
    "quick": "10k MNIST images, 20 epochs, plain SGD as in the paper: recognisable digits in minutes",
    "paper-valid": "the paper's estimation-accuracy setting (10k images, 50 epochs)",
    "paper-cleansing": "the paper's cleansing setting (all 50k images, wider model): hours on a CPU",
    "toy2d": "10k points from a 2D normal, small fully connected GAN (ReLU, as the paper)",
    "toy2d-smooth": "the 2D toy with softplus: leave-one-out agrees with the estimate (ReLU kinks do not)",
    "toy2d-adam": "the 2D toy trained with Adam (betas 0.5/0.999), softplus: influence exact through Adam's moments",
    "mnist-adam": "10k MNIST images, a DCGAN trained as GANs are today (Adam, alternating D/G steps), smooth "
                  "units: better digits than quick, estimates that match leave-one-out",
    "dcgan32": "Radford's DCGAN at 32 px with Adam and a checkpointed trace: sized for a GPU (seconds per step on a CPU)",
    "folder32": "DCGAN at 32 px (width 64, LayerNorm, GELU) with Adam for 32x32 folders of your images "
                "(RGB or grey): pretrain it, then start from it as a trained GAN to fine-tune and trace it",
}
# Fields with a fixed set of values get a select box; the tuples come from the engine's config module
# (getattr: a name the engine does not define yet simply gives a text field).
_CHOICE_NAMES = {"data.color": "COLORS", "data.labels": "LABELS", "data.dtype": "DTYPES", "model.arch": "ARCHS",
                 "model.activation": "ACTIVATIONS", "model.init": "INITS", "train.dtype": "DTYPES",
                 "train.device": "DEVICES", "train.optimizer": "OPTIMIZERS", "train.scheme": "SCHEMES",
                 "train.trace_mode": "TRACE_MODES", "train.trace_lr": "TRACE_LRS", "eval.feature": "FEATURES"}
CHOICES = {key: tuple(getattr(config_module, name)) for key, name in _CHOICE_NAMES.items()
           if hasattr(config_module, name)}
BOOL_CHOICES = ("True", "False")
OWN = ("upload", "folder")  # the data choices that are the user's own images
HELD_OUT_NOTE = (
    "**Held-out images.** `n_valid` images are held out for validation: an influence is the change of a metric "
    "measured on them, so every estimate rests on them. `n_test` images are held out for testing: cleansing is "
    "judged on them. Neither is trained on. FID and IS on fewer than 200 images are mostly noise, so the run then "
    "marks those metrics *uninformative*; every image held out is one fewer to train on. `auto`: 10% each, at "
    "least 20.")
SET_BY_PAGE = ("data.source", "data.root", "preset")  # chosen above the form, not in it
# How the optimizer updates (issue 10's options): a column of their own in the form, next to "train".
OPTIMIZER_KEYS = ("train.optimizer", "train.betas", "train.eps", "train.momentum", "train.nesterov",
                  "train.decoupled_wd", "train.scheme", "train.d_steps", "train.ema_decay")
SCHEDULE_KEY = "train.lr_schedule"
SCHEDULE_COLUMNS = ("from epoch", "lr_D", "lr_G")
MAX_UPLOAD_MB = 200


def preset_note(preset_name: str, data_key: str) -> str:
    """What the preset is; for own images, that only its model and training recipe apply."""
    if data_key not in OWN:
        return PRESET_NOTES.get(preset_name, "")
    c = PRESETS[preset_name]
    return (f"{preset_name}'s model and training recipe ({c.model.arch}, width {c.model.width}, {c.train.optimizer}, "
            f"{c.train.epochs} epochs) on your images; colour, size, held-out splits and IS/FID features follow your "
            "images, not MNIST (`auto` below)")


def own_images_summary(found: Survey, cfg: RunConfig) -> str:
    """What was read from the images and what the run makes of them (cfg: prepared), in one paragraph."""
    return (f"**Detected in your images:** {describe(cfg, found)}. Runs on them are named "
            f"`{cfg.data.name}-{cfg.preset}-s<seed>-…`.")


def presets_for(data_key: str) -> list[str]:
    toy = [name for name in PRESETS if PRESETS[name].is_2d]
    if data_key == "normal2d":
        return toy
    folder_only = [name for name in PRESETS if PRESETS[name].data.source == "folder"]  # folder32: own images only
    return [name for name in PRESETS if name not in toy and (data_key in OWN or name not in folder_only)]


def base_config(preset_name: str, data_key: str, data_root: str | None) -> RunConfig:
    """The preset, pointed at the chosen data set (own images: all of them, not the preset's subset)."""
    cfg = preset(preset_name)
    if data_key == "normal2d":
        return cfg
    source = "folder" if data_key in ("upload", "folder") else data_key
    if source != "mnist" and not (data_root or "").strip():
        raise ConfigError(f"{DATASETS[data_key]}: enter the folder path (or upload a zip) first")
    root = (data_root or "").strip() or None
    data = dataclasses.replace(cfg.data, source=source, root=root,
                               name=data_set_name(root) if source == "folder" else cfg.data.name)
    own_preset = cfg.data.source == "folder"  # folder32: its own choices for own images stay
    cfg = dataclasses.replace(cfg, data=data)
    # Own images: colour, size, held-out splits, all images and the features follow the images (data.prepare)
    return own_images_defaults(cfg) if source == "folder" and not own_preset else cfg


def fields(cfg: RunConfig) -> list[tuple[str, str, str, tuple[str, ...] | None]]:
    """(key, current value as text, help, choices or None) for every field the form shows (checksums of init
    files and the images' fingerprint, with whether the root is in the id, are recorded by the engine, not
    typed)."""
    values = _flat(cfg)
    return [(key, values[key], help_text, BOOL_CHOICES if isinstance(default, bool) else CHOICES.get(key))
            for key, default, help_text in describe_fields()
            if key not in SET_BY_PAGE and not key.endswith(("_sha256", ".fingerprint", ".root_in_id"))]


def section_of(key: str) -> str:
    """The form column a field goes in: data, model, train, optimizer or eval (seed sits with training)."""
    if key in OPTIMIZER_KEYS:
        return "optimizer"
    return key.split(".")[0] if "." in key else "train"


def schedule_rows(cfg: RunConfig) -> list[dict]:
    """The lr_schedule as table rows for the form's editor."""
    return [dict(zip(SCHEDULE_COLUMNS, (int(e), float(d), float(g)), strict=True)) for e, d, g in cfg.train.lr_schedule]


def schedule_text(rows: list[dict]) -> str:
    """Edited table rows -> the engine's 'EPOCH:LR_D:LR_G,...' text in epoch order (the editor appends rows
    at the bottom); rows left wholly empty are dropped, a half-filled row is a ConfigError naming it."""
    parts = []
    for number, row in enumerate(rows, start=1):
        cells = [row.get(c) for c in SCHEDULE_COLUMNS]
        missing = [c is None or (isinstance(c, float) and math.isnan(c)) for c in cells]
        if all(missing):
            continue
        if any(missing):
            raise ConfigError(f"lr_schedule row {number}: fill in {', '.join(SCHEDULE_COLUMNS)}")
        epoch, lr_d, lr_g = cells
        if float(epoch) != int(epoch):
            raise ConfigError(f"lr_schedule row {number}: the epoch must be a whole number, got {epoch}")
        parts.append((int(epoch), f"{int(epoch)}:{float(lr_d):g}:{float(lr_g):g}"))
    return ",".join(text for _, text in sorted(parts))


def schedule_following_epochs(base: RunConfig, epochs_text: str, rows: list[dict]) -> tuple[list[dict], str | None]:
    """The schedule rows to apply, and a sentence when they moved. A preset's schedule sets the rate of its
    last epoch(s), the traced ones: when the epochs change and the rows are the preset's, every row moves
    with the last epoch (left alone, 'from epoch 10' of 10 epochs became 21 epochs at the traced rate of
    30). Rows the user edited stay as typed."""
    try:
        epochs = int(epochs_text.strip())
    except ValueError:
        return rows, None  # the engine's check names the problem
    shift = epochs - base.train.epochs
    preset_rows = schedule_rows(base)
    if not shift or not preset_rows or schedule_text(rows) != schedule_text(preset_rows):
        return rows, None
    moved = [{**row, SCHEDULE_COLUMNS[0]: max(1, int(row[SCHEDULE_COLUMNS[0]]) + shift)} for row in preset_rows]
    old = ", ".join(str(int(r[SCHEDULE_COLUMNS[0]])) for r in preset_rows)
    new = ", ".join(str(r[SCHEDULE_COLUMNS[0]]) for r in moved)
    return moved, (f"The learning-rate schedule followed the epochs: from epoch {new} of {epochs} (the preset's "
                   f"{old} of {base.train.epochs}), so the same last epochs run at the traced rate.")


def apply_edits(cfg: RunConfig, edited: dict[str, str]) -> RunConfig:
    """The config with the form's changed fields applied; ConfigError with the reason otherwise."""
    values = _flat(cfg)
    assignments = [f"{key}={text.strip()}" for key, text in edited.items() if text.strip() != values[key]]
    out = prepare(apply_overrides(cfg, assignments))  # own images: read from them, fingerprinted
    validate(out)
    return out


def _flat(cfg: RunConfig) -> dict[str, str]:
    out = {}
    for key, _, _ in describe_fields():
        value = cfg
        for part in key.split("."):
            value = getattr(value, part)
        out[key] = _text(value)
    return out


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, tuple):
        if value and isinstance(value[0], tuple):  # lr_schedule: EPOCH:LR_D:LR_G,...
            return ",".join(":".join(f"{v:g}" if isinstance(v, float) else str(v) for v in item) for item in value)
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)  # betas: B1,B2
    return str(value)


def save_upload(root: Path, name: str, data: bytes) -> Path:
    """Keep an uploaded zip in <store>/_uploads/, named by its content so the same upload maps to the same run."""
    if len(data) > MAX_UPLOAD_MB * 2**20:
        raise ConfigError(f"the upload is larger than {MAX_UPLOAD_MB} MB")
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise ConfigError(f"'{name}' is not a zip file")
    path = root / "_uploads" / f"{hashlib.sha256(data).hexdigest()[:16]}-{_safe(name)}"
    if not path.exists():
        store.write_bytes(path, data)
    return path.resolve()


def _safe(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).name)[:60] or "upload"
    return stem if stem.lower().endswith(".zip") else stem + ".zip"


def reproduce_command(config_path: Path) -> str:
    return f"gan-influence train --config {config_path}"


def reproduce_note(cfg: RunConfig, conditions: dict | None) -> str:
    """Where the command that trains this run again works, and under which conditions it gives the same run bit
    for bit."""
    where = (" Where its images lie elsewhere, add `--set data.root=PATH` (their fingerprint must match)."
             if cfg.data.source == "folder" else "")
    if conditions is None:
        bits = ("Training's conditions (threads, device) were not recorded for this run, so whether another run comes "
                "out bit for bit the same is not known.")
    else:  # on a CPU the thread count splits reductions (influence.conditions); on CUDA it does not matter
        device = conditions["device"]
        on = f"{conditions['threads']} torch thread{'s' if conditions['threads'] != 1 else ''} on the CPU" \
            if device == "cpu" else device
        # runs trained before the processor was recorded: another one's kernels may differ in the last bits
        chip = f" ({conditions['processor']})" if "processor" in conditions else " (processor not recorded)"
        bits = (f"It gives the same run id, and the same weights bit for bit under training's conditions: {on}{chip}, "
                f"{conditions['dtype']}, torch {conditions['torch']}.")
    return f"The command below trains this run again, in this or another store or on another machine.{where} {bits}"
