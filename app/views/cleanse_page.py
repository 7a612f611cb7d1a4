"""Cleanse and compare: retrain without the removal set; test IS/FID before and after, predicted vs actual."""

import numpy as np
import streamlit as st

from explorer import attempt_choice, cache, figures, jobpanel, numbers, state, tables, trust_view, widgets
from influence import store
from influence.cleanse import removal_key
from influence.errors import ConfigError, StoreError
from influence.export import export_cleaned
from influence.honesty import uninformative
from influence.metrics import HIGHER_IS_BETTER, METRIC_LABELS

root = state.root()
run_id, cfg = widgets.require_run(root)
st.title("Cleanse and compare")
st.markdown("Retrain the GAN without the removal set and measure the metrics on the **test split**. By default "
            "the traced epochs are replayed without the removed instances (same start, same batches and z, so any "
            "difference comes from the removal); *from scratch* retrains every epoch with the same seed.")

removal = state.removal(root, run_id)
attempts = cache.attempts(str(root), run_id, cache.files_stamp(root, run_id, "cleanse"))
summary = cache.summary(str(root), run_id)
n_train = summary["n_train"]

job = jobpanel.latest(root, "cleanse", run_id)
if job is not None:
    jobpanel.panel(root, job)

with st.container(border=True):
    if not removal:
        st.info("The removal set is empty. Build it on the Inspect and curate page (or the 2D playground).",
                icon=":material/school:")
        st.page_link(widgets.CURATE_PAGE, label="Go to Inspect and curate", icon=":material/arrow_forward:")
    else:
        st.markdown(f"**Removal set:** {len(removal)} of {n_train} training instances.")
        widgets.removal_prediction(root, run_id, removal)
        scratch = st.toggle("Retrain from scratch (all epochs; slower than replaying the traced ones)", key="scratch")
        mode = "scratch" if scratch else "replay"
        done = removal_key(np.asarray(removal, dtype=np.int64), mode) in {a["key"] for a in attempts}
        if done:
            st.caption("This set was already cleansed in this mode: its result is shown below.")
        else:
            seconds = tables.cleanse_seconds(summary, cache.results(str(root), run_id, cache.files_stamp(
                root, run_id, "influence")), attempts, mode)
            what = (f"all {cfg.train.epochs} epochs again" if scratch else
                    f"a replay of the {summary.get('traced_steps') or summary['steps']} traced steps")
            st.caption(f"Takes roughly {tables.duration(seconds, rough=True)} here ({what}; from this run's measured "
                       "speed). It runs in the background.")
        if st.button("Cleanse in the background", type="primary", icon=":material/play_arrow:",
                     disabled=done or len(removal) >= n_train):
            jobpanel.start(root, {"kind": "cleanse",
                                  "params": {"run_id": run_id, "removal_ids": removal, "mode": mode}})
            st.rerun()

if removal and not cfg.is_2d:
    with st.expander("Export the cleaned data set", icon=":material/drive_file_move:"):
        own = cfg.data.source == "folder"
        st.caption(("Copies your original files, under their paths relative to the data folder, " if own else
                    "Writes one PNG per image in a folder per class, with labels.csv, ") +
                   "for the training set without the removal set, plus manifest.json (what was removed and why) and "
                   "removed.csv (id, path, label, influence). The source is only read, never written.")
        target = st.text_input("New folder to write", key=f"export-to-{run_id}", placeholder="/path/to/cleaned")
        why = st.text_input("Why these were removed (kept in the manifest)", key=f"export-why-{run_id}",
                            value="removal set built on the Inspect and curate page")
        if st.button("Export", disabled=not target.strip(), icon=":material/download:", key=f"export-go-{run_id}"):
            try:
                with st.spinner("Writing the cleaned data set ..."), store.folder_lock(root, target.strip()):
                    manifest = export_cleaned(store.open_run(root, run_id), removal, target.strip(), why,
                                              ctx=cache.context(str(root), run_id))
            except (ConfigError, StoreError) as e:
                st.error(f"Not exported: {e}", icon=":material/error:")
            else:
                st.success(f"Exported {manifest['n_exported']} of {manifest['n_train']} training images to "
                           f"`{target.strip()}` ({manifest['n_removed']} removed; influence result "
                           f"`{manifest['influence_result']}`).", icon=":material/check_circle:")
                st.caption("The manifest records the estimate's trust: " + "; ".join(
                    f"{METRIC_LABELS[m]}: {t['summary']}" for m, t in manifest["trust"].items()) + ".")
                left = manifest.get("not_exported")
                if left:
                    st.caption(f"Not exported besides the removed ones: {len(left['held_out'])} held-out images "
                               f"(validation and test), {len(left['unreadable'])} unreadable files and "
                               f"{len(left['links_not_followed'])} links; manifest.json lists each with the reason.")
                if manifest["uninformative_metrics"]:
                    st.warning("The manifest records these metrics as uninformative for this run: " + ", ".join(
                        METRIC_LABELS[m] for m in manifest["uninformative_metrics"]) + ".", icon=":material/report:")

