"""Pretrained weights and optimizer states named in the configuration: read within bounds, checksummed into
the run id."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import stat
from pathlib import Path

from ..errors import ConfigError
from .schema import RunConfig

INIT_FILES = ("init_g", "init_d", "init_opt_g", "init_opt_d")
MAX_INIT_BYTES = 1 << 30  # 1 GiB: 268M float32 parameters, far above any built-in architecture


def with_init_checksums(cfg: RunConfig) -> RunConfig:
    """The config with the sha256 of model.init_g / init_d (and the optimizer states init_opt_g / init_opt_d) filled
    in from the files (they enter the run id)."""
    changes = {}
    for name in INIT_FILES:
        path = getattr(cfg.model, name)
        sha_field = f"{name}_sha256"
        if path is None:
            if getattr(cfg.model, sha_field) is not None:
                changes[sha_field] = None
            continue
        changes[sha_field] = hashlib.sha256(read_init_file(path, f"model.{name}")).hexdigest()
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **changes)) if changes else cfg


def read_init_file(path: str | Path, key: str) -> bytes:
    """The bytes of a pretrained-weights file (model.init_g / init_d): a regular file of at most MAX_INIT_BYTES,
    else one ConfigError line. Opened without blocking and checked before reading: a FIFO would hang the
    reader (the app's field takes any path), /dev/zero would fill memory."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path
        raise ConfigError(f"{key}: cannot read '{path}' ({getattr(e, 'strerror', None) or e})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{key}: '{path}' is not a regular file (a folder, FIFO or device); give a .pt or "
                              ".safetensors weights file")
        if info.st_size > MAX_INIT_BYTES:
            raise ConfigError(f"{key}: '{path}' has {info.st_size / 2**20:.0f} MiB, more than the "
                              f"{MAX_INIT_BYTES >> 20} MiB a weights file of these architectures can need")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(MAX_INIT_BYTES + 1)
        if len(data) > MAX_INIT_BYTES:  # it grew while being read
            raise ConfigError(f"{key}: '{path}' is larger than {MAX_INIT_BYTES >> 20} MiB")
        return data
    except OSError as e:
        raise ConfigError(f"{key}: cannot read '{path}' ({e.strerror or e})") from None
    finally:
        os.close(fd)
