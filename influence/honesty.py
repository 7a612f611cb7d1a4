"""Whether a run's metrics can mean anything, and what an estimate covers.

- The feature net's quality (classifier test accuracy, autoencoder test R^2) and the real-data
  reference on the test split (IS of real images, FID between its two halves): the scale
  against which a generated IS/FID, and an influence on it, should be read.
- A verdict per metric: "informative" or "metric uninformative" with the reason (classifier
  near chance, IS of real data under 1.5, autoencoder that does not describe the images,
  validation or test split too small). It sits beside the estimate's stability verdict.
- The scope of every "if removed": the estimate covers only the traced steps.
Stored per run in metric_report.json (written at the end of training, or on first request).
"""

from __future__ import annotations

import math

from . import store
from .classifier import PINNED, feature_info, measure_pinned
from .context import RunContext, feature_net_record, load_run_config, pinned_feature_run
from .metrics import METRIC_LABELS, available_metrics, real_reference

MIN_SPLIT_INFORMATIVE = 200  # below this FID / IS on the split are dominated by sampling noise
REAL_IS_MIN = 1.5  # the classifier sees (almost) one class in real data: IS cannot tell generators apart
AE_R2_MIN = 0.2  # the autoencoder explains less than this share of the test images' variance
NEAR_CHANCE = 0.25  # accuracy within this share of the way from chance to 1 counts as near chance
REPORT = "metric_report.json"
INFORMATIVE, UNINFORMATIVE = "informative", "metric uninformative"


def verdicts(is_2d: bool, info: dict | None, reference: dict, n_valid: int, n_test: int) -> dict[str, dict]:
    """Per metric: {"verdict": informative | metric uninformative, "reasons": [...]}."""
    common = [f"the {name} split has only {n} instances (at least {MIN_SPLIT_INFORMATIVE} make the metric stable)"
              for name, n in (("validation", n_valid), ("test", n_test)) if n < MIN_SPLIT_INFORMATIVE]
    feature_reasons: list[str] = []
    if info is not None:
        acc, n_classes = info.get("test_accuracy"), info.get("n_classes")
        if acc is not None and n_classes and math.isfinite(acc):
            chance = 1.0 / n_classes
            if acc < chance + NEAR_CHANCE * (1 - chance):
                feature_reasons.append(f"the feature classifier's test accuracy {acc:.1%} is near chance "
                                       f"({chance:.1%} for {n_classes} classes): its features do not describe the images")
        r2 = info.get("test_r2")
        if r2 is not None and (not math.isfinite(r2) or r2 < AE_R2_MIN):
            feature_reasons.append(f"the autoencoder explains only {r2:.1%} of the test images' variance: its features "
                                   "do not describe the images")
    out = {}
    for metric in available_metrics(is_2d):
        reasons = list(common)
        if metric in ("is", "fid"):
            reasons += feature_reasons
        if metric == "is":
            real_is = reference.get("is_real")
            if real_is is None:
                reasons.append("these features give no class probabilities, so there is no IS")
            elif real_is < REAL_IS_MIN:
                reasons.append(f"IS of the real test images is {real_is:.3g} (< {REAL_IS_MIN}): the classifier sees "
                               "no variety of classes in real data, so IS cannot rank generators")
        out[metric] = {"verdict": UNINFORMATIVE if reasons else INFORMATIVE, "reasons": reasons}
    return out


def compute_report(ctx) -> dict:
    """Feature net, its quality, the real-data reference and the verdicts of a run's context."""
    ds = ctx.dataset
    info, reference = None, {}
    if not ctx.cfg.is_2d:
        features = ctx.features  # trains / loads the feature net first, so its quality is on disk
        info = feature_info(ctx.cfg.eval, ctx.cfg.identity()["data"], store.cache_dir(ctx.root), _pinned_record(ctx))
        reference = real_reference(features, ds.test.x.to(ctx.device))
    n_valid, n_test = len(ds.valid.x), len(ds.test.x)
    return {"features": info, "reference": reference, "n_valid": n_valid, "n_test": n_test,
            "verdicts": verdicts(ctx.cfg.is_2d, info, reference, n_valid, n_test)}


