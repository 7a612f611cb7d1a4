"""2D playground: the paper's toy as a classroom. Curate and cleanse with a lasso; click one point and compare
the estimate with a replay; D-loss against ALL; the learning rate that breaks the estimate; mode collapse."""

import dataclasses

import numpy as np
import streamlit as st

from explorer import cache, classroom_figures, figures, jobpanel, numbers, pull_view, state, tables
from influence import classroom, store
from influence.cleanse import removal_key
from influence.config import preset
from influence.estimator import EstimateOptions
from influence.metrics import METRIC_LABELS
from influence.train import Trace

TOY_PRESETS = {"toy2d": "ReLU and SGD, as the paper's code",
               "toy2d-smooth": "softplus and SGD: one removal stays first order",
               "toy2d-adam": "softplus and Adam",
               classroom.COVERING_PRESET: "ReLU, Adam and an EMA of the generator"}
TOY_LESSONS = ("Which toy for which lesson: **toy2d** for curating, one point, loss vs metric and the learning "
               "rate (the paper's set-up, plain SGD); **toy2d-smooth** when one point's estimate should match its "
               f"replay exactly; **{classroom.COVERING_PRESET}** for mode collapse (its generator covers the data; "
               "toy2d's fills about 30% of it).")
# Measured with bench/accuracy.py --preset toy2d --metric all --n 200 (seeds 0-9, docs/toy2d-vs-paper.md).
SEED_SCATTER = ("How much τ moves by chance alone: with 200 replays, leave-one-out τ on toy2d (ALL, seeds 0-9) "
                "ranges from 0.46 to 0.99 with a mean of 0.82 (the paper: 0.87 over its 10 seeds). The seed decides "
                "which ReLU units sit near their kink, so one run's τ is one draw, and a few replays are a small "
                "sample of that draw.")



def toy_config(name: str, seed: int = 0):
    return classroom.covering_toy(seed) if name == classroom.COVERING_PRESET else preset(name, seed)


root = state.root()
st.title("2D playground")
st.markdown("The paper's toy: points from a correlated 2D normal and a small fully connected GAN. Each training "
            "point has an *influence* on **ALL** (average log-likelihood of real points under a density centred "
            "on the generated ones; higher is better): the predicted change of ALL if the point were removed. "
            "**Red = harmful** (removing it would raise ALL), blue = helpful, grey = about no effect.")

runs_2d = [r["run_id"] for r in state.finished_runs(root) if r["config"]["data"]["source"] == "normal2d"]
current = state.current_run_id(root)
finished_jobs = []  # shown after the lessons: a finished job's box above the tabs pushed them below the fold


def job_box(job: dict | None) -> None:
    if job is None:
        return
    if job["state"] in jobpanel.ACTIVE:
        jobpanel.panel(root, job)
    else:
        finished_jobs.append(job)


def show_finished_jobs() -> None:
    if finished_jobs:
        st.divider()
        st.caption("Finished background jobs of this page")
        for job in finished_jobs:
            jobpanel.panel(root, job)


train_job = jobpanel.latest(root, "train")
if train_job is not None and train_job["spec"]["params"]["config"]["data"]["source"] == "normal2d":
    job_box(train_job)
    jobpanel.adopt_trained_run(root, train_job)

with st.expander("Train a 2D run", expanded=not runs_2d, icon=":material/model_training:"):
    c1, c2, c3, c4 = st.columns(4)
    toy = c1.selectbox("Preset", list(TOY_PRESETS), key="pg-preset",
                       format_func=lambda p: f"{p} ({TOY_PRESETS[p]})")
    seed = c2.number_input("Seed", 0, None, 0, key="pg-seed")
    epochs = c3.number_input("Epochs", 1, 500, toy_config(toy).train.epochs, key="pg-epochs")
    n_points = c4.number_input("Training points", 100, 100_000, 10_000, step=1000, key="pg-n")
    st.caption(TOY_LESSONS)
    if st.button("Train in the background", type="primary", icon=":material/play_arrow:"):
        base = toy_config(toy, int(seed))
        cfg = dataclasses.replace(base, data=dataclasses.replace(base.data, n_train=int(n_points)),
                                  train=dataclasses.replace(base.train, epochs=int(epochs)))
        jobpanel.start(root, {"kind": "train", "params": {"config": cfg.to_dict()}})
        st.rerun()

