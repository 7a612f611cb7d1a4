"""Trust a user can check: the spot check's verdict on the Influence page, group validation (LDS) and the
cleansing curve on the Validate page. The levels and their thresholds: docs/trust.md."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import streamlit as st

from influence import store
from influence.estimator import EstimateOptions, InfluenceResult
from influence.metrics import METRIC_LABELS, harmful_sign
from influence.specs import estimate_spec
from influence.validation import against_random
from influence.validation.groups import GroupSpec, against_random_phrase, folder_name, same_sets, size_spec
from influence.validation.intervals import MIN_PAIRS, interval_text, rank_interval
from influence.validation.trust import mixed_singles, stored_replays, verdict

from . import cache, figures, jobpanel, tables

CHECK_HELP = ("After the pass, one replay of several removal sets measures the estimate: random groups of 5% of the "
              "traced instances (a small LDS), the 5% most harmful and most helpful, random single images (their "
              "rank agreement) and the images with the largest scores. full: over all traced steps, 16 groups, 16 "
              "random images and the 8 largest; quick: over the last eighth of them, 12 groups, 8 random images and "
              "the 4 largest (blind to the earlier steps); auto: full where the replays "
              "run batched (small nets, GPU), quick otherwise; none: the verdict then says 'not checked'.")
METHOD_HELP = ("exact: ASGD-Influence, the adjoint carried back through every traced step. The two baselines use the "
               "same trace without that recursion, to show what it buys: no propagation pairs the final metric "
               "gradient with each step's instance gradient; TracIn-style uses the metric gradient at each step. "
               "A baseline is never put in use unless you choose it.")
METHOD_LABELS = {"exact": "exact (ASGD-Influence)", "no-propagation": "no propagation (baseline)",
                 "tracin": "TracIn-style (baseline)"}
NARROW_HINT = ("A few replays leave room between levels (the 95% intervals above). More replays narrow them: group "
               "validation and leave-one-out on the Validate page, or a full check (`gan-influence estimate --check "
               "full`).")
GROUP_BOX = {"trustworthy": st.success, "indicative": st.warning, "not supported": st.error}


def check_card(result: InfluenceResult, check: dict | None) -> None:
    """The verdict on one metric's estimate: levels for groups and for single images, what the check measured,
    and the conditions it ran under."""
    v = verdict(result, check)
    if not v["checked"]:
        st.info(f"**Trust: {v['summary']}.** The check at the top of the page measures it.",
                icon=":material/help:")
    else:
        GROUP_BOX[v["groups"]](f"**Trust — {v['summary']}.**", icon=":material/fact_check:")
        st.caption("Measured: " + v["measured"] + ".")
        if len(v["groups_range"]) > 1 or len(v["singles_range"]) > 1:
            st.caption(NARROW_HINT)
    warnings = list((result.meta.get("conditions") or {}).get("warnings") or [])
    warnings += (check or {}).get("conditions", {}).get("warnings") or []
    for w in dict.fromkeys(warnings):
        st.warning(w, icon=":material/warning:")
    if result.meta.get("unmeasured_note"):
        st.caption(result.meta["unmeasured_note"] + ".")


def replays(check: dict | None, metric: str) -> None:
    """What the verdict rests on, lane by lane: each replay's predicted and actual change, below the card at the
    page's width (checks stored before lanes were kept have none)."""
    lanes = stored_replays(check, metric)
    if not lanes:
        return
    with st.expander(f"{METRIC_LABELS[metric]}: the check's {len(lanes)} replays, predicted against actual"):
        mixed = mixed_singles(check["per_metric"][metric])
        st.plotly_chart(figures.check_replays(lanes, metric, mixed), key=f"check-replays-{check['result']}-{metric}")
        st.caption("Each point is one replay of the traced steps without a set of training images. Predicted: the "
                   "sum of their estimates; actual: that replay minus the replay with nothing removed of the same "
                   "pass (training's recorded trajectory, where this machine repeats it bit for bit). On the "
                   "diagonal the estimate was exact; in the right quadrants it had the sign right. A "
                   f"{'positive' if harmful_sign(metric) > 0 else 'negative'} change means removing "
                   f"them improved {METRIC_LABELS[metric]}: they were harmful."
                   + (" A quick check's replays over its last steps are predicted by the scores of those steps alone."
                      if check["level"] == "quick" else "")
                   + (" The most harmful set was replayed by the trace-lr probe while training picked its rate."
                      if metric in check.get("probe_lanes", ()) else ""))
        st.dataframe(tables.check_lanes_table(check, metric), hide_index=True)