def _pinned_record(ctx) -> dict | None:
    """The record of the net the run measures with, if it keeps a copy: the stored one, else measured now from the
    copy (None: the run measures with the cache's net, whose record the cache holds)."""
    pinned = pinned_feature_run(ctx.root, ctx.cfg)
    if pinned is None:
        return None
    kept = feature_net_record(pinned)
    return store.read_json(kept) if kept is not None else measure_pinned(ctx.cfg.eval, ctx.dataset, pinned.verify(PINNED))


def metric_report(run: store.Run, ctx=None) -> dict:
    """The run's stored report, computed (and stored) on first request."""
    if run.exists(REPORT):
        return run.read_json(REPORT)
    with run.exclusive("metric-report"):  # computed once, whoever asks first
        if run.exists(REPORT):
            return run.read_json(REPORT)
        if ctx is None:
            ctx = RunContext.create(load_run_config(run), run.root)
        report = compute_report(ctx)
        run.remove_stale_temp_files([""], [REPORT])  # a killed writer's
        run.write_json(REPORT, report)
    return report


def stored_verdicts(run: store.Run) -> dict[str, dict]:
    """The run's per-metric verdicts ({metric: {"verdict", "reasons"}}) if its report was computed, else {}."""
    return run.read_json(REPORT)["verdicts"] if run.exists(REPORT) else {}


def uninformative(verdicts: dict[str, dict], metric: str) -> bool:
    return verdicts.get(metric, {}).get("verdict") == UNINFORMATIVE


def verdict_line(report: dict, metric: str) -> str:
    v = report["verdicts"].get(metric)
    if v is None:
        return ""
    if v["verdict"] == INFORMATIVE:
        return f"{METRIC_LABELS[metric]}: informative"
    return f"{METRIC_LABELS[metric]}: metric uninformative - " + "; ".join(v["reasons"])


def reference_line(report: dict) -> str:
    """One line: the features and the real-data reference values."""
    info, ref = report.get("features"), report.get("reference") or {}
    if info is None:
        return ""
    parts = [f"features: {info['label']}"]
    if info.get("test_accuracy") is not None:
        parts.append(f"classifier test accuracy {info['test_accuracy']:.1%}")
    if info.get("test_r2") is not None:
        parts.append(f"autoencoder test R² {info['test_r2']:.2f}")
    if info.get("measured_now"):
        parts.append("measured on the run's copy of the net (the run keeps no record of how it was trained)")
    if (trained := info.get("conditions")) is not None:  # FIDs of two stores compare at the same count, processor
        on = f" on {trained['processor'].split(' [')[0]}" if "processor" in trained else ""  # flags: in its .json
        parts.append(f"feature net trained at {trained['threads']} torch threads{on} (torch {trained['torch']})")
    if "is_real" in ref:
        parts.append(f"IS of real test images {ref['is_real']:.3g}")
    if "fid_real_halves" in ref:
        parts.append(f"FID between the two halves of the real test split {ref['fid_real_halves']:.3g}")
    return "; ".join(parts)


FEATURE_NOTES = {
    "mnist-cnn": "IS/FID on a small CNN classifier trained on this data set's labels (comparable within this tool, "
                 "not to published FIDs)",
    "inception": "IS/FID on pytorch-fid's Inception-v3 (the published FIDs' features; compare at equal sample sizes)",
    "autoencoder": "FID on an autoencoder trained on this data set: NOT comparable to published FIDs; no IS",
}


def feature_note(cfg) -> str:
    """Which features a run's IS/FID use, in words (for every place that shows FID)."""
    return "" if cfg.is_2d else FEATURE_NOTES[cfg.eval.feature]


def scope_text(traced_steps: int, total_steps: int, epochs: int) -> str:
    """What an estimate covers: 'the last 1 of 20 epochs, 100 of 2000 steps'."""
    per_epoch = total_steps / epochs if epochs else 0
    if per_epoch and traced_steps % per_epoch == 0:
        k = int(traced_steps // per_epoch)
        return f"the last {k} of {epochs} epochs, {traced_steps} of {total_steps} steps"
    return f"the last {traced_steps} of {total_steps} steps, {epochs} epochs in all"


def if_removed(metric: str, traced_steps: int, total_steps: int, epochs: int) -> str:
    """The sign sentence with its scope: what 'if removed' means for this estimate."""
    return (f"predicted change of {METRIC_LABELS[metric]} if the instance had been left out of the traced steps "
            f"only ({scope_text(traced_steps, total_steps, epochs)}); earlier epochs are not covered")
