"""App test fixtures. The trained runs come from tests/conftest.py (tiny_store, toy_store, once per session);
tests that change state work on a copy so the shared stores stay as the engine tests expect them."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from apphelpers import CLEANSED, tiny_run_id, use_store
from _helpers import shared_store
from influence import jobs, store


@pytest.fixture(scope="session")
def rich_store(tiny_store, tmp_path_factory) -> Path:
    """The tiny run plus one cleansing attempt (the CLEANSED most harmful by FID) and one 5-instance validation."""
    from influence.cleanse import cleanse
    from influence.estimator import cached_results, harmful_order
    from influence.validation import validate

    def make(root: Path) -> None:
        shutil.copytree(tiny_store, root, ignore=shutil.ignore_patterns("_jobs"))
        run = store.open_run(root, tiny_run_id(root))
        removal = harmful_order(cached_results(run)["fid"])[:CLEANSED].tolist()
        cleanse(run, removal)
        run.write_json("app/removal.json", {"ids": sorted(removal)})
        validate(run, ["fid"], n=5)

    return shared_store(tmp_path_factory, "rich", make)


@pytest.fixture
def rich(rich_store, monkeypatch) -> Path:
    """The rich store, read-only, selected through GAN_INFLUENCE_STORE."""
    return use_store(monkeypatch, rich_store)


@pytest.fixture
def app_store(tiny_store, tmp_path, monkeypatch) -> Path:
    """A private copy of the tiny store, selected through GAN_INFLUENCE_STORE."""
    root = tmp_path / "store"
    shutil.copytree(tiny_store, root, ignore=shutil.ignore_patterns("_jobs"))
    return use_store(monkeypatch, root)


@pytest.fixture
def two_runs(tiny_store, toy_store, tmp_path, monkeypatch) -> Path:
    """A private store holding the tiny MNIST run and the small 2D run, the 2D run the newest."""
    root = tmp_path / "store"
    shutil.copytree(tiny_store, root, ignore=shutil.ignore_patterns("_jobs"))
    shutil.copytree(toy_store, root, ignore=shutil.ignore_patterns("_jobs", "_cache"), dirs_exist_ok=True)
    # the copies keep their times, and which session run trained first depends on the test files a process ran
    # before (the suite runs on two): newest is when config.json was written (store.list_runs)
    newest = time.time() + 1
    for run in store.list_runs(toy_store):
        os.utime(root / run["run_id"] / "config.json", (newest, newest))
    return use_store(monkeypatch, root)


@pytest.fixture
def empty_store(tmp_path, monkeypatch) -> Path:
    return use_store(monkeypatch, tmp_path / "empty")


@pytest.fixture
def started_jobs(monkeypatch) -> list[dict]:
    """Job specs the app asks to start; nothing is spawned (the real path is tested with a training job)."""
    specs: list[dict] = []

    def fake_start(root, spec):
        specs.append(json.loads(json.dumps(spec)))  # what the worker would read back from spec.json
        return jobs.job_key(spec)

    monkeypatch.setattr(jobs, "start_background", fake_start)
    return specs