def options_of(result: InfluenceResult) -> EstimateOptions:
    """The options that produced a stored result (its name's identity)."""
    known = {f.name for f in dataclasses.fields(EstimateOptions)}
    return EstimateOptions(**{k: v for k, v in result.meta["options"].items() if k in known})


def check_button(root: Path, run_id: str, results: dict[str, InfluenceResult], name: str) -> None:
    """Start the spot check of the result in use (the CLI's estimate job with --check: the same key)."""
    with st.container(border=True):
        _check_controls(root, run_id, results, name)


def _check_controls(root: Path, run_id: str, results: dict[str, InfluenceResult], name: str) -> None:
    st.markdown("**Not checked yet.** A spot check replays the traced steps without a few removal sets and measures "
                "how far this estimate can be acted on, for groups and for single images.")
    level = st.segmented_control("Check", ("auto", "quick", "full"), default="auto", key=f"check-level-{run_id}",
                                 help=CHECK_HELP) or "auto"
    if st.button(f"Check '{name}' by replays ({level})", icon=":material/fact_check:", key=f"check-{run_id}"):
        options = options_of(next(iter(results.values())))
        jobpanel.start(root, estimate_spec(run_id, list(results), options, level))
        st.rerun()


def _duration_note(root: Path, run_id: str, metrics: list[str], m: int, fractions: str, curve: str, seed: int) -> None:
    """How many sets the form's group validation replays and roughly how long that takes here (the sets of a
    stored validation with the same groups are read back)."""
    if not metrics:
        return
    try:
        spec = {"groups": m, "fractions": _fractions(fractions), "seed": seed,
                "curve": _fractions(curve) if curve.strip() else []}
    except ValueError:
        return  # the button says what is wrong with the text
    stored = cache.group_validations(str(root), run_id, cache.files_stamp(root, run_id, "validate"))
    sets = GroupSpec(spec["groups"], tuple(spec["fractions"]), spec["seed"], tuple(spec["curve"]))
    same = [v for v in stored if v["key"] == folder_name(metrics, sets)]
    if same:  # only curve fractions it has not replayed yet
        have = same[-1].get("curve_replayed", same[-1]["spec"]["curve"])
        lanes = len([f for f in spec["curve"] if f not in have]) * (len(metrics) + 1)
    else:  # the random sets may have been replayed for other metrics and scored on these too
        lanes = tables.group_lanes({"spec": spec, "metrics": metrics})
        if same_sets(store.open_run(root, run_id), sets, metrics) is not None:
            lanes -= spec["groups"] * len(spec["fractions"])
    if not lanes:
        st.caption("These sets are already replayed: the result is read back at once.")
        return
    seconds = tables.group_validation_seconds(
        cache.summary(str(root), run_id), cache.results(str(root), run_id, cache.files_stamp(root, run_id, "influence")),
        cache.validations(str(root), run_id, cache.files_stamp(root, run_id, "validate")), stored, lanes)
    st.warning(f"Replays {lanes} removal sets over the traced steps: takes roughly "
               f"{tables.duration(seconds, rough=True)} on this machine (estimated from this run's measured speed). "
               "It runs in the background: you can switch pages meanwhile.", icon=":material/timer:")


def _replay_time(v: dict) -> str:
    """The replays' time: summed over the tasks that ran the lanes (several workers run at once, so this exceeds the
    clock's), and the clock's where the validation kept it (not before 2026-12-07)."""
    work = f"{tables.duration(v['replay_seconds'])} of replay summed over its tasks"
    return f"{work}, {tables.duration(v['wall_seconds'])} on the clock" if "wall_seconds" in v else work


