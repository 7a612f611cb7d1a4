"""Influence: compute (background job) or load the estimates; histograms, reliability, IS vs FID, per class."""

import dataclasses

import streamlit as st

from explorer import cache, figures, gallery_filter, instance_view, jobpanel, state, tables, trust_view, widgets
from influence import store
from influence.errors import InfluenceError
from influence.estimator import FLAG_NEVER_TRACED, EstimateOptions, choose_results, harmful_order, verdict_for
from influence.honesty import INFORMATIVE, if_removed, reference_line
from influence.metrics import METRIC_LABELS, available_metrics
from influence.specs import estimate_spec

U_NOTE = ("u is the metric's gradient, carried back one traced step at a time (right to left); each instance's "
          "estimate uses u at its step. The **growth factor** is the peak of the black line: how much the steps "
          "amplify a perturbation. u_D starts at 0 for IS, FID and ALL (they depend on G alone) and fills up through "
          "G's dependence on D: that is accumulation, not instability, and it stays under the black line. "
          "An explosion shows as the black line climbing into the shaded bands.")

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
    optimizer = cfg.train.optimizer
    state_mode = "exact"
    if optimizer != "sgd":
        state_mode = st.radio(f"{optimizer.title()} state in the backward pass", ("exact", "frozen"), horizontal=True,
                              key="est-optimizer-state", help=help_of["optimizer_state"])
    c4, c5 = st.columns(2)
    method = c4.radio("Method", list(trust_view.METHOD_LABELS), format_func=trust_view.METHOD_LABELS.get,
                      horizontal=True, key="est-method", help=trust_view.METHOD_HELP)
    check = c5.radio("Spot check after the pass", ("auto", "quick", "full", "none"), horizontal=True, key="est-check",
                     help=trust_view.CHECK_HELP)
    if results:  # what the last pass cost here, as a guide to this one
        stamp = cache.files_stamp(root, run_id, "influence")
        _, named = cache.result_names(str(root), run_id, stamp)
        if said := tables.last_pass_text(results, cache.spot_check(str(root), run_id, named, stamp)):
            st.caption(said)
    elif said := tables.first_pass_text(cache.store_passes(str(root), cache.passes_stamp(root)),
                                        cache.config(str(root), run_id), run_id, traced_steps, len(chosen)):
        st.caption(said)
    if st.button("Compute in the background", type="primary", disabled=not chosen, icon=":material/play_arrow:"):
        try:
            options = EstimateOptions(dtype=dtype, damping=float(damping) if method == "exact" else 0.0,
                                      last_steps=int(last) or None, optimizer_state=state_mode, method=method)
            jobpanel.start(root, estimate_spec(run_id, chosen, options, check))
        except InfluenceError as e:
            st.error(f"Not started: {e}", icon=":material/error:")
        else:
            st.rerun()

if not results:
    st.info("No estimates for this run yet: choose metrics above and press **Compute in the background**.",
            icon=":material/school:")
    st.stop()

# Estimates with other options are kept as separate named results; one is in use everywhere.
names, in_use = cache.result_names(str(root), run_id, cache.files_stamp(root, run_id, "influence"))
if len(names) > 1:
    described = {n: f"{n} ({', '.join(METRIC_LABELS[m] for m in ms)})" for n, ms in names}
    order = [n for n, _ in names]
    pick = st.selectbox("Influence result in use: the Inspect page, the table, Cleanse's prediction and exports use it",
                        order, index=order.index(in_use), format_func=described.get, key=f"result-{run_id}",
                        help="Each result is named by the options that produced it (precision, damping, last steps, "
                             "optimizer state). None replaces another.")
    if pick != in_use:
        choose_results(store.open_run(root, run_id), pick, cache.context(str(root), run_id).dataset)
        st.rerun()
else:
    st.caption(f"Influence result in use: `{in_use}` (named by its options; an estimate with other options is kept "
               "beside it, and you can switch here).")
check = cache.spot_check(str(root), run_id, in_use, cache.files_stamp(root, run_id, "influence"))
if check is None:  # the verdict says 'not checked', never a guess
    trust_view.check_button(root, run_id, results, in_use)
report = cache.metric_report(str(root), run_id)
if reference_line(report):
    st.caption("Metric scale: " + reference_line(report) + ".")
summary = cache.summary(str(root), run_id)

log_y = st.toggle("Log-scale counts", value=True, key="hist-log",
                  help="Most instances have influence near 0; a log scale shows the rare, strong ones.")
