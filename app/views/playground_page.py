"""2D playground: the paper's toy. Points coloured by influence on ALL; lasso them out; see the generator move."""

import dataclasses

import numpy as np
import streamlit as st

from explorer import cache, figures, jobpanel, state
from influence.cleanse import removal_key
from influence.config import preset
from influence.estimate import EstimateOptions
from influence.metrics import METRIC_LABELS

root = state.root()
st.title("2D playground")
st.markdown("The paper's toy: points from a correlated 2D normal and a small fully connected GAN. Each training "
            "point is coloured by its influence on **ALL** (average log-likelihood of real points under a "
            "density centred on the generated ones; higher is better): **red = harmful**, removing it would "
            "raise ALL. Draw a lasso or box around points to put them into the removal set, cleanse, and watch "
            "the generated points move.")

runs_2d = [r["run_id"] for r in state.finished_runs(root) if r["config"]["data"]["source"] == "normal2d"]
current = state.current_run_id(root)

train_job = jobpanel.latest(root, "train")
if train_job is not None and train_job["spec"]["params"]["config"]["data"]["source"] == "normal2d":
    jobpanel.panel(root, train_job)
    jobpanel.adopt_trained_run(root, train_job)

TOY_PRESETS = {"toy2d": "ReLU, as the paper", "toy2d-smooth": "softplus: leave-one-out matches the estimate"}
with st.expander("Train a 2D run", expanded=not runs_2d, icon=":material/model_training:"):
    c1, c2, c3, c4 = st.columns(4)
    toy = c1.selectbox("Preset", list(TOY_PRESETS), format_func=lambda p: f"{p} ({TOY_PRESETS[p]})", key="pg-preset",
                       help="With ReLU a whole removal can flip units, so the actual change departs from the "
                            "first-order estimate; with softplus the two agree (docs/architecture.md).")
    seed = c2.number_input("Seed", 0, None, 0, key="pg-seed")
    epochs = c3.number_input("Epochs", 1, 500, preset(toy).train.epochs, key="pg-epochs")
    n_points = c4.number_input("Training points", 100, 100_000, 10_000, step=1000, key="pg-n")
    if st.button("Train in the background", type="primary", icon=":material/play_arrow:"):
        base = preset(toy, int(seed))
        cfg = dataclasses.replace(base, data=dataclasses.replace(base.data, n_train=int(n_points)),
                                  train=dataclasses.replace(base.train, epochs=int(epochs)))
        jobpanel.start(root, {"kind": "train", "params": {"config": cfg.to_dict()}})
        st.rerun()

if not runs_2d:
    st.info("No 2D run yet: train one above (a few minutes on a laptop).", icon=":material/school:")
    st.stop()
if current not in runs_2d:
    st.info("The current run is not a 2D run. Switch to one of these:")
    pick = st.selectbox("2D run", runs_2d, key="pg-run")
    st.button("Use this run", on_click=state.set_current_run, args=(root, pick), type="primary")
    st.stop()

run_id = current
results = cache.results(str(root), run_id, cache.files_stamp(root, run_id, "influence"))
est_job = jobpanel.latest(root, "estimate", run_id)
if est_job is not None:
    jobpanel.panel(root, est_job)
if "all" not in results:
    st.info("No influence on ALL for this run yet.", icon=":material/school:")
    if st.button("Compute influence on ALL", type="primary", icon=":material/calculate:"):
        jobpanel.start(root, {"kind": "estimate", "params": {"run_id": run_id, "metrics": ["all"],
                                                             "options": dataclasses.asdict(EstimateOptions())}})
        st.rerun()

dataset = cache.context(str(root), run_id).dataset
train_xy = dataset.train.x.numpy()
removal = state.removal(root, run_id)
removed = np.zeros(len(train_xy), dtype=bool)
removed[removal] = True
grids = cache.epoch_grids(root, run_id, is_2d=True)
generated = cache.run_npy(str(root), run_id, grids[-1], cache.mtime_ns(root, run_id, grids[-1])) if grids else None
attempts = {a["key"]: a for a in cache.attempts(str(root), run_id, cache.files_stamp(root, run_id, "cleanse"))}
attempt = attempts.get(removal_key(np.asarray(removal, dtype=np.int64), "replay")) if removal else None
cleansed = None
if attempt is not None:
    rel = f"cleanse/{attempt['key']}/samples.npy"
    cleansed = cache.run_npy(str(root), run_id, rel, cache.mtime_ns(root, run_id, rel))


def on_select() -> None:
    st.session_state["pg-selected"] = figures.selected_point_indices(st.session_state.get(f"pg-chart-{run_id}"))


result = results.get("all")
fig = figures.points_figure(train_xy, result.scores if result else None, "all" if result else None,
                            generated=generated, cleansed=cleansed, removed=removed)
chart, side = st.columns([3, 1])
chart.plotly_chart(fig, key=f"pg-chart-{run_id}", on_select=on_select, selection_mode=("lasso", "box"))

with side:
    selected = st.session_state.get("pg-selected", [])
    st.metric("selected points", len(selected))
    st.button("Add them to the removal set", on_click=state.add_to_removal, args=(root, run_id, selected),
              disabled=not selected, type="primary")
    st.button("Replace the removal set with them", on_click=state.set_removal, args=(root, run_id, selected),
              disabled=not selected)
    st.metric("removal set", len(removal))
    st.button("Clear the removal set", on_click=state.set_removal, args=(root, run_id, []), disabled=not removal)
    st.divider()
    cl_job = jobpanel.latest(root, "cleanse", run_id)
    if cl_job is not None:
        jobpanel.panel(root, cl_job)
    if attempt is not None:
        change = attempt["change"]["all"]
        st.metric("test ALL after cleansing", f"{attempt['after']['all']:.4g}", delta=f"{change:+.3g}",
                  help="higher is better")
        predicted = attempt["predicted_change"].get("all")
        if predicted is not None:
            st.caption(f"predicted (validation split): {predicted:+.3g}")
    elif removal and st.button("Cleanse without the set", icon=":material/cleaning_services:"):
        jobpanel.start(root, {"kind": "cleanse",
                              "params": {"run_id": run_id, "removal_ids": removal, "mode": "replay"}})
        st.rerun()
st.caption(f"Colour: {METRIC_LABELS['all']} influence = predicted change of ALL if the point is removed; "
           "positive (red) = harmful. Green diamonds: generated before cleansing; orange open diamonds: after "
           "cleansing the current removal set; black crosses: points in the removal set.")
