"""Validate: estimated vs actual (leave-one-out) influence, and the data-cleansing sweep over seeds."""

import dataclasses

import streamlit as st

from explorer import cache, classroom_figures, figures, jobpanel, state, sweepform, tables, trust_view, widgets
from influence.baselines import METHOD_LABELS, methods_for
from influence.errors import ConfigError
from influence.estimator import EstimateOptions
from influence.metrics import METRIC_LABELS, available_metrics
from influence.validation import summarize_sweep
from influence.validation.intervals import MIN_PAIRS

# Why the chart of accuracy against traced epochs is missing, and how to get it.
TRACE_EPOCHS_HINT = {
    False: ("**Accuracy against traced epochs** (the paper's Figure: τ falls as the estimate walks back more "
            "epochs) needs a run traced over more than one epoch; this run traces {k}. Train one with "
            "`train.trace_epochs` = 2 or more (Train page, hyperparameters), then validate it at two or more K."),
    True: ("**Accuracy against traced epochs**: this run traces {k} epochs. Validate the same instances at two or "
           "more K (the slider above) to draw the chart."),
}

root = state.root()
run_id, cfg = widgets.require_run(root)
st.title("How accurate is the estimate?")
st.markdown("For *n* training instances, replay the traced steps without each one (a *leave-one-out* retraining) "
            "and measure how the validation metric actually changes. Then compare with the estimated influence. "
            "This is the paper's estimation-accuracy experiment, and a good one to run in class.")

summary = cache.summary(str(root), run_id)
metrics = available_metrics(cfg.is_2d)
results = cache.results(str(root), run_id, cache.files_stamp(root, run_id, "influence"))
stored = cache.validations(str(root), run_id, cache.files_stamp(root, run_id, "validate"))

job = jobpanel.latest(root, "validate", run_id)
if job is not None:
    jobpanel.panel(root, job)

with st.container(border=True):
    row = st.container(horizontal=True, gap="medium")  # fixed widths that wrap: no label cut in a narrow window
    first = next(m for m in cache.METRIC_ORDER if m in metrics)
    chosen = row.multiselect("Metrics", metrics, default=[first], format_func=METRIC_LABELS.get,
                             key=f"val-metrics-{run_id}", width=240)
    n = row.number_input("n instances", MIN_PAIRS, summary["n_train"], min(50, summary["n_train"]), key="val-n",
                         width=120, help="Each instance costs one replay of the traced steps after its first appearance.")
    selection = row.radio("Which instances", ("first", "random"), horizontal=True, key="val-selection",
                          format_func={"first": "lowest ids", "random": "random"}.get)
    seed = row.number_input("Seed", 0, None, 0, key="val-seed", help="for random selection", width=90)
    traced_epochs = cfg.train.trace_epochs if cfg.train.trace_steps is None else 1
    k = traced_epochs
    if traced_epochs > 1:
        k = st.slider("Traced epochs to validate over (the last K)", 1, traced_epochs, traced_epochs, key="val-k",
                      help="The paper's accuracy against the number of traced epochs: the estimate and the "
                           "replays cover only the last K epochs. Run it for several K to draw the chart below.")
    seconds = tables.validation_seconds(summary, results, stored, int(n))
    st.warning(f"Takes roughly {tables.duration(seconds, rough=True)} on this machine (estimated from this run's "
               "measured speed; it grows linearly with n, and instances an earlier validation replayed are read "
               "back). It runs in the background: you can switch pages meanwhile.", icon=":material/timer:")
    start = st.button("Start validation", type="primary", icon=":material/play_arrow:", disabled=not chosen)
if start:
    jobpanel.start(root, {"kind": "validate", "params": {
        "run_id": run_id, "metrics": chosen, "n": int(n), "selection": selection, "seed": int(seed),
        "options": dataclasses.asdict(EstimateOptions()), **({"trace_epochs": int(k)} if k < traced_epochs else {})}})
    st.rerun()


def show_validation(stored: list[dict]) -> None:
    labels = {v["key"]: f"{METRIC_LABELS[v['metric']]}, n = {v['n']}"
                        + (f", last {v['trace_epochs']} traced epochs" if v.get("trace_epochs") else "")
                        + f" ({v['key']})" for v in stored}
    key = st.selectbox("Result", list(labels), index=len(labels) - 1, format_func=labels.get, key=f"val-{run_id}")
    v = next(v for v in stored if v["key"] == key)

    left, right = st.columns([3, 2])
    left.plotly_chart(figures.validation_scatter(v["estimated"], v["actual"], v["metric"]), key=f"val-scatter-{key}")
    with right:
        st.metric("Kendall τ", f"{v['kendall_tau']:.3f}")
        st.caption("Do estimate and truth **rank** the instances the same way? +1: identical order; 0: unrelated; "
                   "−1: reversed. Ranking is what curation needs. "
                   + tables.tau_interval_note(v["kendall_tau"], v["n"]))
        st.metric("Pearson r", f"{v['pearson_r']:.3f}")
        st.caption("Do the **values** agree along a straight line? 1: perfectly linear.")
        st.metric("Jaccard, top 10%", f"{v['jaccard_top10']:.3f}")
        st.caption("Of the 10% most extreme instances (5% most negative and 5% most positive), how many do "
                   "estimate and truth share? 1: the same instances; 0: none in common. " + tables.jaccard_note(v["n"]))
        growth = f", growth {v['growth']:.3g}" if v.get("growth") is not None else ""
        st.caption(f"Stability of the estimate over these steps: {v['verdict']}{growth} (the growth of |u|, not "
                   f"the spot check's trust) · leave-one-out took {tables.duration(v['seconds_loo'])}.")


