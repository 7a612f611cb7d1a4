"""Why did my GAN make this? Influence on chosen generated samples, classes and near-copies.

- `latents`: the chosen z (SEED:N, a file, the run's pool, the validation z) as a job spec;
- `explain`: one stored pass over a sample objective's stacked rows (objectives.samples), the samples x
  instances matrix named by the objective's identity and the options; both directions (a sample's responsible
  images, an image's footprint); parquet/CSV exports;
- `nearcopy`: per sample, the nearest training image in feature space and the share of |influence| its top
  images carry; likely copies flagged;
- `check`: replays without a sample's top-k responsible images and without k random ones;
- `pool`: the run's pool of samples to pick from (realism, clarity, nearest distance, a shared map).
"""

from __future__ import annotations

from .. import store
from ..estimator import EstimateOptions
from ..progress import CancelToken, ProgressFn
from .check import check, replay_removals
from .explain import Explanation, explain, export_paths, find, load, stored

__all__ = ["Explanation", "check", "explain", "export_paths", "find", "load", "replay_removals", "run_job",
           "stored"]


def run_job(run: store.Run, params: dict, progress: ProgressFn | None = None,
            cancel: CancelToken | None = None) -> dict:
    """The `explain` job: the pass (cached), then the check when the spec asks for one; a JSON summary."""
    options = EstimateOptions(**params.get("options", {}))
    explanation = explain(run, params["samples"], params["objective"], options, progress, cancel)
    meta = explanation.meta
    out = {"name": explanation.name, "kind": meta["kind"], "label": meta["label"], "rows": meta["rows"],
           "seconds": meta["seconds"], "verdict": meta["verdict"], "verdict_message": meta["verdict_message"],
           "files": {k: str(v) for k, v in export_paths(run, explanation).items()}}
    if "check" in params:
        c = params["check"]
        result = check(run, explanation, c["samples"], c["k"], c.get("seed", 0), c.get("lanes"), progress, cancel)
        out["check"] = {"key": result["key"], "summary": result["summary"], "seconds": result["seconds"]}
    return out
