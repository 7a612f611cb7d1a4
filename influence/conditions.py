"""The conditions a computation runs under, and what differs from those training ran under.

A run is bit-reproducible given its config, seed, torch's thread count, device, dtype and torch
version (reductions split by threads, other kernels on another device or version round differently).
Training records its conditions in trace/meta.json ("conditions"); whatever re-runs training's steps
(the influence pass recomputing checkpoint segments, replays, leave-one-out, validation) compares its
own with `differences` and shows the sentences on the card, in the CLI and in its result ("conditions").
Runs trained before the record say "conditions not recorded", never a guess.
"""

from __future__ import annotations

import torch

NOT_RECORDED = ("training's conditions (threads, device, dtype) were not recorded: the run predates the record, "
                "so whether {activity} under the same conditions is unknown")


def current(device: torch.device | str, dtype: torch.dtype | str) -> dict:
    """This process's conditions for a computation on `device` in `dtype`."""
    return {"threads": torch.get_num_threads(), "device": str(device), "dtype": str(dtype).removeprefix("torch."),
            "torch": torch.__version__}


def recorded(trace_meta: dict) -> dict | None:
    """Training's conditions from trace/meta.json; None for runs from before they were recorded."""
    return trace_meta.get("conditions")


def differences(training: dict | None, now: dict, activity: str = "this runs") -> list[str]:
    """One sentence per condition that differs (empty: the same as training's). `activity` completes
    "the X runs ..." sentences, e.g. "this replay runs"."""
    if training is None:
        return [NOT_RECORDED.format(activity=activity)]
    out = []
    cpu = not (str(training.get("device", "")).startswith("cuda") and str(now["device"]).startswith("cuda"))
    if cpu and training.get("threads") != now["threads"]:
        out.append(f"{activity} at {now['threads']} torch threads, training ran at {training.get('threads')}: "
                   "reductions split differently round differently, so results can differ from training's in the "
                   "last bits")
    if training.get("device") != now["device"]:
        out.append(f"{activity} on {now['device']}, training ran on {training.get('device')}: other kernels round "
                   "differently")
    if training.get("dtype") != now["dtype"]:
        out.append(f"{activity} in {now['dtype']}, training ran in {training.get('dtype')}: the trajectory is "
                   "not the one trained")
    if training.get("torch") != now["torch"]:
        out.append(f"{activity} with torch {now['torch']}, training ran with torch {training.get('torch')}: "
                   "kernels may round differently")
    return out


def report(trace_meta: dict, device: torch.device | str, dtype: torch.dtype | str, activity: str) -> dict:
    """What a result stores: training's conditions, its own, and the sentences for what differs."""
    return compare(recorded(trace_meta), device, dtype, activity)


def compare(training: dict | None, device: torch.device | str, dtype: torch.dtype | str, activity: str) -> dict:
    """`report` from training's recorded conditions (None: not recorded)."""
    now = current(device, dtype)
    return {"training": training, "now": now, "warnings": differences(training, now, activity)}
