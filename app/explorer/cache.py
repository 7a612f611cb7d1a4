"""Engine objects cached across reruns and sessions.

Heavy objects (the data set inside a RunContext, influence arrays) are shared with
`st.cache_resource`; small derived tables and images go through `st.cache_data`.
Functions take the store root as a string and, where files can change while the app
runs, a `stamp` (modification times) so that new results replace the cached ones.
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from influence import baselines, conditions, datamap, estimator, honesty, samples, store
from influence.cleanse import attempts as cleanse_attempts
from influence.config import RunConfig
from influence.context import RunContext, load_run_config
from influence.data import SOURCE_RECORD, Survey, survey
from influence.errors import InfluenceError, StoreError
from influence.samples.pool import Pool, sample_pool as _sample_pool
from influence.train import Trace, checkpoint_history, load_history
from influence.estimator import result_sets
from influence.validation import stored_sweeps, stored_validations
from influence.validation.groups import group_points as stored_group_points, stored_group_validations
from influence.validation.groups import random_groups_of_size as stored_random_groups_of_size
from influence.validation.spotcheck import stored_check

from . import tables

THUMB_PX = 84  # 3x a 28 px digit: large enough to judge it, small enough for a table row
GALLERY_PX = 112  # 4x in the gallery grid
CARD_PX = 160  # a gallery card: the image, and "D-loss +2.15e-4" on one line; cards wrap to the window's width
METRIC_ORDER = ("fid", "is", "dloss", "all")  # the paper's headline metric first
GRID_SCALE = 3


def files_stamp(root: Path, run_id: str, folder: str) -> tuple:
    """Changes whenever a file under <run>/<folder> is added or rewritten."""
    base = Path(root) / run_id / folder
    if not base.exists():
        return ()
    return tuple(sorted((str(p.relative_to(base)), p.stat().st_mtime_ns) for p in base.rglob("*.json")))


def runs_stamp(root: Path) -> tuple:
    """Changes when a run folder appears or a run finishes (its summary.json is written)."""
    root = Path(root)
    if not root.exists():
        return ()
    out = []
    for d in sorted(os.scandir(root), key=lambda e: e.name):
        if d.is_dir() and not d.name.startswith(("_", ".")):
            summary = Path(d.path) / "summary.json"
            out.append((d.name, summary.stat().st_mtime_ns if summary.exists() else 0))
    return tuple(out)


@st.cache_data(show_spinner=False, max_entries=8)
def runs(root: str, stamp: tuple) -> list[dict]:
    """store.list_runs (every page asks for it, several times per rerun)."""
    return store.list_runs(Path(root))


def passes_stamp(root: Path) -> tuple:
    """Changes when any run of the store stores an influence result or a spot check."""
    return tuple(sorted((str(p), p.stat().st_mtime_ns) for pattern in ("*/influence/*/meta.json",
                                                                        "*/influence/_checks/*.json")
                        for p in Path(root).glob(pattern)))


@st.cache_data(show_spinner=False, max_entries=4)
def store_passes(root: str, stamp: tuple) -> list[dict]:
    """The exact passes stored in the store, for a time said before a run's first one (tables.first_pass_text): per
    run, what a traced step's cost depends on (tables.pass_key), its seconds per metric and traced step (the
    slowest result), and its results' spot checks' time against their pass's (the most thorough check of each, as
    the page shows it)."""
    out = []
    for row in runs(root, runs_stamp(Path(root))):
        run = store.open_run(Path(root), row["run_id"])
        sets = result_sets(run)  # the engine's reading: a damaged result is skipped, not an error on this page
        per_step = [r.meta["seconds"] / max(r.meta["traced_steps"], 1) for named in sets.values()
                    for r in named.values() if r.meta.get("method", "exact") == "exact" and r.meta.get("seconds")]
        if not per_step:
            continue
        ratios = []
        for name in sets:
            try:
                check = stored_check(run, name)
            except StoreError:  # a damaged check: no ratio from it
                continue
            if check and check.get("pass_seconds"):
                ratios.append(check["seconds"] / check["pass_seconds"])
        out.append({"run_id": row["run_id"], "key": tables.pass_key(row.get("config") or {}),
                    "per_metric_step": max(per_step), "check_ratios": ratios})
    return out


@st.cache_data(show_spinner=False, max_entries=8)
def seed_spread(root: str, run_id: str, stamp: tuple) -> dict[str, tuple[float, int]]:
    """Spread of the test metrics over seeds of this run's configuration (tables.seed_spread)."""
    return tables.seed_spread(runs(root, stamp), run_id)