if not attempts:
    st.info("No cleansing attempt for this run yet.", icon=":material/school:")
    st.stop()

keys = [a["key"] for a in attempts]
by_key = {a["key"]: a for a in attempts}
mode_now = "scratch" if st.session_state.get("scratch") else "replay"
compare_key = f"compare-{run_id}"
if compare_key not in st.session_state:
    st.session_state[compare_key] = keys[-3:]
else:  # an attempt just computed joins the comparison (at most 4 shown)
    kept = [k for k in st.session_state[compare_key] if k in keys]
    appeared = [k for k in attempt_choice.new_keys(st.session_state, run_id, keys) if k not in kept]
    st.session_state[compare_key] = (kept + appeared)[-4:]
# Sets the selectbox's state when the attempt just computed (or the one this mode's set has) must be shown.
attempt_choice.pick(st.session_state, run_id, keys, removal_key(np.asarray(removal, dtype=np.int64), mode_now),
                    mode_now)
key = st.selectbox("Attempt", keys, key=attempt_choice.widget_key(run_id),
                   format_func=lambda k: f"{by_key[k]['mode']}, {by_key[k]['n_removed']} removed ({k})")
attempt = by_key[key]

st.subheader("Test metrics before and after")
shown = [m for m in cache.METRIC_ORDER if m in attempt["after"]]
verdicts = cache.verdicts_now(root, run_id)
meaningless = [m for m in shown if uninformative(verdicts, m)]
if meaningless:
    st.warning(f"Metric uninformative for this run: {', '.join(METRIC_LABELS[m] for m in meaningless)}. Their changes "
               "below are not better or worse, only different: " + "; ".join(
                   f"{METRIC_LABELS[m]}: {verdicts[m]['reasons'][0]}" for m in meaningless) + ".",
               icon=":material/report:")
for col, metric in zip(st.columns(len(shown)), shown, strict=True):
    after = attempt["after"][metric]
    label = METRIC_LABELS[metric]
    change = attempt["change"].get(metric)
    if metric in meaningless:  # no good/bad colour for a number that means nothing here
        color, help_text = "off", "metric uninformative: " + "; ".join(verdicts[metric]["reasons"])
    elif metric == "dloss":  # a baseline for choosing instances, not a quality measure: no good/bad colour
        color, help_text = "off", tables.DLOSS_NOTE
    else:
        color = "normal" if HIGHER_IS_BETTER[metric] else "inverse"
        help_text = f"{'higher' if HIGHER_IS_BETTER[metric] else 'lower'} is better"
    col.metric(f"{label} after cleansing", numbers.value(after),
               delta=numbers.signed(change) if change is not None else None,
               delta_color=color, help=help_text)
    col.caption(f"before: {numbers.value(attempt['before'][metric])}")
    compared = tables.prediction_caption(attempt, metric)
    if compared is not None:
        col.caption(compared)
        if tables.signs_disagree(attempt["predicted_change"][metric], tables.against_prediction(attempt, metric)):
            col.caption(":orange-badge[:material/warning: signs disagree] prediction and result point opposite ways")
