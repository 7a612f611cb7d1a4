"""The verdict a user acts on: stability of the backward pass and measured agreement, per level.

Two levels, because people curate sets while leave-one-out of one image is dominated by kinks and
rounding on ReLU nets and in float32:
- groups (removal sets, what a curator acts on): trustworthy / indicative / not supported;
- single images (the rank of one image): trustworthy / rough / noise.
Each comes from the spot check's replays (`spotcheck`), never from a guess: an estimate without a check
reads "not checked". The growth factor of |u| (`estimator.verdict`) enters where the check cannot see:
the quick check replays only the last eighth of the traced steps, so an amplification before them caps
what it may vouch for. Thresholds are calibrated against full validation (leave-one-out, n=200, and group
validation, LDS) in docs/trust.md. A level comes with the levels its measurement cannot rule out: the 95%
interval of the check's LDS or tau (`intervals.rank_interval`) may reach across a threshold (8 single images
at tau 0.86: 0.54 to 0.98, rough or trustworthy).
"""

from __future__ import annotations

import math

from ..estimator import GROWTH_UNRELIABLE, InfluenceResult
from ..metrics import METRIC_LABELS
from .intervals import interval_phrase, rank_interval

NOT_CHECKED = "not checked"
GROUP_LEVELS = ("trustworthy", "indicative", "not supported")
SINGLE_LEVELS = ("trustworthy", "rough", "noise")
# spot check -> level (docs/trust.md)
GROUP_R_TRUSTWORTHY = 0.9
GROUP_R_INDICATIVE = 0.5
HARMFUL_RATIO = (1 / 3, 3.0)  # the harmful set's actual / predicted change, for "trustworthy"
SINGLE_TAU_TRUSTWORTHY = 0.6
SINGLE_TAU_ROUGH = 0.2


def group_r(agreement: dict) -> float:
    """The group measure: Spearman over the random groups (a small LDS); checks stored before they had it:
    Pearson over all groups."""
    if "random_groups" in agreement:
        return agreement["random_groups"]["spearman"]
    return agreement["groups"]["pearson"]


def moved_same_way(predicted: float, actual: float) -> bool:
    return predicted != 0 and actual != 0 and math.copysign(1, predicted) == math.copysign(1, actual)


def moved_as_predicted(predicted: float, actual: float) -> bool:
    """A removal set's actual change went the predicted way by HARMFUL_RATIO of the prediction (the bar of
    "trustworthy" groups; also the trace-lr probe's replay, `tracelr`)."""
    return moved_same_way(predicted, actual) and HARMFUL_RATIO[0] <= actual / predicted <= HARMFUL_RATIO[1]


def group_level(agreement: dict) -> str:
    r = group_r(agreement)
    harmful = agreement["harmful_set"]
    predicted, actual = harmful["predicted"], harmful["actual"]
    if not math.isfinite(r) or not moved_same_way(predicted, actual):
        return "not supported"
    if r >= GROUP_R_TRUSTWORTHY and moved_as_predicted(predicted, actual):
        return "trustworthy"
    return "indicative" if r >= GROUP_R_INDICATIVE else "not supported"


def single_level(agreement: dict) -> str:
    tau = agreement["singles"]["kendall_tau"]
    if not math.isfinite(tau) or tau < SINGLE_TAU_ROUGH:
        return "noise"
    return "trustworthy" if tau >= SINGLE_TAU_TRUSTWORTHY else "rough"


def group_interval(agreement: dict) -> tuple[float, float]:
    """The 95% interval of the group measure (the random groups' Spearman); (nan, nan) for a check stored
    before it had random groups of its own."""
    if "random_groups" not in agreement:
        return math.nan, math.nan
    groups = agreement["random_groups"]
    return rank_interval("spearman", groups["spearman"], groups["n"])


def single_interval(agreement: dict) -> tuple[float, float]:
    return rank_interval("kendall", agreement["singles"]["kendall_tau"], agreement["singles"]["n"])


def group_levels(agreement: dict) -> list[str]:
    """Every group level the check's measurement allows: its own, and those its LDS interval reaches."""
    reached = [group_level(dict(agreement, random_groups={"spearman": r}))
               for r in group_interval(agreement) if math.isfinite(r)]
    return _between(GROUP_LEVELS, [group_level(agreement), *reached])


