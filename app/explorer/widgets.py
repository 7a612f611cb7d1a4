"""UI pieces shared by the pages: the run picker, guidance when something is missing, sign notes."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

import pandas as pd

from influence import store
from influence.config import RunConfig
from influence.data import SOURCE_RECORD
from influence.data.locations import ImagesMissing, images_found
from influence.errors import InfluenceError
from influence.honesty import INFORMATIVE, feature_note, reference_line, uninformative
from influence.metrics import METRIC_LABELS
from influence.relocation import relocate

from . import cache, numbers, state, tables

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


def exposure_problem(address: str | None, set_by_user: bool) -> str | None:
    """One line on why the app must not serve: it would listen beyond this machine although nobody asked for it
    (its config, next to app/main.py and read by Streamlit 1.46+ from any working folder, was not read). None
    when it listens on loopback, or on an address the user gave (--server.address, STREAMLIT_SERVER_ADDRESS, a
    config file)."""
    if address is not None and (address == "localhost" or address == "::1" or address.startswith("127.")):
        return None
    if set_by_user:
        return None
    return ("Refusing to serve: this app would listen on every network interface because its config (127.0.0.1 "
            "only) was not read. Start it with scripts/app.sh, or add --server.address 127.0.0.1 (or 0.0.0.0 to "
            "share it on purpose).")


def run_picker(root: Path) -> None:
    """Sidebar: which run every page works on."""
    runs = state.finished_runs(root)
    foreign = state.foreign_folders(root)
    if foreign:
        st.caption(f"Skipped {tables.plural(len(foreign), 'folder')} in the store that "
                   f"{'is not a run' if len(foreign) == 1 else 'are not runs'} (the name is not a run id, e.g. a "
                   "copied run folder): " + ", ".join(f"`{f}`" for f in foreign[:5]) + (" ..." if len(foreign) > 5 else ""))
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
    verdicts = cache.verdicts_now(root, current)
    test = " · ".join(f"{METRIC_LABELS[m]} {numbers.value(v)}" + (" (uninformative)" if uninformative(verdicts, m) else "")
                      for m, v in summary.get("test", {}).items())
    n_train = summary.get("n_train")
    st.caption(f"{tables.plural(n_train, 'training instance') if n_train is not None else '? training instances'}"
               f" · test {test}")
    bad = [METRIC_LABELS[m] for m in verdicts if uninformative(verdicts, m)]
    if bad:
        st.caption(f":orange-badge[:material/report: metric uninformative] {', '.join(bad)}: these numbers, and "
                   "influences on them, carry no meaning for this run (reasons on Train or load)")
    cfg = RunConfig.from_dict(cache.config(str(root), current))
    if feature_note(cfg):
        st.caption(feature_note(cfg))
    st.caption(f"Removal set: {tables.plural(len(state.removal(root, current)), 'instance')}")


def source_notes(root: Path, run_id: str) -> None:
    """Own images: what the run read, and every file it did not (count, the paths on demand)."""
    record = cache.source_record(str(root), run_id, cache.mtime_ns(root, run_id, SOURCE_RECORD))
    if not record:
        return
    sizes = record["split_sizes"]
    st.caption(f"Your images: {record['n_images']} read from {record['n_files']} files; {sizes['train']} train, "
               f"{sizes['valid']} validation and {sizes['test']} test images (fingerprint "
               f"`{record['fingerprint'][:12]}`: the run refuses to go on if the files change).")
    for key, what in (("unreadable", "unreadable files skipped"), ("links_not_followed", "links not followed"),
                      ("renamed", "zip members renamed to unique paths")):
        if record.get(key):
            with st.expander(f"{len(record[key])} {what}", icon=":material/warning:"):
                st.dataframe(pd.DataFrame(record[key]), hide_index=True)


def images_missing(root: Path, error: ImagesMissing) -> None:
    """The run's images are not where it recorded them: the message, and a form for their new place (accepted
    only when the files there are the ones the run was trained on)."""
    st.subheader("Where are this run's images?", anchor=False)
    st.error(str(error), icon=":material/folder_off:")
    if error.fingerprint is None:
        return
    with st.form("relocate-images"):
        where = st.text_input("Where are the images now? A folder or .zip on this machine; the files must be the "
                              "ones the run was trained on (their fingerprint is checked)", key="relocate-path")
        if not st.form_submit_button("Point the runs there", icon=":material/drive_file_move:"):
            return
    try:
        moved = relocate(root, where)
    except InfluenceError as e:
        st.error(str(e), icon=":material/error:")
        return
    st.session_state["relocated-flash"] = (f"The images in `{moved.root}` are the training images of "
                                           f"{tables.plural(len(moved.runs), 'run')} of this store (the same "
                                           "fingerprint); they are read from there from now on.")
    st.rerun()


def relocated_flash() -> None:
    if "relocated-flash" in st.session_state:
        st.success(st.session_state.pop("relocated-flash"), icon=":material/check_circle:")


def require_run(root: Path) -> tuple[str, RunConfig]:
    """The current run and its config, or guidance to train one first (and the page stops); ImagesMissing (the
    app shows the form for their new place) when its own images are gone, before the page starts a job that
    needs them."""
    run_id = state.current_run_id(root)
    if run_id is None:
        st.info("There is no trained run yet. Train one (or point GAN_INFLUENCE_STORE at a store "
                "with runs) on the first page.", icon=":material/school:")
        st.page_link(TRAIN_PAGE, label="Go to Train or load", icon=":material/arrow_forward:")
        st.stop()
    cfg = RunConfig.from_dict(cache.config(str(root), run_id))
    if not images_found(cfg.data, store.cache_dir()):
        raise ImagesMissing(cfg.data.root, cfg.data.fingerprint)
    return run_id, cfg


def require_results(root: Path, run_id: str) -> dict:
    """The run's cached influence results, or guidance to compute them (and the page stops)."""
    results = cache.results(str(root), run_id, cache.files_stamp(root, run_id, "influence"))
    if not results:
        st.info("No influence estimates for this run yet. Compute them on the Influence page "
                "(a background job; a few seconds to minutes depending on the run).", icon=":material/school:")
        st.page_link(INFLUENCE_PAGE, label="Go to Influence", icon=":material/arrow_forward:")
        st.stop()
    return results


def removal_prediction(root: Path, run_id: str, removal: list[int]) -> None:
    """What removing the set is predicted to do per metric, beside the spot check's level for groups."""
    stamp = cache.files_stamp(root, run_id, "influence")
    results = cache.results(str(root), run_id, stamp)
    if not removal or not results:
        return
    in_use = cache.result_names(str(root), run_id, stamp)[1]
    check = cache.spot_check(str(root), run_id, in_use, stamp)
    st.caption("Predicted if removed (a replay of the traced steps, validation split): "
               + "; ".join(tables.set_prediction(results, removal, check)) + ".")


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
