"""The chosen latent vectors z*: from a seed, a file, the run's pool of stored samples, or the validation z.

A job spec carries them as a small JSON object (`spec`), so the CLI and the app send the same job for the
same samples: {"seed": S, "n": N} | {"pool": [indices]} | {"valid": true} | {"z": [[...], ...]} (a file's
rows, exact: JSON floats round-trip).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..config import RunConfig
from ..context import fixed_latents
from ..errors import ConfigError

POOL_SIZE = 256  # the Generated samples page's grid: samples from these z, fixed by the run's seed
POOL_SEED_OFFSET = 20_000  # independent of the validation/test/grid z (10_000 + seed)
MAX_FILE_BYTES = 16 * 2**20


def pool_latents(cfg: RunConfig) -> torch.Tensor:
    """(POOL_SIZE, z_dim) float64: the run's pool of samples to pick from."""
    g = torch.Generator().manual_seed(POOL_SEED_OFFSET + cfg.seed)
    return torch.randn(POOL_SIZE, cfg.model.z_dim, generator=g, dtype=torch.float64)


def parse(text: str) -> dict:
    """'SEED:N' -> {"seed", "n"}; 'valid' -> the validation z; anything else is a .npy file of z (n, z_dim)."""
    text = text.strip()
    if text == "valid":
        return {"valid": True}
    seed, colon, n = text.partition(":")
    if colon and seed.isdigit() and n.isdigit():
        return {"seed": int(seed), "n": int(n)}
    if not text.endswith(".npy"):
        raise ConfigError(f"samples: '{text}' is neither SEED:N (e.g. 0:16), 'valid' nor a .npy file of latent vectors")
    path = Path(text)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ConfigError(f"samples file '{text}' is larger than {MAX_FILE_BYTES // 2**20} MB")
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read the samples file '{text}': {e}") from None
    if z.ndim != 2 or not np.issubdtype(z.dtype, np.floating):
        raise ConfigError(f"samples file '{text}': expected a float array (n, z_dim), got {z.dtype} {z.shape}")
    return {"z": z.astype(np.float64).tolist()}


def latents(cfg: RunConfig, spec: dict) -> torch.Tensor:
    """(n, z_dim) float64 for a samples spec; ConfigError when it does not fit the run."""
    z_dim = cfg.model.z_dim
    if not isinstance(spec, dict) or len(spec) != 1 and set(spec) != {"seed", "n"}:
        raise ConfigError("samples: give SEED:N, a file of z, pool indices or the validation z")
    if "seed" in spec:
        n, seed = int(spec["n"]), int(spec["seed"])
        if n < 1:
            raise ConfigError("samples: N must be at least 1")
        if not 0 <= seed < 2**63:
            raise ConfigError("samples: the seed must be a non-negative integer")
        return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    if "pool" in spec:
        ids = [int(i) for i in spec["pool"]]
        if not ids or any(not 0 <= i < POOL_SIZE for i in ids) or len(set(ids)) < len(ids):
            raise ConfigError(f"samples: pool indices must be distinct and lie in 0..{POOL_SIZE - 1}")
        return pool_latents(cfg)[ids]
    if spec.get("valid"):
        return fixed_latents(cfg)["valid"]
    if "z" in spec:
        z = torch.tensor(spec["z"], dtype=torch.float64)
        if z.dim() != 2 or z.shape[1] != z_dim or len(z) == 0:
            raise ConfigError(f"samples: the run's latent vectors have {z_dim} entries; got shape {tuple(z.shape)}")
        if not torch.isfinite(z).all():
            raise ConfigError("samples: the latent vectors must be finite")
        return z
    raise ConfigError("samples: give SEED:N, a file of z, pool indices or the validation z")