def groups_section(root: Path, run_id: str, metrics: list[str], first: str) -> None:
    """Validate page: start a group validation and show its LDS, scatter and cleansing curve (`first`: the metric
    chosen at first, as in the leave-one-out form above)."""
    st.subheader("Groups: do summed estimates predict removing a set? (LDS)")
    st.markdown("Curators remove sets, not single images. Draw *M* random removal sets of a fraction *F* of the "
                "traced instances, replay the traced steps without each (as lanes of one replay, each change "
                "measured against its lane 0), and rank-correlate the sum of each set's estimates with the actual "
                "change: the **linear datamodeling score** (LDS; Park et al. 2023). The cleansing curve removes the "
                "top-k by the estimate and k at random; at a curve fraction that is also a group fraction, the "
                "top-k is ranked among the M random sets of its size, with the chance that a random set does as "
                "well (p). Every named result (the exact estimate and the baselines) is scored on the same replays.")
    with st.container(border=True):
        row = st.container(horizontal=True, gap="medium")  # fixed widths that wrap: no label cut when narrow
        chosen = row.multiselect("Metrics", metrics, default=[first], format_func=METRIC_LABELS.get,
                                 key=f"grp-metrics-{run_id}", width=240)
        m = row.number_input("M groups", MIN_PAIRS, 256, 32, key=f"grp-m-{run_id}", width=110,
                             help="random sets per fraction; each is one lane of the replay")
        fractions = row.text_input("Fractions F", "0.01, 0.05, 0.2", key=f"grp-f-{run_id}", width=150,
                                   help="of the traced instances, strictly between 0 and 1")
        curve = row.text_input("Curve fractions", "0.01, 0.05, 0.1", key=f"grp-c-{run_id}", width=150,
                               help="top-k and random-k removals for the cleansing curve (empty: none)")
        seed = row.number_input("Seed", 0, None, 0, key=f"grp-seed-{run_id}", help="draws the random sets", width=90)
        _duration_note(root, run_id, chosen, int(m), fractions, curve, int(seed))
        if st.button("Start group validation", type="primary", icon=":material/play_arrow:", disabled=not chosen,
                     key=f"grp-start-{run_id}"):
            try:
                spec = {"groups": int(m), "fractions": _fractions(fractions), "seed": int(seed),
                        "curve": _fractions(curve) if curve.strip() else []}
            except ValueError:
                st.error("Fractions: numbers between 0 and 1 separated by commas, e.g. 0.01, 0.05, 0.2",
                         icon=":material/error:")
            else:
                jobpanel.start(root, {"kind": "validate", "params": {
                    "run_id": run_id, "metrics": chosen, "groups": spec, "lanes": None,
                    "options": dataclasses.asdict(EstimateOptions())}})
                st.rerun()
    stamp = cache.files_stamp(root, run_id, "validate")
    stored = cache.group_validations(str(root), run_id, stamp)
    if not stored:
        st.info("No group validation for this run yet. M = 32 at 1%, 5% and 20% is the measure the field reports.",
                icon=":material/school:")
        return
    labels = {v["key"]: f"{', '.join(METRIC_LABELS[x] for x in v['metrics'])}: M = {v['spec']['groups']}, F = "
                        f"{', '.join(f'{f:g}' for f in v['spec']['fractions'])}, seed {v['spec']['seed']}"
              for v in stored}
    key = st.selectbox("Group validation", list(labels), index=len(labels) - 1, format_func=labels.get,
                       key=f"grp-pick-{run_id}")
    v = next(x for x in stored if x["key"] == key)
    metric = st.segmented_control("Metric", v["metrics"], default=v["metrics"][0], format_func=METRIC_LABELS.get,
                                  key=f"grp-metric-{key}") or v["metrics"][0]
    st.dataframe(lds_table(v, metric), hide_index=True,  # 1.000, not "1": three decimals on every correlation
                 column_config={"method": st.column_config.TextColumn("method", help=LDS_METHOD_HELP),
                                "estimate": st.column_config.TextColumn(
                                    "estimate", help="the named result scored (its name carries its options)"),
                                **{c: st.column_config.NumberColumn(format="%.3f") for c in LDS_COLUMNS}})
    st.caption(f"LDS = Spearman of the summed estimates against the actual changes of M = {v['spec']['groups']} "
               f"random groups per fraction F (validation split, as the estimate targets; test split beside it); its "
               f"95% interval: where the LDS of many more groups may lie, given these. Pearson and slope: validation "
               f"split; slope: actual on predicted (1 = the sums are right in "
               f"size; under 1 they over-predict). Replays: {v['lanes']['mode']} lanes, lane 0 = "
               f"{v['baseline']}; {_replay_time(v)}.")
    for w in (v.get("conditions") or {}).get("warnings") or []:
        st.warning(w, icon=":material/warning:")
    names = list(v["scores"])
    shown = st.selectbox("Estimate in the scatter", names, index=names.index(v["result_in_use"])
                         if v["result_in_use"] in names else 0, format_func=lambda n: f"{method_of(n)} · {n}",
                         key=f"grp-result-{key}")
    left, right = st.columns(2)
    with left:
        points = cache.group_points(str(root), run_id, key, shown, metric, stamp)
        st.plotly_chart(figures.group_scatter(points, metric), key=f"grp-scatter-{key}-{metric}-{shown}")
        st.caption("Each point is one random group: the sum of its instances' estimates against what the replay "
                   "without the group changed, on the validation split the estimate was taken on.")
    with right:
        if v["curve"].get(metric):
            st.plotly_chart(figures.cleansing_curve(v["curve"][metric], metric), key=f"grp-curve-{key}-{metric}")
            st.caption(f"Cleansing curve of the estimate in use when it was run ({v['result_in_use']}).")
            for row in v["curve"][metric]:
                if "against_random" in row:  # the top-k ranked among the random groups of its size
                    phrase = against_random_phrase(row)
                    st.caption(f"{phrase[0].upper()}{phrase[1:]}.")


