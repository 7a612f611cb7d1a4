"""Typed run configuration, presets and `--set key=value` overrides.

A run is fully described by a `RunConfig`; its run id is a hash of the canonical JSON of that config (seed
included), so the same config always maps to the same cached run on disk. `schema`: the sections and the id;
`presets`; `overrides`: `--set` and own images' defaults; `checks`: `validate`; `init_files`: pretrained files;
`recorded`: a run's config.json read back to train it again.
"""

from .checks import validate
from .init_files import INIT_FILES, MAX_INIT_BYTES, read_init_file, with_init_checksums
from .overrides import apply_overrides, describe_fields, own_images_defaults
from .presets import DEFAULT_PRESET, PRESETS, preset
from .recorded import check_same_inputs, parse_config, read_config_file
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
    FOLLOW_SOURCE,
    INITS,
    LABELS,
    OPTIMIZERS,
    SCHEMES,
    TRACE_BUDGET_MB,
    TRACE_LR_CONFIRMS,
    TRACE_LRS,
    TRACE_MODES,
    DataConfig,
    EvalConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
)

__all__ = [
    "ACTIVATIONS",
    "ARCHS",
    "ARCH_SIZES",
    "AUTO",
    "COLORS",
    "DATA_SOURCES",
    "DEFAULT_PRESET",
    "DEVICES",
    "DTYPES",
    "DataConfig",
    "EvalConfig",
    "FEATURES",
    "FOLLOW_SOURCE",
    "INITS",
    "INIT_FILES",
    "LABELS",
    "MAX_INIT_BYTES",
    "ModelConfig",
    "OPTIMIZERS",
    "PRESETS",
    "RunConfig",
    "SCHEMES",
    "TRACE_BUDGET_MB",
    "TRACE_LRS",
    "TRACE_LR_CONFIRMS",
    "TRACE_MODES",
    "TrainConfig",
    "apply_overrides",
    "check_same_inputs",
    "describe_fields",
    "own_images_defaults",
    "parse_config",
    "preset",
    "read_config_file",
    "read_init_file",
    "validate",
    "with_init_checksums",
]
