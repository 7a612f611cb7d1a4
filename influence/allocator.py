"""glibc malloc settings for the engine's processes, which allocate the same large CPU buffers at every step.

Under glibc's defaults every block above the mmap threshold (128 KiB, rising to 32 MiB) is a fresh mmap, unmapped
on free, so the kernel zero-fills its pages again at the next step; a thread other than the main one
gets an arena of its own whose heaps hold at most 64 MiB, so larger blocks are mmapped there too.
Ten leave-one-out replays of the quick preset took 33.9 s that way, 5.7 s of it in the kernel for
3.7 M page faults, and 27.0 s (54 faults) from a heap that is kept (bench/allocator.py). The settings
keep one heap for every thread (one arena, no mmap, trimmed only above 1 GiB free, grown 256 MiB at
a time). Values are unchanged (the allocator touches no numbers); the price is that a process keeps
the memory of its peak until it ends (peak RSS up to 19% higher on tiny, quick and mnist-adam).
GAN_INFLUENCE_MALLOC=default keeps glibc's own settings; MALLOC_* variables set by the user win.
"""

from __future__ import annotations

import ctypes
import os
import sys

ENV_OPT_OUT = "GAN_INFLUENCE_MALLOC"
SETTINGS = {  # environment variable (read by glibc when a process starts) -> value
    "MALLOC_ARENA_MAX": str(1),
    "MALLOC_MMAP_MAX_": str(0),
    "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
    "MALLOC_TOP_PAD_": str(256 << 20),
}
_MALLOPT = {"MALLOC_ARENA_MAX": -8, "MALLOC_MMAP_MAX_": -4, "MALLOC_TRIM_THRESHOLD_": -1, "MALLOC_TOP_PAD_": -2}


def tuned() -> bool:
    return os.environ.get(ENV_OPT_OUT, "") != "default"


def child_environ() -> dict[str, str | None]:
    """The variables to give an engine process at its start (None: leave glibc's default; unset it)."""
    return {k: os.environ.get(k, v) if tuned() else os.environ.get(k) for k, v in SETTINGS.items()}


def tune_this_process() -> bool:
    """The settings for this process from now on (glibc's mallopt); False where they do not apply.

    Call it early in the main thread of a process that runs the engine (the CLI does): the main
    thread's allocations come from the tuned heap at once; threads started before it may keep an
    arena of their own, which is why worker processes get the settings as environment variables.
    """
    if not tuned() or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    return all(mallopt(_MALLOPT[k], int(v)) == 1 for k, v in child_environ().items() if v is not None)
