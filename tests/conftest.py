"""Shared fixtures: one tiny MNIST run and one small 2D run, trained once per test session.

The data cache (MNIST .npz, feature classifier) is shared across all stores of the
session through GAN_INFLUENCE_CACHE, so each store does not retrain the classifier.
"""

from __future__ import annotations

import os
from pathlib import Path

# Spinning OpenMP workers starve each other when other processes share the 2 cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

from influence import store  # noqa: E402
from _helpers import REPO, shared_store, tiny_config, toy_config  # noqa: E402


def pytest_configure(config):
    cache = Path(os.environ.get("GAN_INFLUENCE_TEST_CACHE", REPO / "runs" / "_test_cache"))
    cache.mkdir(parents=True, exist_ok=True)
    os.environ[store.ENV_CACHE] = str(cache)
    torch.set_num_threads(min(2, os.cpu_count() or 1))


# The longest test files, longest first (their times in the suite, docs/benchmarks.md "The test suite"). xdist's
# --dist loadfile hands files out in collection order (scripts/test.sh turns its reordering by test count off, which
# put these last), so they start at once and the suite does not end on one process running a long file alone.
LONG_FILES = ("app/test_browser.py", "test_jobs.py", "app/test_browser_own_images_form.py", "test_estimate.py",
              "app/test_browser_samples.py", "test_validate.py", "test_reliability.py", "test_execution.py",
              "app/test_trust_ui.py", "app/test_newcomer_pages.py")


def pytest_collection_modifyitems(config, items):
    tests = Path(__file__).parent
    missing = [name for name in LONG_FILES if not (tests / name).exists()]
    if missing:
        raise pytest.UsageError(f"tests/conftest.py LONG_FILES names files that are gone: {missing}")
    rank = {str(tests / name): i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(str(item.path), len(LONG_FILES)))  # stable: the rest keep their order
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs CUDA")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory) -> Path:
    """A store holding the tiny preset run (seed 0) with influence on FID, IS and D-loss."""
    from influence.estimator import EstimateOptions, estimate
    from influence.train import train

    def make(root: Path) -> None:
        estimate(train(tiny_config(), root), ["fid", "is", "dloss"], EstimateOptions())

    return shared_store(tmp_path_factory, "tiny_store", make)


@pytest.fixture(scope="session")
def tiny_run(tiny_store) -> store.Run:
    return store.open_run(tiny_store, tiny_config().run_id)


@pytest.fixture(scope="session")
def toy_store(tmp_path_factory) -> Path:
    from influence.estimator import EstimateOptions, estimate
    from influence.train import train

    def make(root: Path) -> None:
        estimate(train(toy_config(), root), ["all", "dloss"], EstimateOptions())

    return shared_store(tmp_path_factory, "toy_store", make)


@pytest.fixture(scope="session")
def toy_run(toy_store) -> store.Run:
    return store.open_run(toy_store, toy_config().run_id)

