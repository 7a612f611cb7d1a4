"""Small tables and summary numbers shown by the pages (formatting, not estimation)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from influence.baselines import METHOD_LABELS
from influence.estimator import FLAG_NEVER_TRACED, InfluenceResult
from influence.honesty import scope_text, uninformative
from influence.metrics import HIGHER_IS_BETTER, METRIC_LABELS
from influence.validation.intervals import interval_text, rank_interval
from influence.validation.loo import JACCARD_ROUGH_K, jaccard_k
from influence.validation.trust import mixed_singles, verdict

from .figures import check_kind, class_label, lane_name
from .numbers import percent, sci, signed
from .numbers import value as metric_text


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def influence_summary(result: InfluenceResult) -> dict:
    """Mean, std, harmful count and the most harmful value over the instances that have an estimate."""
    scores = result.scores[result.flags != FLAG_NEVER_TRACED]
    sign = result.meta["harmful_sign"]
    if scores.size == 0:
        return {"n": 0, "mean": float("nan"), "std": float("nan"), "harmful": 0, "most_harmful": float("nan")}
    return {
        "n": int(scores.size),
        "mean": float(scores.mean()),
        "std": float(scores.std()),
        "harmful": int((scores * sign > 0).sum()),
        "most_harmful": float(scores[np.argmax(scores * sign)]),
    }


def seed_spread(runs: list[dict], run_id: str) -> dict[str, tuple[float, int]]:
    """{metric: (std of the final test value, number of seeds)} over the finished runs that share this
    run's configuration except the seed (at least 2 of them); {} otherwise."""
    def same(cfg: dict) -> dict:
        return {k: v for k, v in cfg.items() if k != "seed"}

    mine = next((r for r in runs if r["run_id"] == run_id), None)
    if mine is None or not mine.get("config"):
        return {}
    values: dict[str, list[float]] = {}
    for r in runs:
        if r.get("summary") and r.get("config") and same(r["config"]) == same(mine["config"]):
            for m, v in (r["summary"].get("test") or {}).items():
                values.setdefault(m, []).append(float(v))
    return {m: (float(np.std(v, ddof=1)), len(v)) for m, v in values.items() if len(v) >= 2}


def scale_note(metric: str, numbers: dict, value: float | None, spread: tuple[float, int] | None) -> str:
    """Why most instances can look harmful, and how large these numbers are."""
    label = METRIC_LABELS[metric]
    if not numbers["n"]:
        return ""
    text = (f"**Scale.** {numbers['harmful']} of {numbers['n']} estimates lie on the harmful side. Each is the change "
            f"from leaving out one of {numbers['n']} instances, in the traced steps only, so the values are tiny "
            f"and share a common shift (mean {sci(numbers['mean'])}) that leaving out almost any instance causes: "
            "the sign of a value near the mean says little; the ranking and the tails say more.")
    if value:
        share = percent(abs(numbers["most_harmful"] / value))
        text += (f" The most harmful value is {share} of {label} "
                 f"({value:.4g} on the validation split).")
    if spread is not None:
        text += f" For comparison, test {label} varies by ±{spread[0]:.3g} (std) over {spread[1]} seeds of this configuration."
    else:
        text += f" Train this configuration with other seeds to see how much test {label} varies by seed alone."
    return text


def score_lines(results: dict[str, InfluenceResult], i: int, verdicts: dict | None = None) -> str:
    """Markdown, one line per metric, for a gallery card; harmful values in red, except for a metric that is
    uninformative for the run (`verdicts`, honesty): grey, and named so in the last line."""
    lines, grey = [], []
    for metric, r in results.items():
        value = r.scores[i]
        text = f"{METRIC_LABELS[metric]} {signed(value)}"
        if uninformative(verdicts or {}, metric):
            lines.append(f":gray[{text}]")
            grey.append(metric)
            continue
        lines.append(f":red[{text}]" if value * r.meta["harmful_sign"] > 0 else text)
    if grey:
        lines.append(":orange[metric uninformative]" if len(grey) == len(results) else
                     f":orange[{', '.join(METRIC_LABELS[m] for m in grey)}: metric uninformative]")
    return "  \n".join(lines)


