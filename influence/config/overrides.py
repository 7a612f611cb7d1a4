"""`--set section.key=value` overrides, own images' defaults, and the keys with their help."""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import fields
from typing import Any, get_args, get_origin

from ..errors import ConfigError
from .checks import validate
from .init_files import with_init_checksums
from .schema import FOLLOW_SOURCE, RunConfig, dataclass_type


def apply_overrides(cfg: RunConfig, assignments: list[str]) -> RunConfig:
    """Apply `section.key=value` strings (e.g. `train.lr_d=0.001`, `seed=3`)."""
    d = cfg.to_dict()
    assigned = set()
    for item in assignments:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got '{item}'")
        key, raw = item.split("=", 1)
        assigned.add(key.strip())
        path = key.strip().split(".")
        target_cls, target = RunConfig, d
        for part in path[:-1]:
            f = {f.name: f for f in fields(target_cls)}.get(part)
            if f is None or dataclass_type(f) is None:
                raise ConfigError(_unknown(key.strip()))
            target_cls, target = dataclass_type(f), target[part]
        f = {f.name: f for f in fields(target_cls)}.get(path[-1])
        if f is None or dataclass_type(f) is not None:
            raise ConfigError(_unknown(key.strip()))
        target[path[-1]] = _parse_value(f, raw.strip(), key)
    out = RunConfig.from_dict(d)
    if out.data.source == "folder" and cfg.data.source != "folder":
        out = own_images_defaults(out, keep=assigned)
    out = with_init_checksums(out)
    validate(out)
    return out


def own_images_defaults(cfg: RunConfig, keep: set[str] = frozenset()) -> RunConfig:
    """The config with FOLLOW_SOURCE's values (the images decide colour, size, splits and features), except
    the keys in `keep` (set explicitly)."""
    d = cfg.to_dict()
    for key, value in FOLLOW_SOURCE.items():
        if key not in keep:
            section, name = key.split(".")
            d[section][name] = value
    return RunConfig.from_dict(d)


def _unknown(key: str) -> str:
    """The error for an unknown key: a section's keys, or the nearest valid keys (`train.lr` for `train.lr_d`)."""
    keys = _all_keys()
    section = [k for k in keys if k.startswith(key + ".")]
    near = section or [k for k in keys if k.startswith(key + "_")] or \
        difflib.get_close_matches(key, keys, n=3, cutoff=0.75)
    hint = f"; {key} is a section: {', '.join(section)}" if section else \
        f"; did you mean {', '.join(near)}?" if near else ""
    return f"unknown config key '{key}'{hint} (`gan-influence train --help` lists every key)"


def _all_keys() -> list[str]:
    keys = []
    for f in fields(RunConfig):
        sub = dataclass_type(f)
        keys += [f"{f.name}.{g.name}" for g in fields(sub)] if sub else [f.name]
    return keys


def _parse_value(f: dataclasses.Field, raw: str, key: str) -> Any:
    if f.name == "lr_schedule":
        return _parse_schedule(raw, key)
    if f.name == "betas":
        try:
            b1, b2 = (float(b) for b in raw.split(","))
        except ValueError:
            raise ConfigError(f"{key}: expected two numbers 'BETA1,BETA2' (e.g. 0.5,0.999), got '{raw}'") from None
        return [b1, b2]
    types = _field_types(f)
    if raw.lower() in ("none", "null", "") and type(None) in types:
        return None
    for t in types:
        try:
            if t is bool:
                if raw.lower() in ("true", "1", "yes"):
                    return True
                if raw.lower() in ("false", "0", "no"):
                    return False
                continue
            if t in (int, float, str):
                return t(raw)
        except ValueError:
            continue
    names = "/".join(t.__name__ for t in types)
    raise ConfigError(f"{key}: cannot read '{raw}' as {names}")


def _parse_schedule(raw: str, key: str) -> list[list[float]]:
    if raw.lower() in ("", "none"):
        return []
    out = []
    for part in raw.split(","):
        bits = part.split(":")
        try:
            if len(bits) != 3:
                raise ValueError
            out.append([int(bits[0]), float(bits[1]), float(bits[2])])
        except ValueError:
            raise ConfigError(f"{key}: expected EPOCH:LR_D:LR_G[,...], got '{part}'") from None
    return out


def _field_types(f: dataclasses.Field) -> tuple[type, ...]:
    t = f.type
    if isinstance(t, str):
        mapping = {"int": (int,), "float": (float,), "str": (str,), "bool": (bool,),
                   "int | None": (int, type(None)), "str | None": (str, type(None)), "int | str": (int, str),
                   "float | None": (float, type(None))}
        return mapping.get(t, (str,))
    if get_origin(t) is not None:
        return tuple(get_args(t))
    return (t,)


def describe_fields() -> list[tuple[str, Any, str]]:
    """(key, default, help) for every config key: the CLI help and the app form use it."""
    out = []
    defaults = RunConfig()
    for f in fields(RunConfig):
        sub = dataclass_type(f)
        if sub is None:
            out.append((f.name, getattr(defaults, f.name), f.metadata.get("help", "")))
            continue
        for g in fields(sub):
            out.append((f"{f.name}.{g.name}", getattr(getattr(defaults, f.name), g.name), g.metadata.get("help", "")))
    return out