@st.cache_resource(show_spinner="Loading the run's data set ...", max_entries=4)
def context(root: str, run_id: str) -> RunContext:
    run = store.open_run(Path(root), run_id)
    return RunContext.create(load_run_config(run), Path(root))


@st.cache_data(show_spinner=False, max_entries=32)
def config(root: str, run_id: str) -> dict:
    return store.open_run(Path(root), run_id).read_json("config.json")


@st.cache_data(show_spinner=False, max_entries=32)
def summary(root: str, run_id: str) -> dict:
    return store.open_run(Path(root), run_id).read_json("summary.json")


@st.cache_data(show_spinner=False, max_entries=32)
def training_conditions(root: str, run_id: str) -> dict | None:
    """Threads, device, dtype and torch version training ran under (None: not recorded, an older run)."""
    return conditions.recorded(store.open_run(Path(root), run_id).read_json("trace/meta.json"))


@st.cache_data(show_spinner=False, max_entries=16)
def history(root: str, run_id: str) -> list[dict]:
    return load_history(store.open_run(Path(root), run_id))


@st.cache_data(show_spinner=False, max_entries=8)
def live_history(root: str, run_id: str, mtime_ns: int) -> list[dict]:
    """Per-epoch history of a run that is still training (re-read when its checkpoint changes)."""
    return checkpoint_history(store.Run(Path(root), run_id))


@st.cache_resource(show_spinner="Reading influence results ...", max_entries=8)
def results(root: str, run_id: str, stamp: tuple) -> dict[str, estimator.InfluenceResult]:
    """The named result in use (estimator.chosen_name), per metric, FID/IS/D-loss/ALL in that order
    (read-only arrays shared by every session)."""
    found = estimator.cached_results(store.open_run(Path(root), run_id))
    return {m: found[m] for m in METRIC_ORDER if m in found}


@st.cache_data(show_spinner=False, max_entries=8)
def result_names(root: str, run_id: str, stamp: tuple) -> tuple[list[tuple[str, list[str]]], str | None]:
    """([(name, its metrics)], the name in use): every named influence result of the run."""
    run = store.open_run(Path(root), run_id)
    sets = estimator.result_sets(run)
    return [(name, [m for m in METRIC_ORDER if m in found]) for name, found in sets.items()], \
        estimator.chosen_name(run, sets)


@st.cache_data(show_spinner="Checking what the metrics can mean on this data ...", max_entries=16)
def metric_report(root: str, run_id: str) -> dict:
    """Feature net quality, real-data reference and per-metric informativeness (honesty.metric_report)."""
    run = store.open_run(Path(root), run_id)
    return honesty.metric_report(run, None if run.exists(honesty.REPORT) else context(root, run_id))


@st.cache_data(show_spinner=False, max_entries=16)
def metric_verdicts(root: str, run_id: str, stamp: int) -> dict[str, dict]:
    """The run's stored per-metric verdicts ({} before its report is computed); stamp: mtime_ns of the report."""
    return honesty.stored_verdicts(store.open_run(Path(root), run_id))


def verdicts_now(root: Path, run_id: str) -> dict[str, dict]:
    return metric_verdicts(str(root), run_id, mtime_ns(root, run_id, honesty.REPORT))


@st.cache_data(ttl=60, max_entries=8, show_spinner="Reading your images (paths, sizes, headers) ...")
def source_survey(path: str) -> Survey | str:
    """What a folder/zip holds (influence.data.survey), or why it cannot be used; kept a minute per path, so
    reruns of the form do not read the files again (and a huge tree such as / fails once, within its bounds)."""
    try:
        return survey(os.path.abspath(os.path.expanduser(path)))
    except InfluenceError as e:
        return str(e)


@st.cache_data(show_spinner=False, max_entries=16)
def source_record(root: str, run_id: str, stamp: int) -> dict | None:
    """Own images: the run's source.json (what was read, skipped, held out), or None."""
    run = store.open_run(Path(root), run_id)
    return run.read_json(SOURCE_RECORD) if run.exists(SOURCE_RECORD) else None