def runs_table(runs: list[dict]) -> pd.DataFrame:
    """One row per run of store.list_runs: what it is, how it scored, when it was made."""
    rows = []
    for r in runs:
        cfg, summary = r.get("config") or {}, r.get("summary") or {}
        data, model, train = cfg.get("data", {}), cfg.get("model", {}), cfg.get("train", {})
        test = summary.get("test", {})
        state = "damaged" if "problem" in r else ("finished" if summary else "unfinished")
        rows.append({
            "run": r["run_id"], "state": state, "preset": cfg.get("preset", ""),
            "data": data.get("name") or data.get("source", ""), "n_train": summary.get("n_train", data.get("n_train")),
            "model": f"{model.get('arch', '')} w{model.get('width', '')}", "epochs": train.get("epochs"),
            "lr D/G": f"{train.get('lr_d', '')}/{train.get('lr_g', '')}",
            **{f"test {METRIC_LABELS[m]}": test.get(m) for m in ("is", "fid", "all")},
            "date": dt.datetime.fromtimestamp(r["modified"]).strftime("%Y-%m-%d %H:%M"),
        })
    return pd.DataFrame(rows)


def class_counts(ids: list[int], labels: np.ndarray | None, class_names: list[str] | None) -> pd.Series:
    if labels is None or not len(ids):
        return pd.Series(dtype=int)
    values = pd.Series(labels[np.asarray(ids, dtype=np.int64)])
    counts = values.value_counts().sort_index()
    counts.index = [class_label(int(c), class_names) for c in counts.index]
    return counts


DLOSS_NOTE = ("D-loss is the discriminator's loss: a baseline for choosing instances, not a measure of the GAN's "
              "quality (a lower D-loss can come with a worse generator), so its change has no good/bad colour")


def set_prediction(results: dict[str, InfluenceResult], ids: list[int], check: dict | None) -> list[str]:
    """Per metric, what removing `ids` is predicted to do (the sum of their scores: a replay of the traced steps
    without them) and how far such a sum is trusted: the spot check's group level, sets being what it measured."""
    lines = []
    for m, r in results.items():
        change = float(r.scores[np.asarray(ids, dtype=np.int64)].sum()) if len(ids) else 0.0
        way = "improves it" if change * r.meta["harmful_sign"] > 0 else "worsens it" if change else "no change"
        lines.append(f"{METRIC_LABELS[m]} {signed(change)} ({way}); groups: {verdict(r, check)['groups']}")
    return lines


def signs_disagree(predicted: float, actual: float) -> bool:
    """Prediction and result point opposite ways (a zero on either side disagrees with nothing)."""
    return predicted * actual < 0


def checked_change(attempt: dict, metric: str) -> float | None:
    """The attempt's actual change on the validation split the estimate is taken on (its z), where predicted and
    actual are the same quantity; None for attempts stored before it was measured."""
    validation = attempt.get("validation")
    return validation["change"].get(metric) if validation else None


def against_prediction(attempt: dict, metric: str) -> float | None:
    """The actual change a prediction is judged by: the validation split's where measured, else the test split's."""
    checked = checked_change(attempt, metric)
    return checked if checked is not None else attempt["change"].get(metric)


def prediction_caption(attempt: dict, metric: str) -> str | None:
    """Predicted against actual change of one metric, in one line: on the estimate's split first, then the test's."""
    predicted, change = attempt["predicted_change"].get(metric), attempt["change"].get(metric)
    if predicted is None or change is None:
        return None
    checked = checked_change(attempt, metric)
    if checked is None:
        return f"predicted change: {signed(predicted)} · actual: {signed(change)} (test split)"
    return f"predicted change: {signed(predicted)} · actual: {signed(checked)} (validation) · {signed(change)} (test)"


def prediction_note(attempt: dict, summary: dict, epochs: int, result: InfluenceResult | None) -> str:
    """What predicted vs actual can be expected to show for this attempt's mode."""
    traced = result.meta["traced_steps"] if result is not None else summary.get("traced_steps", 0)
    scope = scope_text(traced, summary["steps"], epochs)
    if attempt["mode"] == "scratch":
        return (f"**From scratch vs the prediction.** The prediction covers only the traced steps ({scope}); "
                "retraining from scratch also changes every epoch before them, which the estimate does not cover. "
                "So here neither the size nor the sign needs to agree: to check the estimate, compare a replay of "
                "the same set with its prediction.")
    if attempt.get("validation") is None:  # stored before the validation split was measured
        return ("Predicted change = sum of the removed instances' estimated influences, taken on the validation "
                f"split; the actual change is measured on the test split. A replay changes exactly the steps the "
                f"estimate covers ({scope}). Where the signs disagree, the set is too large for a first-order "
                "estimate (removals interact) or the two splits disagree.")
    return ("Predicted change = sum of the removed instances' estimated influences, taken on the validation split "
            "with its fixed z. The replay measures the actual change there too, where the two are the same "
            "quantity, and on the test split, which shows whether the change carries over to images the estimate "
            f"never saw. A replay changes exactly the steps the estimate covers ({scope}). Where the prediction and "
            "the validation split's change disagree in sign, the set is too large for a first-order estimate "
            "(removals interact); where only the test split's does, the change does not carry over.")


