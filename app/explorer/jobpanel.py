"""Background jobs in the UI: start, follow (progress, ETA, live extras), cancel, resume.

Jobs run in their own processes (`influence.jobs.start_background`) and report through
the store, so they outlive script reruns, page switches and browser refreshes. A panel
finds its job on disk, not in session state: after a refresh it is still there.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import streamlit as st

from influence import jobs
from influence.config import RunConfig
from influence.errors import InfluenceError
from influence.metrics import METRIC_LABELS

from . import state
from .tables import duration

ACTIVE = ("queued", "running")
# Following a job costs the CPU its worker needs (2 cores: bench/app_poll_cpu.py): the progress box
# polls every POLL_S, the heavier live view (charts, sample grid) every LIVE_S, the sidebar every SIDEBAR_S.
POLL_S = 2.0
LIVE_S = 10.0
SIDEBAR_S = 5.0
STARTUP = {"starting": "Start-up: starting the worker (Python, torch)",
           "loading": "Start-up: loading the data set",
           "feature-net": "Start-up: the IS/FID feature network (loaded, or trained once per data set)",
           "waiting": "Waiting: another job or tab is computing the same result; this one then reads it"}
STAGES = {
    **STARTUP,
    "feature-net": "Start-up: training the IS/FID feature network (once per data set)",
    "train": "training", "influence": "influence (backward pass over the traced steps)",
    "replay": "replaying the traced steps without the removal set", "retrain": "retraining from scratch",
    "leave-one-out": "leave-one-out", "sweep": "data-cleansing sweep",
    "spot check": "spot check (replays of its groups and single images, and their evaluations)",
    "group replays": "group validation (random removal sets)",
    "trace-lr probe": "probing traced learning rates",
}
# else step; None: a share (a check counts its lanes' evaluations as replayed steps, so its count is no step count)
UNITS = {"feature-net": "epoch", "leave-one-out": "replay", "group replays": "replay", "sweep": "cleanse",
         "spot check": None}


def spec_run_id(spec: dict) -> str | None:
    """The run a job works on (for training: the run it creates)."""
    if spec["kind"] == "train":
        try:
            return RunConfig.from_dict(spec["params"]["config"]).run_id
        except (InfluenceError, KeyError, TypeError):
            return None
    return spec["params"].get("run_id")


def latest(root: Path, kind: str, run_id: str | None = None) -> dict | None:
    """The newest job of `kind` (on `run_id`) that the user has not dismissed, with its 'spec'."""
    dismissed = state.dismissed_jobs(root)
    for status in jobs.list_jobs(root):  # newest first
        spec = status["spec"]
        if spec.get("kind") != kind or (run_id is not None and spec_run_id(spec) != run_id):
            continue
        if status["key"] in dismissed and status["state"] not in ACTIVE:
            continue
        return status
    return None


def start(root: Path, spec: dict) -> str:
    key = jobs.start_background(root, spec)
    state.undismiss_job(root, key)
    return key


def adopt_trained_run(root: Path, status: dict) -> None:
    """The first time anyone sees a training job finished, its run becomes the current run
    (remembered in the store, so a later refresh does not undo a switch to another run)."""
    if status["state"] == "done" and state.first_sight(root, status["key"]):
        state.set_current_run(root, spec_run_id(status["spec"]))
        st.rerun()


def describe(spec: dict) -> str:
    p = spec["params"]
    metrics = ", ".join(METRIC_LABELS.get(m, m) for m in p.get("metrics", []))
    return {
        "train": lambda: f"Training {spec_run_id(spec)}",
        "estimate": lambda: f"Influence on {metrics}" + (f", then its spot check ({p['check']})" if p.get("check") else ""),
        "cleanse": lambda: f"Cleansing without {len(p['removal_ids'])} instances ({p.get('mode', 'replay')})",
        "validate": lambda: (f"Group validation of {metrics}: {p['groups'].get('groups')} random groups per fraction"
                             if isinstance(p.get("groups"), dict) else f"Validation of {metrics} on {p.get('n')} instances"),
        "explain": lambda: (f"Influence on the {p['objective'].split(':')[0]} of chosen samples"
                            + (f", checked by replays without the top {p['check']['k']}" if "check" in p else "")),
        "sweep": lambda: (f"Data-cleansing sweep over {len(p['configs'])} seeds: {len(p['methods'])} methods x "
                          f"{len(p['counts'])} removal counts, test {METRIC_LABELS.get(p.get('metric', 'fid'))}"),
    }[spec["kind"]]()


def panel(root: Path, job: dict, live: Callable[[dict], None] | None = None) -> None:
    """A job's progress box (job: a status with its 'spec', as `latest` gives it); polls while the job
    is queued or running, then reruns the page once."""
    key, spec = job["key"], job["spec"]
    active = jobs.read_status(root, key)["state"] in ACTIVE

    @st.fragment(run_every=POLL_S if active else None)
    def body() -> None:
        status = {**jobs.read_status(root, key), "spec": spec}
        if active and status["state"] not in ACTIVE:
            st.rerun()  # it just ended: redraw the whole page with its results
        _render(root, key, status, describe(spec))

    body()
    if live is not None and active:
        @st.fragment(run_every=LIVE_S)
        def live_view() -> None:
            status = {**jobs.read_status(root, key), "spec": spec}
            if status["state"] in ACTIVE:
                live(status)

        live_view()


def _render(root: Path, key: str, status: dict, title: str) -> None:
    s = status["state"]
    with st.container(border=True):
        st.markdown(f"**{title}**")
        if s in ACTIVE:
            _progress(status)
            # Only once running: a worker clears stale cancel flags when it starts, so a cancel
            # while queued would be lost.
            if s == "running" and st.button("Cancel", key=f"cancel-{key}", icon=":material/stop_circle:"):
                jobs.cancel(root, key)
                st.toast("Cancelling: the job stops after its current step.")
            return
        if s == "done":
            st.success(finished_text(status), icon=":material/check_circle:")
        elif s == "failed":
            st.error(f"Failed: {status.get('message') or 'no message'}", icon=":material/error:")
        elif s == "cancelled":
            st.warning("Cancelled. Starting again continues from the job's last checkpoint where it has one.",
                       icon=":material/cancel:")
        elif s == "interrupted":
            st.warning("The worker stopped before finishing (killed, crashed or the machine restarted). "
                       "Resume continues from its last checkpoint.", icon=":material/pause_circle:")
        else:
            st.info("No status for this job yet.")
        buttons = st.container(horizontal=True)
        again = {"failed": "Try again", "cancelled": "Start again", "interrupted": "Resume"}.get(s)
        if again and buttons.button(again, key=f"again-{key}", type="primary"):
            start(root, status["spec"])
            st.rerun()
        if buttons.button("Dismiss", key=f"dismiss-{key}"):
            state.dismiss_job(root, key)
            st.rerun()


def finished_text(status: dict) -> str:
    """'Finished in T from start to end: waiting 2 s, start-up 40 s (data set, feature net), influence 1 min.'"""
    started, updated = status.get("started"), status.get("updated")
    if started is None or updated is None:
        return "Finished."
    total = updated - status.get("queued_at", started)
    stages = sorted((status.get("stages") or {}).items(), key=lambda kv: kv[1])
    if not stages:  # written by a worker that did not record its stages
        return f"Finished in {duration(total)}."
    parts = []
    if "queued_at" in status:
        parts.append(f"waiting for a worker {duration(started - status['queued_at'])}")
    work = [(name, at) for name, at in stages if name not in STARTUP]
    startup_end = work[0][1] if work else updated - started
    parts.append(f"start-up {duration(startup_end)} (worker, data set"
                 + (", feature network" if "feature-net" in dict(stages) else "") + ")")
    # a job whose result was cached reports start-up stages only (work is empty)
    for (name, at), nxt in zip(work, [a for _, a in work[1:]] + [updated - started][:len(work)], strict=True):
        parts.append(f"{STAGES.get(name, name).split(' (')[0]} {duration(nxt - at)}")
    return f"Finished in {duration(total)} from start to end: " + ", ".join(parts) + "."


def _progress(status: dict) -> None:
    done, total = int(status.get("done") or 0), int(status.get("total") or 0)
    if status["state"] == "queued":
        st.progress(0, text="Waiting for a worker process to start ...")
        return
    if total == 0:
        elapsed = max(0.0, time.time() - status.get("started", time.time()))
        st.progress(0, text=f"{STARTUP.get(status.get('stage'), 'Start-up')} ... ({duration(elapsed)} so far)")
        return
    stage = STAGES.get(status.get("stage"), status.get("stage") or "working")
    eta = status.get("eta")
    unit = (status.get("info") or {}).get("unit") or UNITS.get(status.get("stage"), "step")  # a stage may say its own
    count = f"{min(done / total, 1.0):.0%} done" if unit is None else f"{unit} {done:,} of {total:,}"
    text = (f"{stage}: {count} · {duration(status.get('seconds'))} elapsed"
            + (f" · about {duration(eta, rough=True)} left" if eta is not None else ""))
    st.progress(min(done / total, 1.0), text=text)
    info = status.get("info") or {}
    bits = [info["sweep"] if isinstance(info.get("sweep"), str) else None,
            f"epoch {info['epoch']}" if "epoch" in info else None,
            f"D loss {info['loss_d']:.3f}" if isinstance(info.get("loss_d"), float) else None,
            f"G loss {info['loss_g']:.3f}" if isinstance(info.get("loss_g"), float) else None]
    if any(bits):
        st.caption(" · ".join(b for b in bits if b))


def loss_sample(status: dict) -> tuple[int, float | None, float | None] | None:
    """(step, D loss, G loss) from a running training's status, None where it reports neither. An alternating
    step (mnist-adam, the default) reports one player's loss and None for the other: a sample of either kind is
    kept, or the live chart would draw only one player's line."""
    info = status.get("info") or {}
    d, g = (info.get(k) if isinstance(info.get(k), float) else None for k in ("loss_d", "loss_g"))
    return None if d is None and g is None else (int(status.get("done") or 0), d, g)


def sidebar_list(root: Path) -> None:
    """Every queued or running job in the store, so work started on another page stays visible."""
    active = [s for s in jobs.list_jobs(root) if s["state"] in ACTIVE]
    if not active:
        return

    @st.fragment(run_every=SIDEBAR_S)
    def body() -> None:
        running = [s for s in jobs.list_jobs(root) if s["state"] in ACTIVE]
        if len(running) < len(active):
            st.rerun()  # one ended: refresh the page that may show its results
        st.caption("Background jobs")
        for s in running:
            total = int(s.get("total") or 0)
            frac = min(int(s.get("done") or 0) / total, 1.0) if total else 0.0
            st.progress(frac, text=f"{describe(s['spec'])} · {int(frac * 100)}%")

    body()
