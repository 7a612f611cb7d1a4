"""A recorded config (a run's config.json, from this or another store or machine) read back to train it again.

The same config gives the same run id and, at the same torch thread count and device, the same run bit for bit.
What binds a run to its inputs must then hold here too: the images' fingerprint and the pretrained files'
checksums are the recorded ones, or the run would be another one under the same recipe.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ConfigError
from .checks import validate
from .init_files import INIT_FILES
from .schema import RunConfig

MAX_CONFIG_BYTES = 1 << 20  # a config.json is a few kB


def read_config_file(path: str | Path) -> RunConfig:
    """The RunConfig in a config.json file; ConfigError (one line) when it is not one."""
    path = Path(path).expanduser()
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"--config: cannot read '{path}' ({e.strerror or e})") from None
    return parse_config(data, f"--config: '{path}'")


def parse_config(data: bytes, source: str) -> RunConfig:
    """The RunConfig in a config.json's bytes (`source` names them in the error); ConfigError when it is not one."""
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{source} is larger than {MAX_CONFIG_BYTES >> 10} kB: not a run's config.json")
    try:
        cfg = RunConfig.from_dict(json.loads(data))
    except (ValueError, TypeError, AttributeError) as e:  # not JSON, or not a table of sections
        raise ConfigError(f"{source} is not a run's config.json ({e})") from None
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    validate(cfg)
    return cfg


def check_same_inputs(recorded: RunConfig, cfg: RunConfig, source: str | Path) -> None:
    """ConfigError when a pretrained file of `cfg` is not the one `recorded` (read from `source`) was made with."""
    for name in INIT_FILES:
        was, now = getattr(recorded.model, f"{name}_sha256"), getattr(cfg.model, f"{name}_sha256")
        if was is not None and now != was:
            found = f"sha256 {now[:12]}" if now else "no file"
            raise ConfigError(f"model.{name}: {getattr(cfg.model, name)} is not the file {source} was made with "
                              f"(sha256 {was[:12]}, this one {found}); give that file with --set model.{name}=PATH")