def attempts_table(attempts: list[dict]) -> pd.DataFrame:
    """One row per attempt and metric (narrow enough for the page, however many metrics): the prediction beside
    the actual changes first, the attempt's name (which starts with its mode) last (at 1024 px the page scrolled
    "predicted" out of sight)."""
    rows = []
    for a in attempts:
        for m, before in a["before"].items():
            predicted, judged = a["predicted_change"].get(m), against_prediction(a, m)
            rows.append({"removed": a["n_removed"], "metric": METRIC_LABELS[m], "predicted": predicted,
                         "actual, validation": checked_change(a, m), "actual, test": a["change"].get(m),
                         "signs agree": None if judged is None or predicted is None or not judged * predicted
                         else not signs_disagree(predicted, judged),
                         "test before": before, "test after": a["after"].get(m), "attempt": a["key"],
                         "seconds": a["seconds"]})
    return pd.DataFrame(rows)


# what a change means, in words beside it (D-loss chooses instances; it does not measure quality)
BETTER = {m: f" ({'higher' if up else 'lower'} is better)" for m, up in HIGHER_IS_BETTER.items() if m != "dloss"}


def compare_table(attempts: list[dict]) -> pd.DataFrame:
    """Attempts as columns, per metric: after, predicted change, actual change on the validation split (the
    estimate's) and on the test split (text in the app's formats)."""
    rows = {}
    for a in attempts:
        col = {"mode": a["mode"], "removed": str(a["n_removed"])}
        for m, before in a["before"].items():
            label = METRIC_LABELS[m]
            change, predicted, judged = a["change"].get(m), a["predicted_change"].get(m), against_prediction(a, m)
            checked = checked_change(a, m)
            col[f"{label} after"] = f"{metric_text(a['after'][m])} (before {metric_text(before)})"
            col[f"{label} predicted"] = (signed(predicted) + (" · signs disagree" if judged is not None
                                         and signs_disagree(predicted, judged) else "")) if predicted is not None else "-"
            col[f"{label} actual on validation"] = signed(checked) if checked is not None else "not measured"
            col[f"{label} change on test{BETTER.get(m, '')}"] = signed(change)
        rows[a["key"]] = col
    frame = pd.DataFrame(rows)
    frame.insert(0, "", frame.index)
    return frame


def check_lanes_table(check: dict, metric: str) -> pd.DataFrame:
    """The spot check's replays of one metric, one row a lane: what was removed, over which steps, predicted and
    actual change, and whether they share a sign. Each lane's first replayed step is stored with it; checks made
    before that replayed a quick check's window (the last steps), but each metric's most harmful set over the
    whole trace."""
    whole, window = check["traced_steps"], check["window_steps"]

    def steps(lane: dict, kind: str) -> str:
        if "first_step" in lane:
            return f"all {whole}" if lane["first_step"] == 0 else f"last {whole - lane['first_step']} of {whole}"
        if check["level"] == "full" or window == whole or (kind == "harmful" and check.get("sets_over_whole_trace")):
            return f"all {whole}"
        return f"last {window} of {whole}"

    agreement = check["per_metric"][metric]
    probed = metric in check.get("probe_lanes", ())  # its harmful set replayed by the trace-lr probe in training
    rows = []
    for lane in agreement["lanes"]:
        kind = check_kind(lane["kind"], metric)
        by = " (the probe's replay)" if probed and kind == "harmful" else ""  # the card names the trace-lr probe
        rows.append({"removed": lane_name(kind, mixed_singles(agreement)), "images": lane["size"],
                     "steps replayed": steps(lane, kind) + by,
                     "predicted": sci(lane["predicted"]), "actual": sci(lane["actual"]),
                     "same sign": "yes" if np.sign(lane["predicted"]) == np.sign(lane["actual"]) else "no"})
    return pd.DataFrame(rows)


