"""How long training a preset takes, and what that figure rests on: this store's own measurements where it
has them, otherwise the measurement below. Start-up (a worker process, the data set, the IS/FID feature
network, which is trained once per data set) is stated apart from training: the first run of a data set
spends a minute or more there."""

from __future__ import annotations

from .tables import duration

# (training seconds, start-up seconds of a first run, where measured). Start-up = from pressing the button
# to the first training step; a later run of the same data set skips the feature network.
MEASURED = {
    "mnist-adam": (46.0, 76.0, "training measured with `gan-influence train --seed 3` at 2 threads on a quiet 2-core "
                               "machine, 2026-12-05; start-up in issue 26's walk-through on a laptop CPU"),
}


def job_seconds(status: dict) -> tuple[float, float] | None:
    """(start-up, training) seconds of a finished training job, as its box on the page splits them: start-up
    from the worker's start to the first training step, training from there to the end."""
    stages = status.get("stages") or {}
    if "train" not in stages or "started" not in status or "updated" not in status:
        return None
    return stages["train"], status["updated"] - status["started"] - stages["train"]


def estimate_text(preset: str, runs: list[dict], train_jobs: list[dict]) -> str | None:
    """'Time: training took 4 min 55 s here; start-up took 1 min 16 s here (...).', from this store's newest
    finished training job of the preset, else its newest run of it (training only), else MEASURED with its
    basis; None when nothing is known.

    `runs`: store.list_runs rows; `train_jobs`: finished training jobs' statuses with their spec, newest first."""
    measured = [m for m in (job_seconds(j) for j in train_jobs
                            if j["spec"]["params"]["config"].get("preset") == preset) if m is not None]
    mine = [r for r in runs if (r.get("config") or {}).get("preset") == preset
            and (r.get("summary") or {}).get("seconds")]
    known = MEASURED.get(preset)
    if measured:
        training = f"training took {duration(measured[0][1])} here"
    elif mine:
        newest = max(mine, key=lambda r: r["modified"])
        training = f"training took {duration(newest['summary']['seconds'])} here (run `{newest['run_id']}`)"
    elif known:
        training = f"training about {duration(known[0], rough=True)}"
    else:
        return None
    if measured:
        start = (f"start-up took {duration(measured[0][0])} here (worker, data set; the first run of a data set "
                 "also trains the IS/FID feature network)")
    elif known:
        start = (f"start-up about {duration(known[1], rough=True)} the first time a data set is used (worker, "
                 "data set, training the IS/FID feature network), seconds after that")
    else:
        start = "plus start-up (the first run of a data set also trains the IS/FID feature network: a minute or more)"
    basis = f" ({known[2]})" if known and not measured else ""
    return f"Time: {training}; {start}{basis}. A slower or busier machine takes longer."