def single_levels(agreement: dict) -> list[str]:
    """Every single-image level the check's measurement allows: its own, and those its tau interval reaches."""
    reached = [single_level({"singles": {"kendall_tau": t}}) for t in single_interval(agreement) if math.isfinite(t)]
    return _between(SINGLE_LEVELS, [single_level(agreement), *reached])


def _between(order: tuple[str, ...], levels: list[str]) -> list[str]:
    ranks = [order.index(level) for level in levels]
    return list(order[min(ranks):max(ranks) + 1])


def verdict(result: InfluenceResult, check: dict | None) -> dict:
    """{"groups", "singles": levels; "summary": one line; "measured": what the check saw; "stability": growth line}."""
    metric = result.metric
    stability = result.meta["verdict_message"]
    if check is None or metric not in check.get("per_metric", {}):
        return {"groups": NOT_CHECKED, "singles": NOT_CHECKED, "checked": False, "stability": stability,
                "summary": f"not checked - no spot check has tested this estimate yet (stability: {result.verdict})",
                "measured": ""}
    agreement = check["per_metric"][metric]
    # checks stored before 2026-12-05 recorded kinks only where the run trained in float32
    kinked = bool(check.get("kinked", check.get("kinked_float32")))
    (groups, groups_range), (singles, singles_range), caps = judged(agreement, check["level"], result.meta["growth"],
                                                                   kinked)
    n_groups = agreement.get("random_groups", agreement["groups"])["n"]
    summary = (f"groups: {groups}{_not_ruled_out(groups, groups_range, n_groups, 'random groups')}; single-image "
               f"ranks: {_single_words(singles)}"
               f"{_not_ruled_out(singles, singles_range, agreement['singles']['n'], 'single images')}")
    if caps:
        summary += " (" + "; ".join(caps) + ")"
    return {"groups": groups, "singles": singles, "groups_range": groups_range, "singles_range": singles_range,
            "checked": True, "stability": stability, "summary": summary,
            "measured": measured_sentence(metric, check, agreement)}


def kept(result: InfluenceResult, check: dict | None) -> dict:
    """The verdict as it is kept beside a use of the estimate (an export's manifest, the run list): the levels,
    the card's line and what the replays measured."""
    v = verdict(result, check)
    return {k: v[k] for k in ("groups", "singles", "summary", "measured")}


Level = tuple[str, list[str]]  # a level and the levels its measurement's interval allows


def judged(agreement: dict, level: str, growth: float, kinked: bool) -> tuple[Level, Level, list[str]]:
    """The rules of docs/trust.md applied to one metric's check: (groups, singles) as `levels` gives them, and the
    caps that applied, in words. A quick check replays random groups and singles over the last steps only;
    kinked: the run's nets have ReLU or LeakyReLU units (`models.has_kinks`)."""
    caps = []  # what a quick check's window cannot vouch for: groups at most indicative, singles at most rough
    if level == "quick" and (not math.isfinite(growth) or growth >= GROWTH_UNRELIABLE):
        # the window cannot see an amplification in the steps before it
        caps.append(f"|u| grows {growth:.3g}x over the trace, before the checked steps: levels capped")
    by_harmful_set = level == "quick" and kinked
    if by_harmful_set:
        # Measured on mnist-adam with ReLU units (docs/trust.md): in float32 (seeds 0-2) the window's random groups
        # read Spearman 0.92 / 0.86 / 0.90 for FID where the whole trace gave LDS 0.74 / 0.82 / 0.54, and 0.45 /
        # 0.27 / 0.18 for IS where it gave 0.52 / 0.88 / 0.73; in float64 (seed 0) the window read FID trustworthy
        # for groups and singles where the whole trace gave LDS 0.71 and leave-one-out tau 0.05.
        caps.append("on a net with ReLU units the last steps misread the whole trace: groups judged by the most "
                    "harmful set over all steps, at most indicative; single images at most rough; a full check "
                    "can lift this")
    return (*levels(agreement, capped=bool(caps), by_harmful_set=by_harmful_set), caps)