def jaccard_note(n: int) -> str:
    """What 'top 10%' means at this n (the engine takes max(1, n // 20) from each end)."""
    k = jaccard_k(n)
    text = f"Here: the {k} most negative and {k} most positive of {n} instances."
    if k < JACCARD_ROUGH_K:
        text += (f" With {2 * k} instances in play, one instance more or less swings it a lot: read it from "
                 "n = 100 on (the paper: n = 200).")
    return text


def tau_interval_note(tau: float, n: int) -> str:
    """Where tau over many more replays may lie, given these n (95%; Kendall's tau of a few replays is rough)."""
    text = interval_text(rank_interval("kendall", tau, n))
    return f"Over these {n} replays its 95% interval is {text}; more replays narrow it." if text else ""


def validation_seconds(summary: dict, results: dict[str, InfluenceResult], done: list[dict], n: int) -> float:
    """Rough duration of a leave-one-out validation of n instances.

    From earlier validations of this run when there are some (the slowest measured seconds per instance);
    otherwise n replays of about half the traced steps, a step costing the smaller of training
    time per step (which includes one-off setup) and backward-pass time per traced step (which
    costs more than a forward step): both overestimate, the smaller one less so."""
    measured = [v["seconds_loo"] / max(v["n"], 1) for v in done if v.get("seconds_loo")]
    if measured:
        return n * max(measured)
    traced = summary.get("traced_steps") or summary["steps"]
    return n * (traced / 2 + 1) * _step_seconds(summary, results)


def _step_seconds(summary: dict, results: dict[str, InfluenceResult]) -> float:
    """A replayed step's cost before anything was replayed: the smaller of training time per step (which includes
    one-off setup) and backward-pass time per traced step (which costs more than a forward step)."""
    per_step = [summary["seconds"] / max(summary["steps"], 1)]
    per_step += [r.meta["seconds"] / max(r.meta["traced_steps"], 1) for r in results.values()]
    return min(per_step)


def group_validation_seconds(summary: dict, results: dict[str, InfluenceResult], loo: list[dict],
                             groups: list[dict], lanes: int) -> float:
    """Rough duration of a group validation of `lanes` removal sets, each a replay of about every traced step (its
    sets are spread over the trace). From this run's earlier group validations when there are some (the slowest
    per set), else its leave-one-out replays (each starts at its instance's first step: about half the trace),
    else the cost of a step as `validation_seconds` takes it."""
    per_lane = [v["replay_seconds"] / group_lanes(v) for v in groups if v.get("replay_seconds")]
    per_lane = per_lane or [2 * v["seconds_loo"] / max(v["n"], 1) for v in loo if v.get("seconds_loo")]
    traced = summary.get("traced_steps") or summary["steps"]
    return lanes * (max(per_lane) if per_lane else (traced + 1) * _step_seconds(summary, results))


def cleanse_seconds(summary: dict, results: dict[str, InfluenceResult], attempts: list[dict], mode: str) -> float:
    """Rough duration of a cleanse: this run's earlier cleanses in the same mode when there are some (the
    slowest), else a replay of every traced step at a step's cost as `validation_seconds` takes it, or, from
    scratch, the training's own time."""
    measured = [a["seconds"] for a in attempts if a.get("mode") == mode and a.get("seconds")]
    if measured:
        return max(measured)
    if mode == "scratch":
        return summary["seconds"]
    return ((summary.get("traced_steps") or summary["steps"]) + 1) * _step_seconds(summary, results)


def sweep_seconds(summary: dict, results: dict[str, InfluenceResult], attempts: list[dict], new_runs: int,
                  cleanses: int) -> float:
    """Rough duration of a sweep: each run not yet trained trains and estimates as this one did, and every
    (seed, method, count) is one cleanse by replay (`cleanse_seconds`)."""
    per_run = summary["seconds"] + sum(r.meta.get("seconds") or 0.0 for r in results.values())
    return new_runs * per_run + cleanses * cleanse_seconds(summary, results, attempts, "replay")


def last_pass_text(results: dict[str, InfluenceResult], check: dict | None) -> str | None:
    """What the pass of the result in use took here, and its spot check: a guide to what another will cost (None
    for a result that did not record its time)."""
    seconds = sum(r.meta.get("seconds") or 0.0 for r in results.values())
    if not seconds:
        return None
    names = " and ".join(", ".join(METRIC_LABELS[m] for m in results).rsplit(", ", 1))
    spent = f"; its {check['level']} spot check {duration(check['seconds'])}" if check and check.get("seconds") else ""
    return f"Here the pass in use ({names}) took {duration(seconds)}{spent}."


