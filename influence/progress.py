"""Progress reports and cancellation shared by every long job (CLI: tqdm; app: the job store)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .errors import Cancelled


@dataclass
class Progress:
    stage: str
    done: int
    total: int
    seconds: float
    info: dict = field(default_factory=dict)

    @property
    def eta(self) -> float | None:
        return self.seconds / self.done * (self.total - self.done) if self.done else None


ProgressFn = Callable[[Progress], None]


class Reporter:
    """Times a stage, forwards reports, and raises Cancelled when asked to stop."""

    def __init__(self, stage: str, total: int, callback: ProgressFn | None = None, cancel: "CancelToken | None" = None):
        self.stage, self.total, self.callback, self.cancel = stage, total, callback, cancel
        self.start = time.perf_counter()

    def __call__(self, done: int, **info) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled(f"{self.stage} cancelled at {done}/{self.total}")
        if self.callback is not None:
            self.callback(Progress(self.stage, done, self.total, time.perf_counter() - self.start, info))


class BatchProgress:
    """One stage over the tasks of one or more `execution.Executor.run` calls, so that a bar neither starts again
    with each task nor shows one task's time left as the whole batch's.

    Task i weighs `weights[i]` units (a check's replayed lane-steps, leave-one-out's replays); its own reports (any
    stage with a total) count in proportion, so a task of ten 5-minute replays moves the bar as it goes. `done`:
    units finished before (replays read back). A call over tasks first, first+1, ... takes `part(first)` as its
    progress: the execution layer tags each report with the task's place in that call (info "task").
    """

    def __init__(self, stage: str, weights: list[int], callback: ProgressFn | None = None,
                 cancel: "CancelToken | None" = None, done: int = 0):
        self.weights, self.share, self.done = weights, [0.0] * len(weights), done
        self.report = Reporter(stage, done + sum(weights), callback, cancel)
        self.report(done)

    def part(self, first: int) -> ProgressFn:
        def forward(p: Progress) -> None:
            if p.total:  # a task's stages without a count (waiting for a lock) move nothing
                i = first + p.info["task"]  # a task retried on another worker starts again: the bar waits for it
                self._set(i, max(self.share[i], min(p.done / p.total, 1.0)))
        return forward

    def finished(self, task: int) -> None:
        self._set(task, 1.0)

    def _set(self, task: int, share: float) -> None:
        self.share[task] = share
        self.report(self.done + round(sum(s * w for s, w in zip(self.share, self.weights))))


class CancelToken:
    """Set by the user; checked between steps. A file flag lets another process cancel a job."""

    def __init__(self, flag_file: Path | None = None):
        self.flag_file = flag_file
        self._set = False

    def set(self) -> None:
        self._set = True
        if self.flag_file is not None:
            self.flag_file.parent.mkdir(parents=True, exist_ok=True)
            self.flag_file.touch()

    def is_set(self) -> bool:
        return self._set or (self.flag_file is not None and self.flag_file.exists())
