"""Everything a job needs for one run: data, device, model functions, fixed z, evaluators."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch

from . import store
from .classifier import PINNED, PINNED_INFO, load_feature_net
from .config import RunConfig, validate
from .data import Dataset, load_dataset
from .errors import ConfigError
from .gan import GanFunctions
from .metrics import Evaluator, FeatureNet, RealStats
from .models import build_gan
from .pretrained import load_initial_weights, optimizer_counts
from .stepmap import TrainingRule


MIN_SPLIT = 20  # below this a split cannot hold a covariance estimate or two halves to compare: refused


def check_split_sizes(n_valid: int, n_test: int) -> None:
    """ConfigError when a validation or test split is too small to compute a metric on."""
    for name, n in (("validation", n_valid), ("test", n_test)):
        if n < MIN_SPLIT:
            raise ConfigError(f"the {name} split has {n} instances; at least {MIN_SPLIT} are needed for its metrics "
                              f"(own images: set data.n_valid / data.n_test to at least {MIN_SPLIT})")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is available")
    if name == "cuda":
        make_cuda_deterministic()
    return torch.device(name)


def make_cuda_deterministic() -> None:
    """Replay, resume and leave-one-out compare runs bit for bit: on CUDA that needs deterministic
    kernels, no cuDNN autotuning (it may pick another algorithm per call) and a fixed cuBLAS
    workspace (read when cuBLAS first starts, so set before any CUDA work). float32 stays IEEE float32:
    cuDNN's default TF32 convolutions round inputs to 10 mantissa bits (1e-3), far above what one removal
    moves, and the run records float32."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.conv.fp32_precision = "ieee"
    torch.backends.cuda.matmul.fp32_precision = "ieee"
    torch.use_deterministic_algorithms(True)


def fixed_latents(cfg: RunConfig) -> dict[str, torch.Tensor]:
    """Validation, test and grid z: fixed by the seed, independent of training randomness."""
    g = torch.Generator().manual_seed(10_000 + cfg.seed)
    z_dim = cfg.model.z_dim
    return {
        "valid": torch.randn(cfg.eval.n_valid_z, z_dim, generator=g, dtype=torch.float64),
        "test": torch.randn(cfg.eval.n_test_z, z_dim, generator=g, dtype=torch.float64),
        "grid": torch.randn(cfg.eval.n_grid, z_dim, generator=g, dtype=torch.float64),
    }


# Data handed to a cluster worker with its task (it has no data files or cache): data key -> (data set, feature net)
_SUPPLIED: dict[str, tuple[Dataset, FeatureNet | None]] = {}


def _data_key(cfg: RunConfig) -> str:
    d = cfg.to_dict()
    return json.dumps([d["data"], d["eval"], cfg.seed], sort_keys=True)


@contextlib.contextmanager
def supplied_data(cfg: RunConfig, dataset: Dataset, features: FeatureNet | None):
    """Within the block, contexts of runs with cfg's data use `dataset` and `features` instead of loading them."""
    key = _data_key(cfg)
    _SUPPLIED[key] = (dataset, features)
    try:
        yield
    finally:
        _SUPPLIED.pop(key, None)


def pinned_feature_run(root: Path, cfg: RunConfig) -> store.Run | None:
    """The run whose copy of the feature net (`classifier.PINNED`) a run's IS/FID are measured with: the run itself,
    else, for a fine-tune of a store run on the same data and features, its source run (so that the two runs'
    metrics compare wherever the cache holds another net or none). None: the cache's net."""
    for run_id in (cfg.run_id, cfg.model.init_from_run):
        if run_id is None or not (Path(root) / run_id / "manifest.json").exists():
            continue
        run = store.open_run(root, run_id)
        if run_id != cfg.run_id:
            source = load_run_config(run)
            if (source.identity()["data"], source.eval.feature) != (cfg.identity()["data"], cfg.eval.feature):
                continue
        if run.exists(PINNED):
            return run
    return None


def pinned_feature_net(root: Path, cfg: RunConfig) -> Path | None:
    """That copy's weights, checked against its run's manifest."""
    run = pinned_feature_run(root, cfg)
    return run.verify(PINNED) if run is not None else None


def feature_net_record(run: store.Run) -> Path | None:
    """The record of the run's copy (`classifier.PINNED_INFO`: accuracy or R^2, how it was trained), checked, if it
    keeps one (runs from before 2026-12-08 do not)."""
    return run.verify(PINNED_INFO) if run.exists(PINNED_INFO) else None