def pass_key(config: dict) -> tuple:
    """What a backward step's cost depends on (the nets, the batch, the optimizer, the precision), from a run's
    config dict: runs alike in these take about as long a traced step."""
    model, data, train = (config.get(k) or {} for k in ("model", "data", "train"))
    return (model.get("arch"), model.get("width"), model.get("z_dim"), data.get("image_size"), data.get("color"),
            train.get("batch_size"), train.get("optimizer"), train.get("dtype"))


def first_pass_text(passes: list[dict], config: dict, run_id: str, traced_steps: int, n_metrics: int) -> str | None:
    """Before a run's first pass: roughly how long it takes, from the passes of other runs in this store with the
    same nets, batch, optimizer and precision (`cache.store_passes`; the slowest per metric and traced step), and
    what their spot checks cost beside their pass. None where the store has no such run: a time taken from other
    nets would not be a forecast."""
    same = [p for p in passes if p["key"] == pass_key(config) and p["run_id"] != run_id]
    if not same or not n_metrics:
        return None
    seconds = max(p["per_metric_step"] for p in same) * traced_steps * n_metrics
    ratios = [r for p in same for r in p["check_ratios"]]
    check = (f"; their spot checks took {min(ratios):.1f}-{max(ratios):.1f}x their pass" if len(ratios) > 1 else
             f"; its spot check took {ratios[0]:.1f}x its pass" if ratios else "")
    return (f"Takes roughly {duration(seconds, rough=True)} here for {plural(n_metrics, 'metric')} over "
            f"{traced_steps} traced steps (from the passes of {plural(len(same), 'other run')} of these nets, batch "
            f"and precision in this store{check}).")


def group_lanes(spec: dict) -> int:
    """How many sets a group validation replays: M random sets per fraction, and per curve fraction each metric's
    top k and one random k (`spec`: a stored validation's result, or the same keys for one to start)."""
    s = spec["spec"]
    return s["groups"] * len(s["fractions"]) + len(s["curve"]) * (len(spec["metrics"]) + 1)


def explain_seconds(earlier: list[dict], results: dict[str, InfluenceResult], n: int, stacked: bool) -> float | None:
    """Rough duration of explaining n samples (None when nothing was timed yet). Each sample carries its own
    adjoint: where all rows go in one product (`stacked`: dense nets, a GPU) an extra row costs about a twelfth of
    a pass (64 samples measured 6.0x one on toy2d); a conv net on a CPU pays about a pass per sample (51x on tiny).
    The cost of one row comes from this run's earlier explanations when there are some (the slowest), else from
    its influence passes (one metric's share of a pass is one row)."""
    def rows(k: int) -> float:
        return 1 + (k - 1) / 12 if stacked else k

    timed = [m["seconds"] / rows(len(set(m["row_sample"]))) for m in earlier
             if m.get("seconds") and m.get("row_sample")]
    timed = timed or [r.meta["seconds"] for r in results.values() if r.meta.get("seconds")]
    return rows(n) * max(timed) if timed else None


def sweep_table(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The sweep summary with readable column names (change > 0 is worse for FID/D-loss, better for IS/ALL); the
    change and its p-value first, where a narrow window shows them without scrolling."""
    label = METRIC_LABELS[metric]
    return pd.DataFrame({
        "selection": [METHOD_LABELS.get(m, m) for m in table["method"]],
        "removed": table["count"],
        f"mean change of test {label}": table[f"mean_change_{metric}"],
        "p-value (t-test, change = 0)": table["p_value"],
        "improved in (seeds)": table["improved_in"],
        "std over seeds": table[f"std_change_{metric}"],
        "seeds": table["seeds"],
    })


def duration(seconds: float | None, rough: bool = False) -> str:
    """A measured time to the second; `rough` for a forecast (an ETA, a time from earlier speeds), whose seconds
    would claim a precision it does not have: 5 s steps under a minute and a half, then minutes."""
    if seconds is None or not np.isfinite(seconds):
        return "?"
    if rough:
        if seconds < 90:
            return f"{max(5, int(round(seconds / 5)) * 5)} s"
        minutes = int(round(seconds / 60))
        return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