@st.cache_resource(show_spinner="Computing the map of the training set (once per run) ...", max_entries=8)
def map_data(root: str, run_id: str, method: str) -> tuple[np.ndarray, np.ndarray]:
    """(2D coordinates, feature vectors) of every training instance (cached in the run under map/)."""
    run = store.open_run(Path(root), run_id)
    ctx = context(root, run_id)
    coords = datamap.embedding(run, method, ctx)
    return coords, datamap.training_features(run, ctx)


@st.cache_data(show_spinner=False, max_entries=8)
def influence_frame(root: str, run_id: str, stamp: tuple) -> pd.DataFrame:
    """id, label, influence_<m>, harmful_rank_<m>, flag_<m> per training instance."""
    run = store.open_run(Path(root), run_id)
    table = estimator.influence_table(run, context(root, run_id).dataset)
    table.attrs = {}  # the sign sentences are taken from each result's meta instead
    return table


@st.cache_data(show_spinner=False, max_entries=64)
def thumbnails(root: str, run_id: str, ids: tuple[int, ...], px: int = THUMB_PX) -> list[bytes]:
    """PNG bytes of training images, upscaled with nearest neighbour so pixels stay crisp."""
    x = context(root, run_id).dataset.train.x[list(ids)]
    return [_png(_to_uint8(img), px) for img in x]


@st.cache_data(show_spinner=False, max_entries=64)
def thumbnail_uris(root: str, run_id: str, ids: tuple[int, ...], px: int = THUMB_PX) -> list[str]:
    """The same thumbnails as data-URIs, for st.column_config.ImageColumn."""
    return ["data:image/png;base64," + base64.b64encode(b).decode() for b in thumbnails(root, run_id, ids, px)]


def _to_uint8(img) -> np.ndarray:
    arr = ((img.numpy() + 1.0) * 127.5).clip(0, 255).round().astype(np.uint8)  # [-1, 1] -> bytes
    return arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)


def _png(arr: np.ndarray, px: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).resize((px, px), Image.Resampling.NEAREST).save(buf, format="PNG")
    return buf.getvalue()


@st.cache_data(show_spinner=False, max_entries=64)
def run_png(root: str, run_id: str, rel: str, mtime_ns: int, scale: int = GRID_SCALE) -> bytes | None:
    """A PNG stored in the run (sample grids), enlarged; None if missing or unreadable."""
    try:
        data = store.open_run(Path(root), run_id).read_bytes(rel)
    except StoreError:
        return None
    img = Image.open(io.BytesIO(data))
    buf = io.BytesIO()
    img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST).save(buf, format="PNG")
    return buf.getvalue()


@st.cache_data(show_spinner=False, max_entries=32)
def grid_difference(root: str, run_id: str, before_rel: str, after_rel: str, mtime_ns: int) -> np.ndarray:
    """|after - before| per pixel (0..1, channels averaged) of two sample grids drawn from the same z."""
    run = store.open_run(Path(root), run_id)
    a, b = (np.asarray(Image.open(io.BytesIO(run.read_bytes(rel))).convert("L"), dtype=np.float64) / 255.0
            for rel in (before_rel, after_rel))
    return np.abs(b - a)


@st.cache_data(show_spinner=False, max_entries=64)
def run_npy(root: str, run_id: str, rel: str, mtime_ns: int) -> np.ndarray | None:
    """A small array stored in the run (2D sample points); None if missing or unreadable."""
    try:
        return store.open_run(Path(root), run_id).read_npy(rel)
    except StoreError:
        return None


def mtime_ns(root: Path, run_id: str, rel: str) -> int:
    path = Path(root) / run_id / rel
    return path.stat().st_mtime_ns if path.exists() else 0


def epoch_grids(root: Path, run_id: str, is_2d: bool) -> list[str]:
    """Relative paths of the per-epoch sample grids, in epoch order."""
    folder = Path(root) / run_id / "grids"
    pattern = "epoch_*.npy" if is_2d else "epoch_*.png"
    return [f"grids/{p.name}" for p in sorted(folder.glob(pattern))] if folder.exists() else []


@st.cache_data(show_spinner=False, max_entries=8)
def traced_steps(root: str, run_id: str) -> tuple[np.ndarray, int, int]:
    """(first traced step of each training instance, -1 = none; global index of the first traced step;
    steps per epoch) for the detail view."""
    run = store.open_run(Path(root), run_id)
    trace = Trace.load(run)
    summary = run.read_json("summary.json")
    per_epoch = summary["steps"] // RunConfig.from_dict(run.read_json("config.json")).train.epochs
    return trace.step_of_instance(summary["n_train"]), int(trace.first_step), max(per_epoch, 1)


