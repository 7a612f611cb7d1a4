"""How long training a preset takes, and what that figure rests on: this store's own measurements where it
has them, otherwise the measurement below. Start-up (a worker process, the data set, the IS/FID feature
network, which is trained once per data set) is stated apart from training: the first run of a data set
spends a minute or more there."""

from __future__ import annotations

from .tables import duration

# (training seconds, start-up seconds of a first run, where measured). Start-up = from pressing the button
# to the first training step; a later run of the same data set skips the feature network.
MEASURED = {
    "mnist-adam": (295.0, 76.0, "measured in issue 26's walk-through on a laptop CPU: 6 min 11 s from the button "
                                "to the finished run, 1 min 16 s of it start-up"),
}


def startup_seconds(status: dict) -> float | None:
    """Seconds from queueing a finished training job to its first training step, from its status."""
    stages = status.get("stages") or {}
    if "train" not in stages or "started" not in status:
        return None
    return status["started"] - status.get("queued_at", status["started"]) + stages["train"]


def estimate_text(preset: str, runs: list[dict], train_jobs: list[dict]) -> str | None:
    """'Time: training took 4 min 55 s here (run ...); start-up took 1 min 16 s here (...).', from this store
    where it has a run of the preset, else from MEASURED with its basis; None when nothing is known.

    `runs`: store.list_runs rows; `train_jobs`: finished training jobs' statuses with their spec, newest first."""
    mine = [r for r in runs if (r.get("config") or {}).get("preset") == preset
            and (r.get("summary") or {}).get("seconds")]
    startups = [s for s in (startup_seconds(j) for j in train_jobs
                            if j["spec"]["params"]["config"].get("preset") == preset) if s is not None]
    known = MEASURED.get(preset)
    if mine:
        newest = max(mine, key=lambda r: r["modified"])
        training = f"training took {duration(newest['summary']['seconds'])} here (run `{newest['run_id']}`)"
    elif known:
        training = f"training about {duration(known[0])}"
    else:
        return None
    if startups:
        start = (f"start-up took {duration(startups[0])} here (worker, data set; the first run of a data set also "
                 "trains the IS/FID feature network)")
    elif known:
        start = (f"start-up about {duration(known[1])} the first time a data set is used (worker, data set, training "
                 "the IS/FID feature network), seconds after that")
    else:
        start = "plus start-up (the first run of a data set also trains the IS/FID feature network: a minute or more)"
    basis = f" ({known[2]})" if known and not (mine and startups) else ""
    return f"Time: {training}; {start}{basis}. A slower or busier machine takes longer."
