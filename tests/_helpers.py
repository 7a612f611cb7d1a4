"""Helpers and config builders shared by the tests (fixtures live in conftest.py).

Imported as `_helpers`: tests/app has its own conftest, so `from conftest import` is ambiguous."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from influence import store
from influence.config import DataConfig, EvalConfig, ModelConfig, RunConfig, TrainConfig, preset

REPO = Path(__file__).resolve().parents[1]

# What to set to make torch, oneDNN and MKL take the kernels of a processor with fewer vector instructions than
# this one's (keyed by torch.backends.cpu.get_cpu_capability())
LOWER_KERNELS = {"AVX512": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                            "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
                 "AVX2": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
                          "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}}


def copy_run(run: store.Run, root: Path, keep_results: bool = True) -> store.Run:
    """A private copy of a session run in another store, so a test can write to it (or damage it)
    without changing what other tests see. keep_results=False drops influence/cleanse/validate results."""
    ignore = None if keep_results else shutil.ignore_patterns("influence", "cleanse", "validate")
    shutil.copytree(run.dir, Path(root) / run.run_id, ignore=ignore)
    copy = store.open_run(store.store_root(root), run.run_id)
    if not keep_results:
        for prefix in ("influence/", "cleanse/", "validate/"):
            copy.forget(prefix)
    return copy


def tree(root: Path) -> list[str]:
    """Every file and folder under root, relative, sorted: to check that nothing was written."""
    root = Path(root)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def tiny_config(seed: int = 0) -> RunConfig:
    return preset("tiny", seed)


def toy_config(seed: int = 0, **train) -> RunConfig:
    """normal2d with 2k points: the paper's toy, small enough for tests."""
    return RunConfig(
        preset="toytest",
        data=DataConfig(source="normal2d", n_train=2000, n_valid=500, n_test=500),
        model=ModelConfig(arch="fcgan", z_dim=10),
        train=TrainConfig(epochs=3, batch_size=100, lr_d=0.01, lr_g=0.01, lr_schedule=((3, 0.001, 0.001),),
                          dtype="float64", **train),
        eval=EvalConfig(n_valid_z=500, n_test_z=500, n_grid=200),
        seed=seed,
    )


def shared_store(tmp_path_factory, name: str, make) -> Path:
    """A session store computed once for the whole suite: under pytest-xdist the first process that needs it makes
    it in the folder the processes share, and each process works on a copy of its own (a test's writes stay in its
    process, as with one process). Before, each process trained and estimated the session runs again."""
    root = tmp_path_factory.mktemp(name) / "store"
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        make(root)
        return root
    shared = tmp_path_factory.getbasetemp().parent / f"shared-{name}"
    # the other processes wait for the first instead of computing it again
    with store.exclusive(shared.with_name(f"shared-{name}.lock"), f"the session store {name}"):
        if not (shared / "made").exists():
            shutil.rmtree(shared, ignore_errors=True)
            make(shared / "store")
            (shared / "made").touch()
        shutil.copytree(shared / "store", root)
    return root