if not runs_2d:
    st.info("No 2D run yet: train one above (a few minutes on a laptop).", icon=":material/school:")
    show_finished_jobs()
    st.stop()
if current not in runs_2d:
    st.info("The current run is not a 2D run. Switch to one of these:")
    pick = st.selectbox("2D run", runs_2d, key="pg-run")
    st.button("Use this run", on_click=state.set_current_run, args=(root, pick), type="primary")
    show_finished_jobs()
    st.stop()

run_id = current
results = cache.results(str(root), run_id, cache.files_stamp(root, run_id, "influence"))
est_job = jobpanel.latest(root, "estimate", run_id)
estimating = est_job is not None and est_job["state"] in jobpanel.ACTIVE
job_box(est_job)
missing = [m for m in classroom.LESSON_METRICS if m not in results]
if missing and not estimating:  # while an estimate runs, its progress box above is the only offer
    names = " and ".join(METRIC_LABELS[m] for m in missing)
    st.info(f"No influence on {names} for this run yet.", icon=":material/school:")
    if st.button(f"Compute influence on {names}", type="primary", icon=":material/calculate:"):
        jobpanel.start(root, {"kind": "estimate", "params": {"run_id": run_id, "metrics": missing,
                                                             "options": dataclasses.asdict(EstimateOptions())}})
        st.rerun()

ctx = cache.context(str(root), run_id)
train_xy = ctx.dataset.train.x.numpy()
trace = Trace.load(store.open_run(root, run_id))  # memory-mapped: cheap on every rerun
grids = cache.epoch_grids(root, run_id, is_2d=True)
result = results.get("all")

run_preset = cache.config(str(root), run_id).get("preset", "")
st.caption(f"Every lesson below uses the current run, `{run_id}` (preset {run_preset}: "
           f"{TOY_PRESETS.get(run_preset, 'a custom 2D configuration')}). Switch runs in the sidebar.")
curate_tab, point_tab, loss_tab, lr_tab, collapse_tab, pull_tab = st.tabs(
    ["Cleanse", "One point", "Loss ≠ metric", "When it breaks", "Mode collapse", "Pull a point"])  # fit at 1024 px