st.caption("Drag a box over bars to show just those instances in the Inspect and curate gallery.")
for metric, result in results.items():
    st.subheader(f"{METRIC_LABELS[metric]}")
    sentence = if_removed(metric, result.meta["traced_steps"], summary["steps"], cfg.train.epochs)
    st.caption(sentence[0].upper() + sentence[1:] + "; " + result.meta["sign"].split("; ", 1)[-1] + ".")
    traced = result.flags != FLAG_NEVER_TRACED
    left, right = st.columns([3, 2])
    with left:
        gallery_filter.histogram(run_id, result.scores[traced], metric, "influence", log_y)
        if (~traced).any():
            st.caption(f"{int((~traced).sum())} instances were in no traced step and have no estimate (not shown).")
        # under the histogram, not at the foot of the cards: the two columns then end near each other
        st.plotly_chart(figures.u_norm_figure(result.u_norms, getattr(result, "state_norms", None)),
                        key=f"u-{run_id}-{metric}")
        st.caption(U_NOTE)
    with right:
        trust_view.check_card(result, check)
        if result.meta.get("method", "exact") != "exact":  # a baseline's adjoint says nothing about stability
            st.info(f"Stability: {result.meta['verdict_message']}", icon=":material/verified:")
        else:
            verdict, message = verdict_for(result.meta["growth"])  # today's wording, also for older results
            show = {"reliable": st.success, "doubtful": st.warning}.get(verdict, st.error)
            show(f"Stability: {message}", icon=":material/verified:")
        if (summary.get("trace_lr") or {}).get("warning"):  # a user's traced rate far above the probe's pick
            st.warning(f"Traced learning rate: {summary['trace_lr']['warning']}.", icon=":material/speed:")
        meaning = report["verdicts"].get(metric)
        if meaning is not None and meaning["verdict"] != INFORMATIVE:
            st.error(f"Metric uninformative: {'; '.join(meaning['reasons'])}. Influences on it carry no meaning, "
                     "however reliable the estimate.", icon=":material/report:")
        elif meaning is not None:
            st.success("Metric informative" + (": the features describe these images." if metric in ("is", "fid")
                                               else "."), icon=":material/insights:")
        numbers = tables.influence_summary(result)
        a, b = st.columns(2)
        a.metric("mean", tables.sci(numbers["mean"]))
        b.metric("std", tables.sci(numbers["std"]))
        a.metric(f"harmful (of {numbers['n']})", f"{numbers['harmful']}")
        b.metric("most harmful value", tables.sci(numbers["most_harmful"]))
        st.caption(tables.scale_note(metric, numbers, result.meta.get("metric_value_valid"),
                                     cache.seed_spread(str(root), run_id, cache.runs_stamp(root)).get(metric)))
        st.caption(f"Backward pass over {result.meta['traced_steps']} traced steps: "
                   f"{tables.duration(result.meta['seconds'])} of computation for this metric (metrics computed "
                   "together share one pass and split its time; start-up and waiting are not counted)."
                   + (f" The pass is {result.meta['source']}." if result.meta.get("source") else ""))
    trust_view.replays(check, metric)

active = gallery_filter.get(run_id)
if active is not None:
    lo, hi = active["range"]
    st.info(f"Gallery filter: {METRIC_LABELS[active['metric']]} influence between {tables.sci(lo)} and "
            f"{tables.sci(hi)}.")
    st.page_link(widgets.CURATE_PAGE, label="Open the filtered gallery", icon=":material/arrow_forward:")

frame = cache.influence_frame(str(root), run_id, cache.files_stamp(root, run_id, "influence"))
class_names = cache.context(str(root), run_id).dataset.class_names
both = "is" in results and "fid" in results
by_class = bool((frame["label"] >= 0).any())
if both or by_class:  # a divider above sections only: with neither, the download's divider alone
    st.divider()
if both:
    st.subheader("IS influence vs FID influence")
    st.caption("Each dot is a training instance. Bottom-right: harmful for both (removal would raise IS and lower "
               "FID); top-left: helpful for both.")
    st.caption("Drag a box or lasso around dots to send those instances to the gallery or the removal set.")
    event = st.plotly_chart(figures.influence_scatter(frame, "is", "fid", class_names), key=f"scatter-{run_id}",
                            on_select="rerun", selection_mode=("box", "lasso"))
    picked = figures.selected_ids(event)
    if picked:
        c1, c2, c3 = st.columns([2, 2, 2], vertical_alignment="center")
        c1.markdown(f"**{tables.plural(len(picked), 'instance')} selected**")
        if c2.button("Show them in the gallery", icon=":material/grid_view:", key="scatter-to-gallery"):
            gallery_filter.show_ids(run_id, picked, "in the IS-vs-FID scatter of the Influence page")
            st.switch_page(widgets.CURATE_PAGE)
        c3.button("Add them to the removal set", icon=":material/add_box:", key="scatter-to-set",
                  on_click=state.add_to_removal, args=(root, run_id, picked))
if by_class:
    st.subheader("Influence per class")
    by = st.segmented_control("Metric", list(results), default=next(iter(results)), format_func=METRIC_LABELS.get,
                              key=f"class-metric-{run_id}") or next(iter(results))
    st.plotly_chart(figures.class_box(frame, by, class_names), key=f"class-{run_id}-{by}")

st.divider()
st.subheader("Download every instance's scores")
st.caption("One row per training instance: influence, harmful rank (1 = most harmful) and estimate flag per metric, "
           "the label, and where to find the instance: its file path (your own images), its index in MNIST's "
           "training set (source_index), or the point (x1, x2; the 2D toy). Sign convention: " + widgets.SIGN_NOTE)
stamp = cache.files_stamp(root, run_id, "influence")
d1, d2, _ = st.columns([1, 1, 3])
d1.download_button("CSV", cache.scores_file(str(root), run_id, stamp, "csv"), file_name=f"influence-{run_id}.csv",
                   mime="text/csv", on_click="ignore", icon=":material/download:", key="dl-csv")
d2.download_button("Parquet", cache.scores_file(str(root), run_id, stamp, "parquet"),
                   file_name=f"influence-{run_id}.parquet", mime="application/vnd.apache.parquet", on_click="ignore",
                   icon=":material/download:", key="dl-parquet")

st.subheader("One instance in detail")
look = st.number_input("Training id", 0, len(frame) - 1, int(harmful_order(next(iter(results.values())))[0]),
                       key=f"detail-{run_id}", help="Starts at the most harmful instance by the first metric.")
instance_view.render(root, run_id, results, frame, int(look), check)