if stored:
    show_validation(stored)
else:
    st.info("No validation for this run yet. Start one above; n = 50 is enough to see the idea.",
            icon=":material/school:")
by_k = classroom_figures.accuracy_by_traced_epochs(stored, traced_epochs)
if by_k:
    st.subheader("Accuracy against the number of traced epochs")
    st.plotly_chart(classroom_figures.trace_epochs_figure(by_k), key=f"val-k-chart-{run_id}")
    st.caption("The estimate linearises every traced step; the more steps it walks back, the more the "
               "linearisation errors add up and the less its ranking agrees with leave-one-out. The paper "
               "(MNIST, FID) reports Kendall τ 0.95, 0.87, 0.73 and 0.44 at 1, 5, 10 and 20 traced epochs "
               "(grey). The growth factor (right axis) says how much the backward pass amplified perturbations.")
else:
    st.caption(TRACE_EPOCHS_HINT[traced_epochs > 1].format(k=traced_epochs))

st.divider()
trust_view.groups_section(root, run_id, metrics, first)

st.divider()
st.subheader("Data cleansing over seeds")
st.markdown("The paper's second experiment: for several seeds, remove the *k* most harmful instances by each "
            "selection method, replay the traced steps without them and measure the **test** metric. A method "
            "that finds truly harmful instances improves the metric; random removal should not. The p-value is "
            "a one-sample t-test of the change over seeds.")
sweep_job = jobpanel.latest(root, "sweep")
if sweep_job is not None:
    jobpanel.panel(root, sweep_job)
with st.expander("Start a sweep over seeds of this run's configuration", icon=":material/play_arrow:"):
    row = st.container(horizontal=True, gap="medium")  # fixed widths that wrap when narrow
    seeds_text = row.text_input("Seeds", "0 1 2 3 4", key="sw-seeds", help="each seed trains its own run (cached)",
                                width=200)
    counts_text = row.text_input("Instances removed", ", ".join(str(summary["n_train"] * k // 10) for k in (1, 3, 5)),
                                 key="sw-counts", help="removal counts, e.g. 10%, 30% and 50% of the training set",
                                 width=240)
    sweep_metric = row.selectbox("Test metric", metrics, index=metrics.index(first), format_func=METRIC_LABELS.get,
                                 key="sw-metric", width=160)
    # the whole width: its five method chips were cut to an ellipsis in a three-quarter column at 1024 px
    sweep_methods = st.multiselect("Selection methods", list(methods_for(cfg.is_2d)),
                                   default=list(methods_for(cfg.is_2d)), format_func=METHOD_LABELS.get, key="sw-methods")
    try:
        spec, problem = sweepform.sweep_spec(cfg, seeds_text, sweep_methods, counts_text, sweep_metric,
                                             summary["n_train"]), None
    except ConfigError as e:
        spec, problem = None, e
    st.caption("Each seed trains a run (cached), estimates influence, then replays the traced steps once per "
               "method and count. It resumes where it stopped." + (" " + sweepform.duration_text(
                   root, spec, summary, results, cache.attempts(str(root), run_id, cache.files_stamp(
                       root, run_id, "cleanse"))) if spec else ""))
    if st.button("Start sweep", type="primary", key="sw-start"):
        if problem is not None:
            st.error(str(problem), icon=":material/error:")
        else:
            jobpanel.start(root, spec)
            st.rerun()
sweeps = cache.sweeps(str(root), cache.sweeps_stamp(root))
if not sweeps:
    st.info("No sweep in this store yet. Start one above, or from the command line, e.g. "
            "`gan-influence sweep --preset quick --seeds 0 1 2 3 4 --counts 1000 3000 5000`.",
            icon=":material/school:")
    st.stop()
names = {w["key"]: (f"{', '.join(w['spec']['presets'])}, seeds {', '.join(map(str, w['spec']['seeds']))}, "
                    f"{METRIC_LABELS[w['spec']['metric']]} ({len(w['per_run'])}/{w['planned']} cleanses)")
         for w in sweeps}
chosen_sweep = st.selectbox("Sweep", list(names), index=len(names) - 1, format_func=names.get, key="val-sweep")
w = next(w for w in sweeps if w["key"] == chosen_sweep)
if w["table"].empty:
    st.info("This sweep has not finished a cleanse yet.")
    st.stop()
metric = w["spec"]["metric"]
if len(w["per_run"]) < w["planned"]:
    st.warning(f"Unfinished: {len(w['per_run'])} of {w['planned']} cleanses; means and p-values cover the seeds "
               "done so far (still running, or interrupted: the same command resumes it).",
               icon=":material/hourglass_top:")
done_seeds = sorted(w["per_run"]["seed"].unique().tolist())
seeds = st.multiselect("Seeds included", done_seeds, default=done_seeds, key=f"sweep-seeds-{chosen_sweep}",
                       help="Leave out a seed to see how much it drives the means (e.g. a run that trained badly).")
if not seeds:
    st.stop()
table = summarize_sweep(w["per_run"][w["per_run"]["seed"].isin(seeds)], metric)
st.plotly_chart(figures.sweep_figure(table, metric), key=f"sweep-{chosen_sweep}")
st.dataframe(tables.sweep_table(table, metric), hide_index=True, height=35 * (len(table) + 1) + 3)