# ---------------------------------------------------------------- curate and cleanse
with curate_tab:
    removal = state.removal(root, run_id)
    removed = np.zeros(len(train_xy), dtype=bool)
    removed[removal] = True
    generated = cache.run_npy(str(root), run_id, grids[-1], cache.mtime_ns(root, run_id, grids[-1])) if grids else None
    attempts = {a["key"]: a for a in cache.attempts(str(root), run_id, cache.files_stamp(root, run_id, "cleanse"))}
    attempt = attempts.get(removal_key(np.asarray(removal, dtype=np.int64), "replay")) if removal else None
    cleansed = None
    if attempt is not None:
        rel = f"cleanse/{attempt['key']}/samples.npy"
        cleansed = cache.run_npy(str(root), run_id, rel, cache.mtime_ns(root, run_id, rel))
    shown = min(150, len(generated)) if generated is not None else 0
    before_pts = generated[:shown] if cleansed is not None else generated
    after_pts = cleansed[:shown] if cleansed is not None else None
    factor = classroom.magnification(after_pts - before_pts, classroom.ARROW_LENGTH) if after_pts is not None else 1.0

    def on_select() -> None:
        st.session_state["pg-selected"] = figures.selected_point_indices(st.session_state.get(f"pg-chart-{run_id}"))

    fig = classroom_figures.curate_figure(train_xy, result.scores if result else None, "all", before_pts, after_pts,
                                          factor, removed)
    st.markdown("**Draw a lasso around training points** on the chart (or switch to box select in its toolbar) "
                "to select them; add them to the removal set on the right, then cleanse without it and watch the "
                "generated points move.")
    cl_job = jobpanel.latest(root, "cleanse", run_id)
    if cl_job is not None:  # at full width: in the side column at 1024 px its words broke a letter a line
        jobpanel.panel(root, cl_job)
    chart, side = st.columns([3, 1])
    chart.plotly_chart(fig, key=f"pg-chart-{run_id}", on_select=on_select, selection_mode=("lasso", "box"))
    with side:
        selected = st.session_state.get("pg-selected", [])
        st.metric("selected points", len(selected))
        st.button("Add them to the removal set", on_click=state.add_to_removal, args=(root, run_id, selected),
                  disabled=not selected, type="primary", wrap=True)
        st.button("Replace the removal set with them", on_click=state.set_removal, args=(root, run_id, selected),
                  disabled=not selected, wrap=True)
        st.metric("removal set", len(removal))
        st.button("Clear the removal set", on_click=state.set_removal, args=(root, run_id, []), disabled=not removal,
                  wrap=True)
        st.divider()
        if attempt is not None:
            change = attempt["change"]["all"]
            st.metric("test ALL after cleansing", numbers.value(attempt["after"]["all"]),
                      delta=numbers.signed(change), help="higher is better")
            predicted = attempt["predicted_change"].get("all")
            if predicted is not None:
                checked = tables.checked_change(attempt, "all")
                st.caption(f"predicted (validation split, traced steps only): {numbers.sci(predicted)}"
                           + (f"; actual there: {numbers.sci(checked)}" if checked is not None else ""))
        elif removal and st.button("Cleanse without the set", icon=":material/cleaning_services:", wrap=True):
            jobpanel.start(root, {"kind": "cleanse",
                                  "params": {"run_id": run_id, "removal_ids": removal, "mode": "replay"}})
            st.rerun()
    legend = ("Green dots: generated points of the run (fixed z)"
              + (f"; orange arrows: where {shown} of them move after cleansing the current removal set, drawn "
                 f"**{factor:,.0f}x** longer than the real shift" if after_pts is not None else "")
              + "; black crosses: points in the removal set.")
    st.caption(f"Colour: influence on {METRIC_LABELS['all']} = predicted change of ALL if the point is removed; "
               f"positive (red) = harmful, grey = about 0. {legend}")

# ---------------------------------------------------------------- one point
with point_tab:
    st.markdown("Click a training point. The app shows its **estimated** influence on ALL and on D-loss (the "
                "discriminator's loss), then replays the traced epoch without it — same batches, same z — and "
                "shows the **actual** change beside it. The arrows show how the generated points move.")

    def on_click() -> None:
        picked = figures.selected_point_indices(st.session_state.get(f"pg-click-{run_id}"))
        if picked:
            st.session_state["pg-point"] = picked[0]

    left, right = st.columns([3, 2])
    chosen = st.session_state.get("pg-point")  # clicked or typed (the field below): marked on the chart
    chosen = int(chosen) if chosen is not None and 0 <= chosen < len(train_xy) else None  # another run's id
    left.plotly_chart(classroom_figures.click_figure(train_xy, result.scores if result else None, "all", chosen),
                      key=f"pg-click-{run_id}", on_select=on_click, selection_mode=("points",))
    with right:
        instance = st.number_input("…or type a point's id", 0, len(train_xy) - 1, value=None, key="pg-point")
        if not results:
            st.info("Compute the influence first (above): the estimate is what this lesson checks.")
        elif instance is None:
            st.info("Click a training point in the chart.", icon=":material/touch_app:")
        else:
            cache_key = (run_id, int(instance))
            lessons = st.session_state.setdefault("pg-one", {})
            if cache_key not in lessons:
                with st.spinner(f"Replaying the traced epoch without #{instance} ..."):
                    lessons[cache_key] = classroom.one_point(ctx, trace, results, int(instance))
            lesson = lessons[cache_key]
            for m in classroom.LESSON_METRICS:
                est = lesson.estimated.get(m)
                st.metric(f"{METRIC_LABELS[m]}: actual change without #{instance}", numbers.sci(lesson.actual[m]),
                          help="replay of the traced steps without the point, minus the run (validation split)")
                st.caption(f"estimated: {numbers.sci(est)}" + (" (not estimated yet)" if est is None else
                           f" · {'same sign' if np.sign(est) == np.sign(lesson.actual[m]) else 'opposite sign'}"))
            st.caption(f"Replay from traced step {lesson.step} and evaluation took {lesson.seconds:.1f} s.")
    if instance is not None and (run_id, int(instance)) in st.session_state.get("pg-one", {}):
        lesson = st.session_state["pg-one"][(run_id, int(instance))]
        st.plotly_chart(classroom_figures.one_point_figure(train_xy, lesson.instance, lesson.before, lesson.after,
                                                           lesson.magnification), key=f"pg-one-fig-{run_id}")
        st.caption(f"Green dots: {len(lesson.before)} generated points of the run. Orange arrows: where the same z "
                   f"land after the replay without #{lesson.instance}, drawn **{lesson.magnification:,.0f}x** longer "
                   "than the real shift (one point of 10,000 moves the generator very little).")

