"""A job run here, or followed while another process (the app, another command) runs it; progress bars on
stderr."""

from __future__ import annotations

import sys
from pathlib import Path

from .. import jobs
from ..errors import InfluenceError


class Bar:
    """tqdm on stderr, one bar per stage."""

    def __init__(self, quiet: bool = False):
        self.bar, self.stage, self.quiet, self.waiting = None, None, quiet, None
        self.post: dict[str, str] = {}

    def __call__(self, p) -> None:
        if p.stage == "waiting" and p.info.get("for") != self.waiting:  # another process writes what this one needs
            self.waiting = p.info.get("for")
            print(f"waiting for another process to finish {self.waiting}", file=sys.stderr)
        if self.quiet or not p.total:  # start-up stages without a count (loading data): nothing to draw
            return
        from tqdm import tqdm

        if self.stage != p.stage or self.bar.total != p.total or p.done < self.bar.n:  # the next of a stage's parts
            self.close()
            # drawn at most every 0.1 s on a terminal, every 10 s into a file (a log took a line per step)
            self.stage, self.bar = p.stage, tqdm(total=p.total, desc=p.stage, file=sys.stderr, leave=False,
                                                 mininterval=0.1 if sys.stderr.isatty() else 10.0)
            self.post = {}
        # the last value of each: an alternating G step has no loss_d, an epoch's end report no losses at all, and
        # a bar drawn at such a report showed "loss_d=None" or the epoch alone
        self.post.update({k: (f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in p.info.items()
                          if k in ("epoch", "loss_d", "loss_g") and v is not None})
        self.bar.set_postfix(self.post, refresh=False)
        self.bar.update(p.done - self.bar.n)  # drawn when tqdm's interval has passed

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_or_follow(root: Path, spec: dict, quiet: bool) -> dict:
    """Run a job here, or follow it if another process (e.g. the app) already computes it.

    A followed job whose process dies is taken over: run here, it resumes from its checkpoints.
    """
    from ..progress import Progress

    bar = Bar(quiet)

    def show(status: dict) -> None:
        if status.get("stage") and status.get("total"):
            bar(Progress(status["stage"], int(status.get("done") or 0), int(status["total"]),
                         float(status.get("seconds") or 0.0), {}))

    try:
        for _attempt in range(3):
            result = jobs.run_job(root, spec, bar)
            if result is not None:
                return result
            key = jobs.job_key(spec)
            print(f"job {key} is already running elsewhere; following it", file=sys.stderr)
            status = jobs.wait(root, key, on_status=show)
            if status["state"] == "done":
                return status["result"]
            if status["state"] != "interrupted":
                raise InfluenceError(f"job {key} ended {status['state']}: {status.get('message', '')}")
            print(f"job {key} was interrupted; resuming it here", file=sys.stderr)
        raise InfluenceError(f"job {jobs.job_key(spec)} keeps being interrupted; run the command again")
    finally:
        bar.close()