@st.cache_data(show_spinner=False, max_entries=64)
def removed_ids(root: str, run_id: str, attempt_key: str) -> np.ndarray:
    """The training ids a cleansing attempt removed."""
    return store.open_run(Path(root), run_id).read_npy(f"cleanse/{attempt_key}/removed.npy")


@st.cache_data(show_spinner=False, max_entries=8)
def scores_file(root: str, run_id: str, stamp: tuple, fmt: str) -> bytes:
    """Every instance's scores (all metrics, harmful ranks, estimate flags, label, path where known) as the
    engine writes them (influence/table.csv or .parquet), for download."""
    run = store.open_run(Path(root), run_id)
    return run.read_bytes(f"influence/table.{fmt}")


@st.cache_data(show_spinner=False, max_entries=16)
def attempts(root: str, run_id: str, stamp: tuple) -> list[dict]:
    return cleanse_attempts(store.open_run(Path(root), run_id))


@st.cache_data(show_spinner=False, max_entries=16)
def validations(root: str, run_id: str, stamp: tuple) -> list[dict]:
    return stored_validations(store.open_run(Path(root), run_id))


def sweeps_stamp(root: Path) -> tuple:
    """Changes whenever a sweep writes its spec or another row."""
    base = Path(root) / "_sweeps"
    if not base.is_dir():
        return ()
    return tuple(sorted((str(p.relative_to(base)), p.stat().st_mtime_ns) for p in base.glob("*/*.*")))


@st.cache_data(show_spinner=False, max_entries=4)
def sweeps(root: str, stamp: tuple) -> list[dict]:
    return stored_sweeps(Path(root))


@st.cache_data(show_spinner="Ranking the training set ...", max_entries=16)
def ranking(root: str, run_id: str, method: str, seed: int) -> np.ndarray:
    """Training ids, most harmful (or most anomalous) first, by a baseline method."""
    return baselines.ranking(store.open_run(Path(root), run_id), context(root, run_id), method, seed)


@st.cache_resource(show_spinner="Generating the pool of samples to pick from (once per run) ...", max_entries=4)
def sample_pool(root: str, run_id: str) -> Pool:
    """The run's pool of generated samples with realism, clarity, nearest training image and map place."""
    return _sample_pool(store.open_run(Path(root), run_id), context(root, run_id))


@st.cache_resource(show_spinner="Reading the explanation ...", max_entries=16)
def explanation(root: str, run_id: str, name: str, stamp: tuple) -> samples.Explanation | None:
    """A stored explanation (influence on chosen samples) by name."""
    return samples.load(store.open_run(Path(root), run_id), name)


@st.cache_data(show_spinner=False, max_entries=16)
def spot_check(root: str, run_id: str, name: str, stamp: tuple) -> dict | None:
    """The most thorough spot check stored for the named result (stamp: files_stamp of 'influence')."""
    return stored_check(store.open_run(Path(root), run_id), name)


@st.cache_data(show_spinner=False, max_entries=16)
def group_validations(root: str, run_id: str, stamp: tuple) -> list[dict]:
    """Every group validation (LDS) of the run, oldest first (stamp: files_stamp of 'validate')."""
    return stored_group_validations(store.open_run(Path(root), run_id))


@st.cache_data(show_spinner=False, max_entries=32)
def random_groups_of_size(root: str, run_id: str, size: int, metric: str, stamp: tuple
                          ) -> tuple[pd.DataFrame, str] | None:
    """The stored random groups of `size` instances scored on `metric` (`validation.groups.random_groups_of_size`;
    stamp: files_stamp of 'validate')."""
    return stored_random_groups_of_size(store.open_run(Path(root), run_id), size, metric)


@st.cache_data(show_spinner=False, max_entries=32)
def group_points(root: str, run_id: str, key: str, result_name: str, metric: str, stamp: tuple) -> pd.DataFrame:
    """Predicted (the named result's sums) and actual change of every random group of a group validation."""
    run = store.open_run(Path(root), run_id)
    scores = result_sets(run)[result_name][metric].scores
    return stored_group_points(run, key, scores, metric)