@dataclass
class RunContext:
    cfg: RunConfig
    root: Path
    dataset: Dataset
    device: torch.device
    dtype: torch.dtype

    @staticmethod
    def create(cfg: RunConfig, root: Path, dtype: str | None = None) -> "RunContext":
        validate(cfg)
        supplied = _SUPPLIED.get(_data_key(cfg))
        dataset = supplied[0] if supplied else load_dataset(cfg.data, cfg.seed, store.cache_dir(root))
        check_split_sizes(len(dataset.valid.x), len(dataset.test.x))
        if cfg.train.batch_size > dataset.n_train:
            raise ConfigError(f"train.batch_size={cfg.train.batch_size} is larger than the training set ({dataset.n_train})")
        torch_dtype = getattr(torch, dtype or cfg.train.dtype)
        return RunContext(cfg, root, dataset, resolve_device(cfg.train.device), torch_dtype)

    def with_dtype(self, dtype: torch.dtype) -> "RunContext":
        return RunContext(self.cfg, self.root, self.dataset, self.device, dtype)

    def _put(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self.device, self.dtype)

    @cached_property
    def train_x(self) -> torch.Tensor:
        return self._put(self.dataset.train.x)

    @cached_property
    def latents(self) -> dict[str, torch.Tensor]:
        return {k: self._put(v) for k, v in fixed_latents(self.cfg).items()}

    def new_gan(self) -> tuple[GanFunctions, torch.nn.Module, torch.nn.Module]:
        """Fresh G and D with the seed's initial weights."""
        torch.manual_seed(self.cfg.seed)
        x = self.dataset.train.x
        G, D = build_gan(self.cfg.model, channels=x.shape[1] if x.dim() == 4 else 1, size=x.shape[-1])
        # AdamW applies its decay in the update (optim), not as an L2 term of the loss
        loss_decay = 0.0 if self.cfg.train.decoupled_wd else self.cfg.train.weight_decay
        gan = GanFunctions(G, D, loss_decay).to(self.device, self.dtype)
        # a pretrained G/D replaces the seed's weights (model.init_g/d), read in the training dtype: a float64 run's
        # weights continue bit for bit (not through float32)
        load_initial_weights(self.cfg.model, G, D)
        return gan, G, D

    @cached_property
    def start_counts(self) -> tuple[int, int]:
        """Updates each player had made before this run's first step: 0, or a supplied optimizer state's step count
        (model.init_opt_d / init_opt_g: Adam's bias correction continues from it)."""
        return optimizer_counts(self.cfg.model)

    @cached_property
    def rule(self) -> TrainingRule:
        return TrainingRule.from_config(self.cfg)

    @cached_property
    def gan(self) -> GanFunctions:
        return self.new_gan()[0]

    @cached_property
    def features(self) -> FeatureNet | None:
        if self.cfg.is_2d:
            return None
        if (supplied := _SUPPLIED.get(_data_key(self.cfg))) is not None:
            return supplied[1]
        net = load_feature_net(self.cfg.eval, self.dataset, self.cfg.identity()["data"], store.cache_dir(self.root),
                               pinned=pinned_feature_net(self.root, self.cfg))
        return net.to(self.device, torch.float64) if net is not None else None

    def computed_real_stats(self, split: str) -> RealStats | None:
        """The split's real feature statistics if an evaluator of this context has computed them, else None."""
        evaluator = self.__dict__.get("_evaluators", {}).get(split)
        return None if evaluator is None else evaluator.real_stats

    def evaluator(self, split: str, real_stats: RealStats | None = None) -> Evaluator:
        """Metrics on the validation split (influence, and what a cleanse checks its prediction on) or the test
        split (reporting, cleansing).

        real_stats: the split's real feature statistics, when they were computed elsewhere (by the
        client of a cluster task), so that the first call does not recompute them.
        """
        if split not in self.__dict__.setdefault("_evaluators", {}):
            real = self._put(getattr(self.dataset, split).x)
            self.__dict__["_evaluators"][split] = Evaluator(self.gan, real, self.latents[split], self.features,
                                                            self.cfg.is_2d, real_stats)
        return self.__dict__["_evaluators"][split]


def load_run_config(run: store.Run) -> RunConfig:
    return RunConfig.from_dict(run.read_json("config.json"))