# ---------------------------------------------------------------- loss is not the metric
with loss_tab:
    st.markdown("The discriminator's loss is what training minimises; ALL measures what we want, the generator's "
                "fit to the data. If the loss stood for quality, both colourings would call the same points "
                "harmful. The paper's point: **losses do not always represent model performance.**")
    if "all" in results and "dloss" in results:
        agree = classroom.rank_agreement(results["dloss"], results["all"])
        c1, c2 = st.columns(2)
        f1, f2 = classroom_figures.two_colourings(train_xy, ("dloss", results["dloss"].scores),
                                                  ("all", results["all"].scores))
        c1.plotly_chart(f1, key=f"pg-loss-dloss-{run_id}")
        c2.plotly_chart(f2, key=f"pg-loss-all-{run_id}")
        m1, m2 = st.columns(2)
        m1.metric("Kendall τ between the two harmful-first rankings", f"{agree['kendall_tau']:.2f}")
        m2.metric("Spearman ρ", f"{agree['spearman_rho']:.2f}")
        st.caption(f"Over the {agree['n']:,} points in the traced epoch. Both rankings put the most harmful first "
                   "(D-loss: negative = harmful, removal lowers the loss; ALL: positive = harmful). +1 would mean "
                   "the loss picks exactly the points that hurt the generator; near 0, it picks others.")
    else:
        st.info("Needs influence on both D-loss and ALL (compute them above).", icon=":material/school:")

