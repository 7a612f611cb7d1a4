"""The engine's allocator settings: a large buffer freed and taken again costs no page faults, on the main
thread (mallopt, as the CLI) and on another thread of a process started with them (as Dask workers, jobs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from influence import allocator

CHILD = r"""
import json, os, resource, sys, threading
import torch
from influence import allocator
tuned = allocator.tune_this_process() if sys.argv[1] == "mallopt" else None
faults = []
def cycles():  # steps that each take a fresh 64 MiB buffer, as a replay's evaluation does
    for _ in range(20):  # torch's 64-byte-aligned blocks reuse freed ones once some have coalesced
        torch.ones(1 << 24).sum()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        torch.ones(1 << 24).sum()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
if sys.argv[2] == "thread":
    t = threading.Thread(target=cycles); t.start(); t.join()
else:
    cycles()
print(json.dumps({"tuned": tuned, "faults": faults[0]}))
"""

PAGES_PER_BUFFER = (1 << 26) // 4096


def _faults(how: str, where: str, env: dict[str, str]) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != allocator.ENV_OPT_OUT}
    out = subprocess.run([sys.executable, "-c", CHILD, how, where], env={**clean, **env}, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_glibc_defaults_fault_in_every_fresh_buffer():
    """The cost the settings remove: each 64 MiB buffer is a new mmap, all of its pages faulted in again."""
    assert _faults("none", "main", {})["faults"] >= 5 * PAGES_PER_BUFFER * 0.9


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_mallopt_keeps_the_heap_for_the_main_thread():
    out = _faults("mallopt", "main", {})
    assert out["tuned"] is True and out["faults"] < 0.05 * 5 * PAGES_PER_BUFFER


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_the_environment_keeps_the_heap_for_a_worker_thread():
    """A Dask task runs on a thread of its own: one arena, so it takes the same kept heap."""
    env = {k: v for k, v in allocator.child_environ().items() if v is not None}
    assert _faults("none", "thread", env)["faults"] < 0.05 * 5 * PAGES_PER_BUFFER


def test_opting_out_and_the_users_own_settings(monkeypatch):
    monkeypatch.setenv("MALLOC_TOP_PAD_", "4096")
    assert allocator.child_environ() == {**allocator.SETTINGS, "MALLOC_TOP_PAD_": "4096"}
    monkeypatch.setenv(allocator.ENV_OPT_OUT, "default")
    assert allocator.child_environ() == {"MALLOC_ARENA_MAX": None, "MALLOC_MMAP_MAX_": None,
                                         "MALLOC_TRIM_THRESHOLD_": None, "MALLOC_TOP_PAD_": "4096"}
    assert allocator.tune_this_process() is False