def against_random_section(root: Path, run_id: str, attempt: dict, shown: list[str]) -> None:
    """Cleanse page: a replayed attempt's change ranked among random sets of its size (its traced instances) that
    a group validation replayed; without such sets, a button that replays 32 of them."""
    if attempt["mode"] != "replay":  # a retraining from scratch is no replay of the random sets' steps
        return
    steps = cache.traced_steps(str(root), run_id)[0]
    size = int((steps[cache.removed_ids(str(root), run_id, attempt["key"])] >= 0).sum())
    if size == 0:
        return
    stamp = cache.files_stamp(root, run_id, "validate")
    lines = []
    for m in shown:
        found = cache.random_groups_of_size(str(root), run_id, size, m, stamp)
        if found is not None:
            ranked = against_random.rank(against_random.cleansed_changes(attempt, m), found[0], m)
            lines.append(f"**{METRIC_LABELS[m]}**: {against_random.phrase(ranked, size, 'removing this set')} "
                         f"(random sets of group validation {found[1]}).")
    if lines:
        st.markdown("  \n".join(lines))
        return
    estimated = list(cache.results(str(root), run_id, cache.files_stamp(root, run_id, "influence")))
    job = jobpanel.latest(root, "validate", run_id)
    if job is not None and job["state"] in jobpanel.ACTIVE:
        jobpanel.panel(root, job)
    elif estimated and st.button(f"Compare with 32 random sets of {size}", icon=":material/casino:",
                                 help="replays 32 random removal sets of this size (a group validation of the "
                                      "estimated metrics; the Validate page shows it too) and ranks this set's "
                                      "change among theirs: does it help more than removing at random?"):
        spec = size_spec(int((steps >= 0).sum()), size)
        jobpanel.start(root, {"kind": "validate", "params": {
            "run_id": run_id, "metrics": estimated, "groups": dataclasses.asdict(spec), "lanes": None,
            "options": dataclasses.asdict(EstimateOptions())}})
        st.rerun()


LDS_COLUMNS = ("LDS", "LDS (test)", "Pearson")
LDS_METHOD_HELP = ("exact: ASGD-Influence; no propagation and TracIn-style: baselines from the same trace without "
                   "the adjoint recursion; frozen Adam state: the 2025 follow-up's approximation")


def lds_table(v: dict, metric: str) -> pd.DataFrame:
    """One row per named result and fraction: LDS with its interval, LDS on test, Pearson and slope on the
    validation split; the result's name last, only where the method alone leaves two rows alike (say a float32
    and a float64 exact estimate; the scatter's selector names them all). At 1024 px the table has about 520 px:
    short headers and method words (the long ones in the column's help), and M (one number per validation, in the
    selector's label) left out, so every column shows without scrolling sideways."""
    rows = []
    for name, per_metric in v["scores"].items():
        for r in per_metric.get(metric, []):
            rows.append({"method": method_of(name), "F": f"{r['fraction']:.0%}",
                         "LDS": round(r["spearman_valid"], 3),
                         "95% interval": interval_text(rank_interval("spearman", r["spearman_valid"], r["groups"])),
                         "LDS (test)": round(r["spearman_test"], 3), "Pearson": round(r["pearson_valid"], 3),
                         "slope": float(f"{r['slope_valid']:.3g}"), "estimate": name})
    table = pd.DataFrame(rows)
    if len(table) and not table.duplicated(["method", "F"]).any():
        table = table.drop(columns="estimate")
    return table


def method_of(name: str) -> str:
    """What produced a named result, in a word or two (its name carries the options: `EstimateOptions.key`)."""
    for tag, words in (("-tracin", "TracIn-style"), ("-noprop", "no propagation"), ("-frozen", "frozen Adam state")):
        if tag in name:
            return words
    return "exact"


def _fractions(text: str) -> list[float]:
    values = [float(x) for x in text.replace(";", ",").split(",") if x.strip()]
    if not values or not all(0 < f < 1 for f in values):
        raise ValueError(text)
    return values