st.caption(tables.prediction_note(attempt, summary, cfg.train.epochs,
                                  next(iter(cache.results(str(root), run_id, cache.files_stamp(root, run_id, "influence"))
                                            .values()), None)))

trust_view.against_random_section(root, run_id, attempt, shown)

st.subheader("Samples from the same z")
grids = cache.epoch_grids(root, run_id, cfg.is_2d)
left, right = st.columns(2)
if cfg.is_2d:
    train_xy = cache.context(str(root), run_id).dataset.train.x.numpy()
    before = cache.run_npy(str(root), run_id, grids[-1], cache.mtime_ns(root, run_id, grids[-1])) if grids else None
    rel = f"cleanse/{key}/samples.npy"
    after = cache.run_npy(str(root), run_id, rel, cache.mtime_ns(root, run_id, rel))
    st.plotly_chart(figures.points_figure(train_xy, generated=before, cleansed=after, height=480), key="cleanse-2d")
else:
    if grids:
        left.image(cache.run_png(str(root), run_id, grids[-1], cache.mtime_ns(root, run_id, grids[-1])),
                   caption="original run (last epoch)")
    rel = f"cleanse/{key}/grid.png"
    png = cache.run_png(str(root), run_id, rel, cache.mtime_ns(root, run_id, rel))
    if png:
        right.image(png, caption=f"after removing {attempt['n_removed']} instances ({attempt['mode']})")
    if grids and png:
        diff = cache.grid_difference(str(root), run_id, grids[-1], rel, cache.mtime_ns(root, run_id, rel))
        st.plotly_chart(figures.difference_heatmap(diff), key=f"diff-{key}", theme=None)
        st.caption(f"Where the samples changed: |after − before| per pixel for the same z (0 = unchanged, "
                   f"1 = black ↔ white); mean {numbers.sci(float(diff.mean()))}, largest "
                   f"{numbers.sci(float(diff.max()))}. White = unchanged, darker = changed more; the scale ends at "
                   "the largest difference, so small changes show.")

st.subheader("Compare attempts side by side")
picked = st.multiselect("Attempts", keys, key=compare_key, max_selections=4,
                        format_func=lambda k: f"{by_key[k]['mode']}, {by_key[k]['n_removed']} removed ({k})")
if picked:
    compared = tables.compare_table([by_key[k] for k in picked])
    st.dataframe(compared, hide_index=True, width="stretch", height=35 * (len(compared) + 1) + 3,  # every row
                 column_config={k: st.column_config.TextColumn(k) for k in picked})
    for col, k in zip(st.columns(len(picked)), picked, strict=True):
        col.markdown(f"**{by_key[k]['mode']}, {by_key[k]['n_removed']} removed**")
        if not cfg.is_2d:
            rel = f"cleanse/{k}/grid.png"
            png = cache.run_png(str(root), run_id, rel, cache.mtime_ns(root, run_id, rel))
            if png:
                col.image(png, caption=k)

st.subheader("All cleansing attempts of this run")
st.caption("One row per attempt and metric. Predicted = sum of the removed instances' influences (traced steps "
           "only, validation split); actual = the change the attempt measured on the validation split (the "
           "estimate's; empty for attempts made before it was measured) and on the test split; 'signs agree' "
           "compares the prediction with the validation split's change where there is one, else the test split's.")
table = tables.attempts_table(attempts)
st.dataframe(table, hide_index=True, width="stretch", column_config={
    "test before": st.column_config.NumberColumn(format=numbers.VALUE_FORMAT),
    "test after": st.column_config.NumberColumn(format=numbers.VALUE_FORMAT),
    "actual, validation": st.column_config.NumberColumn(format=numbers.SCI_FORMAT),
    "actual, test": st.column_config.NumberColumn(format=numbers.SCI_FORMAT),
    "predicted": st.column_config.NumberColumn(format=numbers.SCI_FORMAT),
    "seconds": st.column_config.NumberColumn(format="%.0f")})
