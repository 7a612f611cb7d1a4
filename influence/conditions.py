"""The conditions a computation runs under, and what differs from those training ran under.

A run is bit-reproducible given its config, seed, torch's thread count, device, dtype, torch version
and processor (reductions split by threads, other kernels on another device or version round
differently, and torch's CPU kernels, oneDNN and MKL pick their code by the processor's vector
instructions: the same run trained with AVX2 kernels on an AVX512 machine differs in its last bits,
`bench/processor.py`).
Training records its conditions in trace/meta.json ("conditions"); whatever re-runs training's steps
(the influence pass recomputing checkpoint segments, replays, leave-one-out, validation) compares its
own with `differences` and shows the sentences on the card, in the CLI and in its result ("conditions").
Runs trained before the record say "conditions not recorded", never a guess.
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

import torch

NOT_RECORDED = ("training's conditions (threads, device, dtype) were not recorded: the run predates the record, "
                "so whether {activity} under the same conditions is unknown")
# The CPU flags that torch's kernels, oneDNN and MKL dispatch on, and the variables that override their choice.
_KERNEL_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni", "avx512_bf16",
                 "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve", "sve2")
_KERNEL_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR")


def current(device: torch.device | str, dtype: torch.dtype | str) -> dict:
    """This process's conditions for a computation on `device` in `dtype`."""
    return {"threads": torch.get_num_threads(), "device": str(device), "dtype": str(dtype).removeprefix("torch."),
            "torch": torch.__version__, "processor": processor(device)}


def processor(device: torch.device | str) -> str:
    """What picks the kernels on `device`: a GPU's name and compute capability; on the CPU the architecture,
    torch's vector capability, the CPU flags oneDNN and MKL dispatch on, and any variable that overrides them."""
    device = torch.device(device)
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"{torch.cuda.get_device_name(device)} (sm_{major}{minor})"
    if device.type != "cpu":
        return device.type
    return " ".join([platform.machine(), torch.backends.cpu.get_cpu_capability(), f"[{' '.join(_cpu_flags())}]",
                     *_overrides()])


@functools.cache
def _overrides() -> tuple[str, ...]:
    # read once: the libraries take them when they start, so a later change of os.environ changes no kernel
    return tuple(f"{k}={os.environ[k]}" for k in _KERNEL_ENV if os.environ.get(k))


@functools.cache
def _cpu_flags() -> tuple[str, ...]:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: torch's capability above still names the kernels it picks
        return ()
    for line in info.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            have = set(value.split())
            return tuple(f for f in _KERNEL_FLAGS if f in have)
    return ()


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
    if training.get("device") == now["device"]:
        if "processor" not in training:
            out.append(f"training's processor was not recorded (the run predates the record), so whether {activity} "
                       "the same kernels is unknown")
        elif training["processor"] != now["processor"]:
            out.append(f"{activity} on {now['processor']}, training ran on {training['processor']}: kernels picked "
                       "for other vector instructions round differently")
    return out


def report(trace_meta: dict, device: torch.device | str, dtype: torch.dtype | str, activity: str) -> dict:
    """What a result stores: training's conditions, its own, and the sentences for what differs."""
    return compare(recorded(trace_meta), device, dtype, activity)


def compare(training: dict | None, device: torch.device | str, dtype: torch.dtype | str, activity: str) -> dict:
    """`report` from training's recorded conditions (None: not recorded)."""
    now = current(device, dtype)
    return {"training": training, "now": now, "warnings": differences(training, now, activity)}