# ---------------------------------------------------------------- when the estimate breaks
with lr_tab:
    st.markdown("The estimate linearises each training step. Retrain only the **last epoch**, from the stored "
                "state before it, at another learning rate (same batches, same z; the run on disk is not "
                "changed), then run the estimator over it and check it against a few leave-one-out replays. "
                "At a large learning rate the linearisation stops holding: the estimate no longer ranks the "
                "points as the replays do (Kendall τ falls), and where the steps amplify perturbations, |u| "
                "grows as the backward pass walks back (the growth factor and its verdict).")
    st.caption(SEED_SCATTER)
    traced_lr = float(trace.lrs[-1][0])
    choices = sorted({1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0, 10.0, traced_lr})
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    lr = c1.select_slider("Learning rate of the retrained epoch (both players)", choices, value=traced_lr,
                          format_func=lambda v: f"{v:g}" + (" (the run's)" if v == traced_lr else ""), key="pg-lr")
    lr_lessons = st.session_state.setdefault("pg-lr-lessons", {})
    if c2.button("Retrain the epoch and check", type="primary", icon=":material/science:", disabled="all" not in results,
                 wrap=True):
        with st.spinner(f"Retraining the last epoch at lr {lr:g}, estimating, replaying ..."):
            lr_lessons[(run_id, lr)] = classroom.lr_lesson(ctx, trace, lr)
    done = {k[1]: v for k, v in lr_lessons.items() if k[0] == run_id}
    if lr in done:
        lesson = done[lr]
        story = classroom.conclusion(lesson)
        show = {"holds": st.success, "diverged": st.error, "fails": st.error}.get(story.kind, st.warning)
        show(f"**{story.headline}.** {story.text}", icon=":material/science:")
        if not lesson.diverged:
            lo, hi = lesson.random_range
            m1, m2, m3 = st.columns(3)
            m1.metric("growth factor", f"{lesson.growth:.3g}x", help="max |u| over the steps / |u| at the start")
            m2.metric("verdict (growth factor)", lesson.verdict)
            m3.metric(f"Kendall τ, {len(lesson.ids)} replays", f"{lesson.kendall_tau:.2f}",
                      help=f"a random ranking of {len(lesson.ids)} points gives {lo:.2f} to {hi:.2f} in 95% of cases")
            st.caption(f"At lr {lr:g}: {lesson.verdict_message}. A random ranking of {len(lesson.ids)} points gives τ "
                       f"between {lo:.2f} and {hi:.2f} in 95% of cases: that is the noise of τ over this many "
                       f"replays. Computed in {lesson.seconds:.1f} s.")
            g1, g2 = st.columns([3, 2])
            g1.plotly_chart(figures.u_norm_figure(lesson.norms[:, :2], lesson.norms[:, 2]), key=f"pg-lr-u-{run_id}")
            g2.plotly_chart(classroom_figures.check_scatter(lesson.estimated, lesson.actual, "all"),
                            key=f"pg-lr-check-{run_id}")
    if done:
        st.dataframe([{"learning rate": f"{k:g}", "conclusion": classroom.conclusion(v).kind,
                       "growth": "-" if v.diverged else f"{v.growth:.3g}x",
                       "verdict": "diverged" if v.diverged else v.verdict,
                       "Kendall τ": "-" if v.diverged else f"{v.kendall_tau:.2f}",
                       "random ranking (95%)": "-" if v.diverged else
                       f"{v.random_range[0]:.2f} to {v.random_range[1]:.2f}",
                       "seconds": f"{v.seconds:.1f}"} for k, v in sorted(done.items())], hide_index=True)

# ---------------------------------------------------------------- mode collapse
with collapse_tab:
    st.markdown("A GAN can *collapse*: the generator puts its samples on a small part of the data. Compare the "
                "real data's density (blue contours) with the generator's samples (green) after any epoch.")
    covering = classroom.covering_toy(int(cache.config(str(root), run_id).get("seed", 0)))
    if run_preset != covering.preset:
        st.info(f"This lesson is clearest next to a generator that covers the data: **{covering.preset}** "
                f"({TOY_PRESETS[covering.preset]}). {classroom.COVERING_NOTE} The current run is {run_preset}; "
                "compare the two.", icon=":material/school:")
        known = [r["run_id"] for r in state.finished_runs(root) if r["run_id"] == covering.run_id]
        if known:
            st.button(f"Switch to {known[0]}", on_click=state.set_current_run, args=(root, known[0]),
                      key="pg-cover-switch")
        elif st.button(f"Train {covering.preset} (seed {covering.seed}) in the background", key="pg-cover-train",
                       icon=":material/play_arrow:"):
            jobpanel.start(root, {"kind": "train", "params": {"config": covering.to_dict()}})
            st.rerun()
    if grids:
        epochs = [int(g.split("_")[-1].split(".")[0]) for g in grids]
        epoch = st.select_slider("After epoch", epochs, value=epochs[-1], key=f"pg-epoch-{run_id}")
        rel = grids[epochs.index(epoch)]
        samples = cache.run_npy(str(root), run_id, rel, cache.mtime_ns(root, run_id, rel))
        cov = classroom.coverage(train_xy, samples)
        left, right = st.columns([3, 1])
        left.plotly_chart(classroom_figures.density_figure(train_xy, samples), key=f"pg-density-{run_id}")
        right.metric("the generator", cov.verdict)
        right.metric("area of its 1σ ellipse vs the data's", f"{cov.spread:.0%}")
        right.metric("centre offset", f"{cov.offset:.2f} σ")
        right.caption(f"{cov.message}. Collapsed: under 25% of the area or more than 1σ off centre; "
                      "covers: 60-200% and within 0.3σ.")

# ---------------------------------------------------------------- pull on a generated point
with pull_tab:
    pull_view.render(root, run_id, train_xy)

show_finished_jobs()
