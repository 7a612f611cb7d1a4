"""Cleanse and compare: retrain without the removal set; test IS/FID before and after, predicted vs actual."""

import numpy as np
import streamlit as st

from explorer import cache, figures, jobpanel, state, tables, widgets
from influence import store
from influence.cleanse import removal_key
from influence.errors import ConfigError
from influence.export import export_cleaned
from influence.metrics import HIGHER_IS_BETTER, METRIC_LABELS

root = state.root()
run_id, cfg = widgets.require_run(root)
st.title("Cleanse and compare")
st.markdown("Retrain the GAN without the removal set and measure the metrics on the **test split**. By default "
            "the traced epochs are replayed without the removed instances (same start, same batches and z, so any "
            "difference comes from the removal); *from scratch* retrains every epoch with the same seed.")

removal = state.removal(root, run_id)
attempts = cache.attempts(str(root), run_id, cache.files_stamp(root, run_id, "cleanse"))
n_train = cache.summary(str(root), run_id)["n_train"]

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
        scratch = st.toggle("Retrain from scratch (all epochs; slower than replaying the traced ones)", key="scratch")
        mode = "scratch" if scratch else "replay"
        done = removal_key(np.asarray(removal, dtype=np.int64), mode) in {a["key"] for a in attempts}
        if done:
            st.caption("This set was already cleansed in this mode: its result is shown below.")
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
                with st.spinner("Writing the cleaned data set ..."):
                    manifest = export_cleaned(store.open_run(root, run_id), removal, target.strip(), why,
                                              ctx=cache.context(str(root), run_id))
            except ConfigError as e:
                st.error(f"Not exported: {e}", icon=":material/error:")
            else:
                st.success(f"Exported {manifest['n_exported']} of {manifest['n_train']} training images to "
                           f"`{target.strip()}` ({manifest['n_removed']} removed; influence result "
                           f"`{manifest['influence_result']}`).", icon=":material/check_circle:")

if not attempts:
    st.info("No cleansing attempt for this run yet.", icon=":material/school:")
    st.stop()

# The attempt for the current set (replay first) if there is one, else the newest.
keys = [a["key"] for a in attempts]
ids = np.asarray(removal, dtype=np.int64)
matching = [removal_key(ids, m) for m in ("replay", "scratch") if removal_key(ids, m) in keys]
default = keys.index(matching[0]) if matching else len(keys) - 1
by_key = {a["key"]: a for a in attempts}
key = st.selectbox("Attempt", keys, index=default, key=f"attempt-{run_id}",
                   format_func=lambda k: f"{by_key[k]['mode']}, {by_key[k]['n_removed']} removed ({k})")
attempt = by_key[key]

st.subheader("Test metrics before and after")
shown = [m for m in cache.METRIC_ORDER if m in attempt["after"]]
for col, metric in zip(st.columns(len(shown)), shown, strict=True):
    after = attempt["after"][metric]
    label = METRIC_LABELS[metric]
    change = attempt["change"].get(metric)
    col.metric(f"{label} after cleansing", f"{after:.4g}", delta=f"{change:+.3g}" if change is not None else None,
               delta_color="normal" if HIGHER_IS_BETTER[metric] else "inverse",
               help=f"{'higher' if HIGHER_IS_BETTER[metric] else 'lower'} is better")
    col.caption(f"before: {attempt['before'][metric]:.4g}")
    predicted = attempt["predicted_change"].get(metric)
    if predicted is not None:
        col.caption(f"predicted change: {predicted:+.3g} · actual: {change:+.3g}")
st.caption("Predicted change = sum of the removed instances' estimated influences. It is predicted on the "
           "validation split, while the actual change is measured on the test split, so expect the sign more "
           "than the size to agree." + (f" Note: {attempt['predicted_scope']} (influence result "
                                        f"`{attempt.get('predicted_from')}`)." if attempt.get("predicted_scope") else ""))

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

st.subheader("All cleansing attempts of this run")
table = tables.attempts_table(attempts)
numbers = [c for c in table.columns if c not in ("attempt", "mode", "removed")]
st.dataframe(table, hide_index=True, column_config={c: st.column_config.NumberColumn(format="%.4g") for c in numbers})
