"""UI pieces shared by the pages: the run picker, guidance when something is missing, sign notes."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from influence.config import RunConfig
from influence.honesty import INFORMATIVE, feature_note, reference_line
from influence.metrics import METRIC_LABELS

from . import cache, state, tables

TRAIN_PAGE = "views/train_page.py"
INFLUENCE_PAGE = "views/influence_page.py"
CURATE_PAGE = "views/curate_page.py"
CLEANSE_PAGE = "views/cleanse_page.py"
VALIDATE_PAGE = "views/validate_page.py"
PLAYGROUND_PAGE = "views/playground_page.py"
SAMPLES_PAGE = "views/samples_page.py"

SIGN_NOTE = ("Influence = predicted change of a metric if the training instance is removed. "
             "**Harmful** = removing it would improve the metric: positive for IS and ALL, "
             "negative for FID and D-loss.")


def run_picker(root: Path) -> None:
    """Sidebar: which run every page works on."""
    runs = state.finished_runs(root)
    if not runs:
        st.caption("No trained run yet.")
        return
    ids = [r["run_id"] for r in runs]
    current = state.current_run_id(root)
    # The widget follows the current run when a page changes it (training finished, table click).
    st.session_state["run_picker"] = current

    def on_change() -> None:
        state.set_current_run(root, st.session_state["run_picker"])

    st.selectbox("Current run", ids, key="run_picker", on_change=on_change,
                 help="Every page works on this run. Runs are cached in the store folder.")
    summary = next(r["summary"] for r in runs if r["run_id"] == current)
    test = " · ".join(f"{METRIC_LABELS[m]} {v:.3g}" for m, v in summary.get("test", {}).items())
    n_train = summary.get("n_train")
    st.caption(f"{tables.plural(n_train, 'training instance') if n_train is not None else '? training instances'}"
               f" · test {test}")
    cfg = RunConfig.from_dict(cache.config(str(root), current))
    if feature_note(cfg):
        st.caption(feature_note(cfg))
    st.caption(f"Removal set: {tables.plural(len(state.removal(root, current)), 'instance')}")


def require_run(root: Path) -> tuple[str, RunConfig]:
    """The current run and its config, or guidance to train one first (and the page stops)."""
    run_id = state.current_run_id(root)
    if run_id is None:
        st.info("There is no trained run yet. Train one (or point GAN_INFLUENCE_STORE at a store "
                "with runs) on the first page.", icon=":material/school:")
        st.page_link(TRAIN_PAGE, label="Go to Train or load", icon=":material/arrow_forward:")
        st.stop()
    return run_id, RunConfig.from_dict(cache.config(str(root), run_id))


def require_results(root: Path, run_id: str) -> dict:
    """The run's cached influence results, or guidance to compute them (and the page stops)."""
    results = cache.results(str(root), run_id, cache.files_stamp(root, run_id, "influence"))
    if not results:
        st.info("No influence estimates for this run yet. Compute them on the Influence page "
                "(a background job; a few seconds to minutes depending on the run).", icon=":material/school:")
        st.page_link(INFLUENCE_PAGE, label="Go to Influence", icon=":material/arrow_forward:")
        st.stop()
    return results


def metric_meaning(root: Path, run_id: str, cfg: RunConfig) -> None:
    """What the run's metrics can mean: the features, their quality, the real-data reference and, per metric,
    "metric uninformative" with the reason where it applies."""
    report = cache.metric_report(str(root), run_id)
    if feature_note(cfg):
        st.caption(feature_note(cfg) + ".")
    if reference_line(report):
        st.caption("Reference: " + reference_line(report) + ".")
    for metric, v in report["verdicts"].items():
        if v["verdict"] != INFORMATIVE:
            st.warning(f"{METRIC_LABELS[metric]}: metric uninformative - {'; '.join(v['reasons'])}.",
                       icon=":material/report:")