def levels(agreement: dict, capped: bool = False, by_harmful_set: bool = False) -> tuple[Level, Level]:
    """((group level, the group levels its interval allows), (the same for single images)); capped: groups at
    most indicative, singles at most rough (what a quick check cannot vouch for); by_harmful_set: groups judged
    by the most harmful set alone (indicative where it moved the predicted way), where the random groups'
    replays are known not to speak for the whole trace."""
    def cap(level: str, top: str) -> str:
        return top if capped and level == "trustworthy" else level

    if by_harmful_set:
        harmful = agreement["harmful_set"]
        group = "indicative" if moved_same_way(harmful["predicted"], harmful["actual"]) else "not supported"
        groups = (group, [group])  # one set: no interval to reach across a threshold
    else:
        group = cap(group_level(agreement), "indicative")
        groups = (group, list(dict.fromkeys(cap(g, "indicative") for g in group_levels(agreement))))
    single = cap(single_level(agreement), "rough")
    return groups, (single, list(dict.fromkeys(cap(s, "rough") for s in single_levels(agreement))))


def _not_ruled_out(level: str, allowed: list[str], n: int, what: str) -> str:
    others = [_single_words(other) for other in allowed if other != level]
    return f" ({n} {what} cannot rule out {' or '.join(others)})" if others else ""


def _single_words(level: str) -> str:
    return {"noise": "noise at this scale", "rough": "rough", "trustworthy": "trustworthy"}.get(level, level)


def mixed_singles(agreement: dict) -> bool:
    """A check stored before 2026-12-05: its "single" lanes were half the largest |scores| and half random, and its
    tau was taken over that mix (it has no "top_singles")."""
    return "top_singles" not in agreement


def stored_replays(check: dict | None, metric: str) -> list[dict] | None:
    """A stored check's replays of one metric (kind, size, predicted, actual per lane), None where it has none
    (no check, another metric, or a check from before the lanes were kept)."""
    return ((check or {}).get("per_metric", {}).get(metric) or {}).get("lanes")


def measured_sentence(metric: str, check: dict, agreement: dict) -> str:
    label = METRIC_LABELS[metric]
    g, s, h = agreement["groups"], agreement["singles"], agreement["harmful_set"]
    whole = f"all {check['traced_steps']} traced steps"
    where = (f"the last {check['window_steps']} of {check['traced_steps']} traced steps" if check["level"] == "quick"
             else whole)
    n_random = sum(1 for lane in agreement["lanes"] if lane["kind"] == "random")
    size = next((lane["size"] for lane in agreement["lanes"] if lane["kind"] == "random"), 0)
    measure = (f"LDS (Spearman) {group_r(agreement):.2f}"
               f"{interval_phrase('spearman', group_r(agreement), agreement['random_groups']['n'])}"
               if "random_groups" in agreement
               else f"predicted vs actual r={g['pearson']:.2f} (with the most harmful and helpful sets)")
    harmful = (f"removing the {h['size']} most harmful changed {label} by {h['actual']:+.3g} "
               f"(predicted {h['predicted']:+.3g}"
               f"{'; the trace-lr probe replayed it in training' if metric in check.get('probe_lanes', ()) else ''})")
    singles = (f"on {s['n']} {'' if mixed_singles(agreement) else 'random '}single images tau="
               f"{s['kendall_tau']:.2f}{interval_phrase('kendall', s['kendall_tau'], s['n'])}")
    top = agreement.get("top_singles")
    if mixed_singles(agreement):
        singles += " (half of them the largest |scores|, a mix that reads high; checks since rank random images)"
    elif top["n"]:
        singles += (f"; the {top['n']} largest |scores| moved the predicted way in "
                    f"{round(top['signs_agree'] * top['n'])} of {top['n']}")
    if check["level"] == "quick" and check.get("sets_over_whole_trace"):
        return (f"replays over {where}: on {n_random} random groups of {size} images, {measure}; {singles}; over "
                f"{whole}, {harmful}")
    return f"replays over {where}: on {n_random} random groups of {size} images, {measure}; {harmful}; {singles}"
