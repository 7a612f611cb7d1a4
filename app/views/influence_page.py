"""Influence: compute (background job) or load the estimates; histograms, reliability, IS vs FID, per class."""

import dataclasses

import streamlit as st

from explorer import cache, figures, gallery_filter, jobpanel, state, tables, widgets
from influence.estimate import FLAG_NEVER_TRACED, EstimateOptions
from influence.metrics import METRIC_LABELS, available_metrics

root = state.root()
run_id, cfg = widgets.require_run(root)
st.title("Influence of each training instance")
st.markdown(widgets.SIGN_NOTE)

metrics = available_metrics(cfg.is_2d)
results = cache.results(str(root), run_id, cache.files_stamp(root, run_id, "influence"))

job = jobpanel.latest(root, "estimate", run_id)
if job is not None:
    jobpanel.panel(root, job)

with st.expander("Compute influence", expanded=not results, icon=":material/calculate:"):
    st.caption("One backward pass over the traced steps gives every training instance's influence on each "
               "chosen metric (taken on the validation split). It runs in the background: you can switch pages.")
    chosen = st.multiselect("Metrics", metrics, default=[m for m in metrics if m not in results] or list(metrics),
                            format_func=METRIC_LABELS.get, key=f"est-metrics-{run_id}")
    help_of = {f.name: f.metadata["help"] for f in dataclasses.fields(EstimateOptions)}
    traced_steps = cache.summary(str(root), run_id)["traced_steps"]
    c1, c2, c3 = st.columns(3)
    dtype = c1.selectbox("Precision", ("auto", "float64", "float32"), key="est-dtype", help=help_of["dtype"])
    damping = c2.number_input("Damping", 0.0, 0.99, 0.0, 0.01, key="est-damping", help=help_of["damping"])
    last = c3.number_input(f"Use only the last N of the {traced_steps} traced steps (0 = all)", 0, traced_steps, 0,
                           key="est-last", help=help_of["last_steps"])
    if st.button("Compute in the background", type="primary", disabled=not chosen, icon=":material/play_arrow:"):
        options = EstimateOptions(dtype=dtype, damping=float(damping), last_steps=int(last) or None)
        jobpanel.start(root, {"kind": "estimate", "params": {"run_id": run_id, "metrics": chosen,
                                                             "options": dataclasses.asdict(options)}})
        st.rerun()

if not results:
    st.info("No estimates for this run yet: choose metrics above and press **Compute in the background**.",
            icon=":material/school:")
    st.stop()

log_y = st.toggle("Log-scale counts", value=True, key="hist-log",
                  help="Most instances have influence near 0; a log scale shows the rare, strong ones.")
st.caption("Drag a box over bars to show just those instances in the Inspect and curate gallery.")
for metric, result in results.items():
    st.subheader(f"{METRIC_LABELS[metric]}")
    st.caption(result.meta["sign"][0].upper() + result.meta["sign"][1:] + ".")
    traced = result.flags != FLAG_NEVER_TRACED
    left, right = st.columns([3, 2])
    with left:
        gallery_filter.histogram(run_id, result.scores[traced], metric, "influence", log_y)
        if (~traced).any():
            st.caption(f"{int((~traced).sum())} instances were in no traced step and have no estimate (not shown).")
    with right:
        verdict = result.meta["verdict"]
        show = {"reliable": st.success, "doubtful": st.warning}.get(verdict, st.error)
        show(f"Reliability: {result.meta['verdict_message']}", icon=":material/verified:")
        numbers = tables.influence_summary(result)
        a, b = st.columns(2)
        a.metric("mean", f"{numbers['mean']:.2g}")
        b.metric("std", f"{numbers['std']:.2g}")
        a.metric(f"harmful (of {numbers['n']})", f"{numbers['harmful']}")
        b.metric("most harmful value", f"{numbers['most_harmful']:.2g}")
        st.caption(f"Estimated over {result.meta['traced_steps']} traced steps in "
                   f"{tables.duration(result.meta['seconds'])}.")
        st.plotly_chart(figures.u_norm_figure(result.u_norms), key=f"u-{run_id}-{metric}")
        st.caption("|u| is the metric's gradient carried back through the traced steps. Growing |u| means the "
                   "steps amplify perturbations and early instances' estimates are less trustworthy.")

active = gallery_filter.get(run_id)
if active is not None:
    lo, hi = active["range"]
    st.info(f"Gallery filter: {METRIC_LABELS[active['metric']]} influence between {lo:.3g} and {hi:.3g}.")
    st.page_link(widgets.CURATE_PAGE, label="Open the filtered gallery", icon=":material/arrow_forward:")

frame = cache.influence_frame(str(root), run_id, cache.files_stamp(root, run_id, "influence"))
class_names = cache.context(str(root), run_id).dataset.class_names
st.divider()
if "is" in results and "fid" in results:
    st.subheader("IS influence vs FID influence")
    st.caption("Each dot is a training instance. Bottom-right: harmful for both (removal would raise IS and lower "
               "FID); top-left: helpful for both.")
    st.plotly_chart(figures.influence_scatter(frame, "is", "fid", class_names), key=f"scatter-{run_id}")
if (frame["label"] >= 0).any():
    st.subheader("Influence per class")
    by = st.segmented_control("Metric", list(results), default=next(iter(results)), format_func=METRIC_LABELS.get,
                              key=f"class-metric-{run_id}") or next(iter(results))
    st.plotly_chart(figures.class_box(frame, by, class_names), key=f"class-{run_id}-{by}")
