"""Plotly figures. Every influence axis names the metric and which side is harmful.

Sign convention (the engine's): influence = predicted change of the metric if the
instance is removed; harmful = removal improves the metric (positive for IS and ALL,
negative for FID and D-loss).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from influence.baselines import METHOD_LABELS
from influence.estimator import GROWTH_DOUBTFUL, GROWTH_UNRELIABLE
from influence.metrics import HIGHER_IS_BETTER, METRIC_LABELS, harmful_sign
from influence.validation.spotcheck import harmful_side

from .numbers import SCI_AXIS, SCI_COLORBAR

HARMFUL = "#d62728"
HELPFUL = "#1f77b4"
GENERATED = "#2ca02c"
CLEANSED = "#ff7f0e"
MARGIN = dict(l=10, r=10, t=40, b=10)
TOOLBAR_TOP = 76  # px above the plot area: two lines of subplot title under the Plotly toolbar


CLASS_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                "#bcbd22", "#17becf")  # d3's category10: ten classes, none pale on white


def class_color(label: int) -> str:
    return "#555" if label < 0 else CLASS_COLORS[label % len(CLASS_COLORS)]


def axis_label(metric: str, lines: int = 1, what: str = "predicted") -> str:
    """'predicted change of FID if removed; negative = harmful' on one line, or broken after 'removed' (lines=2) and
    also after the metric (lines=3): a Plotly title does not wrap, and a chart in a narrow column of a 1024 px
    window holds 20 to 30 characters a line."""
    side = "positive" if harmful_sign(metric) > 0 else "negative"
    head = f"{what} change of {METRIC_LABELS[metric]}{'<br>' if lines > 2 else ' '}if removed"
    return f"{head}{'<br>' if lines > 1 else '; '}{side} = harmful"


def _side_colors(metric: str) -> tuple[str, str]:
    """(colour of negative values, colour of positive values)."""
    return (HELPFUL, HARMFUL) if harmful_sign(metric) > 0 else (HARMFUL, HELPFUL)


def influence_histogram(scores: np.ndarray, metric: str, log_y: bool = True, height: int = 330) -> go.Figure:
    """Histogram with harmful bars in red and the harmful half-axis shaded; 0 is a bin edge."""
    lo, hi = float(np.min(scores)), float(np.max(scores))
    size = (hi - lo) / 60 or 1e-12
    start, end = size * math.floor(lo / size), size * math.ceil(hi / size)
    bins = dict(start=start, end=end + size, size=size)
    neg_color, pos_color = _side_colors(metric)
    harmful_positive = harmful_sign(metric) > 0
    fig = go.Figure()
    for mask, color, name in ((scores < 0, neg_color, "negative"), (scores >= 0, pos_color, "positive")):
        harmful = (name == "positive") == harmful_positive
        fig.add_histogram(x=scores[mask], xbins=bins, marker_color=color, autobinx=False,
                          name=f"{name} ({'harmful' if harmful else 'helpful'})")
    x0, x1 = (0.0, max(end, size)) if harmful_positive else (min(start, -size), 0.0)
    fig.add_vrect(x0=x0, x1=x1, fillcolor=HARMFUL, opacity=0.07, line_width=0)
    fig.add_vline(x=0, line_dash="dot", line_color="#555")
    fig.add_annotation(x=x1 if harmful_positive else x0, y=1, yref="paper", showarrow=False,
                       xanchor="right" if harmful_positive else "left", yanchor="bottom",
                       text=("harmful side →" if harmful_positive else "← harmful side"), font_color=HARMFUL)
    # The legend sits under the axis title: above the plot it hid under the toolbar (top right). Pinned to the
    # figure's bottom edge, not a fraction of the plot's height, so a title in two lines does not run into it.
    legend = dict(orientation="h", yref="container", yanchor="bottom", y=0.0, x=0.0, xanchor="left")
    fig.update_layout(barmode="stack", height=height, margin=dict(MARGIN, b=10), dragmode="select",
                      xaxis_title=axis_label(metric, lines=2),
                      # in two lines: on a short chart with a wrapped legend one line ran past the figure's top
                      yaxis_title="training instances" + ("<br>(log scale)" if log_y else ""), legend=legend, title=None)
    fig.update_xaxes(**SCI_AXIS)
    if log_y:
        fig.update_yaxes(type="log", dtick=1)  # ticks at 1, 10, 100 ... only
    return fig


def u_growth(u_norms: np.ndarray, whole: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """|u| per traced step relative to the whole |u| where the backward pass starts (the last index):
    'whole' (its maximum over the pass is the verdict's growth factor), 'D' and 'G' (each block's share,
    so both stay at or below 'whole'). `whole` = the engine's whole-state norm (optimizer buffers
    included) when stored; otherwise the norm over both players' parameters (the same thing for SGD)."""
    u_norms = np.asarray(u_norms, dtype=float)
    whole = np.hypot(u_norms[:, 0], u_norms[:, 1]) if whole is None else np.asarray(whole, dtype=float)
    start = whole[-1] if whole[-1] > 0 else 1.0
    return {"whole": whole / start, "D": u_norms[:, 0] / start, "G": u_norms[:, 1] / start}


def u_norm_figure(u_norms: np.ndarray, whole: np.ndarray | None = None, height: int = 360) -> go.Figure:
    """The backward pass's |u| per traced step, as multiples of its starting size (log axis, decade ticks),
    with the verdict's thresholds drawn: the black line's peak is the growth factor the verdict names."""
    rel = u_growth(u_norms, whole)
    steps = np.arange(len(rel["whole"]))
    fig = go.Figure()
    fig.add_hrect(y0=GROWTH_DOUBTFUL, y1=GROWTH_UNRELIABLE, fillcolor="#ffbf00", opacity=0.12, line_width=0)
    fig.add_hrect(y0=GROWTH_UNRELIABLE, y1=1e30, fillcolor=HARMFUL, opacity=0.10, line_width=0)
    for y, text in ((GROWTH_DOUBTFUL, "doubtful from here"), (GROWTH_UNRELIABLE, "unreliable from here")):
        fig.add_hline(y=y, line=dict(color="#888", dash="dot", width=1))
        # On a log axis an annotation's y is the exponent (add_hline's own annotation lands off the plot).
        fig.add_annotation(x=0, xref="paper", y=math.log10(y), yref="y", text=text, showarrow=False,
                           xanchor="left", yanchor="bottom", font=dict(size=10, color="#666"))
    # Drawn in this order: where |u_G| makes up all of |u| (plain SGD, IS/FID) its dashes show on the black.
    lines = (("whole", "|u| whole<br>(its peak = growth factor)", "#222", 3.0, "solid"),
             ("D", "|u_D| discriminator part<br>(accumulates from 0)", HELPFUL, 1.5, "dot"),
             ("G", "|u_G| generator part", CLEANSED, 2.0, "dash"))
    for part, name, color, width, dash in lines:
        y = np.where(rel[part] > 0, rel[part], np.nan)  # log axis: zeros (u_D at the start) cannot be drawn
        fig.add_scatter(x=steps, y=y, mode="lines", name=name, line=dict(color=color, width=width, dash=dash),
                        hovertemplate="step %{x}: %{y:.3g}× the start<extra>" + name.replace("<br>", " ") + "</extra>")
    peak = float(np.nanmax(rel["whole"]))
    shown = np.concatenate([v[np.isfinite(v) & (v > 0)] for v in rel.values()])
    # Bottom: a decade below where the whole |u| dips, at most 4 decades below the start (a tiny u_D
    # entering from below says "negligible"); top: above the peak and the 'unreliable' line.
    low = max(min(float(np.nanmin(rel["whole"])), float(shown.min()) if shown.size else 1.0) / 3, 1e-4)
    high = max(peak * 3, GROWTH_UNRELIABLE * 3)
    lo_dec, hi_dec = math.floor(math.log10(low)), math.ceil(math.log10(high))
    every = max(1, math.ceil((hi_dec - lo_dec + 1) / 8))  # at most about 8 labels
    ticks = [10.0 ** k for k in range(lo_dec, hi_dec + 1) if k % every == 0]
    fig.update_yaxes(type="log", range=[math.log10(low), math.log10(high)], tickvals=ticks,
                     ticktext=[decade_text(t) for t in ticks], title_text="|u| ÷ |u| at the start (log)")
    fig.update_layout(height=height, margin=MARGIN,
                      legend=dict(orientation="h", yref="container", yanchor="bottom", y=0.0, x=0),
                      xaxis_title="traced step<br>(walked right to left)")
    return fig


def decade_text(value: float) -> str:
    """0.001 ... 1000 written out, beyond that 1e-4, 1e5 (no '0.5e-4' style labels)."""
    k = round(math.log10(value))
    if -3 <= k <= 3:
        return f"{value:g}" if k < 0 else f"{int(value)}"
    return f"1e{k}"


def influence_scatter(frame: pd.DataFrame, x_metric: str, y_metric: str, class_names: list[str] | None,
                      height: int = 420) -> go.Figure:
    fig = go.Figure()
    groups = frame.groupby("label", sort=True) if (frame["label"] >= 0).any() else [(-1, frame)]
    for label, part in groups:
        name = class_label(int(label), class_names)
        fig.add_scattergl(x=part[f"influence_{x_metric}"], y=part[f"influence_{y_metric}"], mode="markers",
                          name=name, customdata=part["id"],
                          marker=dict(size=4, opacity=0.7, color=class_color(int(label))),
                          hovertemplate="#%{customdata}<br>x %{x:.2e}<br>y %{y:.2e}<extra>" + name + "</extra>")
    fig.add_hline(y=0, line_dash="dot", line_color="#777")
    fig.add_vline(x=0, line_dash="dot", line_color="#777")
    fig.update_layout(height=height, margin=MARGIN, xaxis_title=axis_label(x_metric), yaxis_title=axis_label(y_metric),
                      legend_title="class", dragmode="lasso")
    fig.update_xaxes(**SCI_AXIS)
    fig.update_yaxes(**SCI_AXIS)
    return fig


def selected_ids(event) -> list[int]:
    """Training ids of the points selected in a chart whose traces carry the ids as customdata."""
    selection = (event or {}).get("selection") or {}
    out = set()
    for p in selection.get("points") or []:
        value = p.get("customdata")
        if isinstance(value, list):
            value = value[0] if value else None
        if value is not None:
            out.add(int(value))
    return sorted(out)


def class_box(frame: pd.DataFrame, metric: str, class_names: list[str] | None, height: int = 360) -> go.Figure:
    fig = go.Figure()
    for label, part in frame.groupby("label", sort=True):
        fig.add_box(y=part[f"influence_{metric}"], name=class_label(int(label), class_names), boxpoints=False,
                    marker_color=class_color(int(label)))
    fig.add_hline(y=0, line_dash="dot", line_color=HARMFUL)
    # Category axis: digit names would otherwise make a numeric axis that labels only every other class.
    fig.update_layout(height=height, margin=MARGIN, showlegend=False,
                      xaxis_title="class (label of the training instance)", yaxis_title=axis_label(metric, lines=2))
    fig.update_xaxes(type="category", tickmode="linear", dtick=1)
    fig.update_yaxes(**SCI_AXIS)
    return fig


def class_label(label: int, class_names: list[str] | None) -> str:
    if label < 0:
        return "unlabelled"
    return class_names[label] if class_names and label < len(class_names) else str(label)


def flat_range(values: list[float], least: float = 1e-3) -> list[float] | None:
    """An axis range at least `least` of the values' size wide: a metric that moved by 1e-11 (an IS of 1.0 on
    features that see one class) is drawn flat, not stretched over ticks of twelve digits. None = Plotly's own."""
    lo, hi = min(values), max(values)
    span = least * max(abs(lo), abs(hi))
    if hi - lo >= span or span == 0:
        return None
    mid = (lo + hi) / 2
    return [mid - span, mid + span]


def history_figure(history: list[dict], live_losses: list[tuple[int, float | None, float | None]] | None = None,
                   steps_per_epoch: int | None = None, uninformative: tuple[str, ...] = ()) -> go.Figure:
    """Losses (per epoch, plus per-step samples while training) above the test metrics per epoch (a metric that is
    uninformative for the run is titled so, not 'higher/lower is better'). Two rows and no legend: side by side in
    the Train page's column at 1024 px, the metrics' titles and tick labels ran over each other and the legend over
    the axis titles."""
    metrics = [m for m in ("is", "fid", "all") if any(m in h for h in history)]
    cols = max(1, len(metrics))
    losses = f"losses: D <span style='color:{HELPFUL}'>blue</span>, G <span style='color:{CLEANSED}'>orange</span>"
    titles = [losses] + [f"test {METRIC_LABELS[m]}<br>(" + ("uninformative" if m in uninformative else
                                                            f"{'higher' if HIGHER_IS_BETTER[m] else 'lower'} is better")
                         + ")" for m in metrics]
    if metrics:
        specs = [[{"colspan": cols}] + [None] * (cols - 1), [{} for _ in range(cols)]]
        fig = make_subplots(rows=2, cols=cols, specs=specs, subplot_titles=titles, vertical_spacing=0.3,
                            horizontal_spacing=0.2)
    else:
        fig = make_subplots(rows=1, cols=1, subplot_titles=titles)
    if live_losses and steps_per_epoch:
        steps = [s / steps_per_epoch for s, _, _ in live_losses]
        # an alternating run's samples hold one player's loss each (None for the other): each line joins its own
        fig.add_scatter(x=steps, y=[d for _, d, _ in live_losses], mode="lines", name="D loss (live)",
                        line=dict(color=HELPFUL, width=1), opacity=0.5, connectgaps=True, row=1, col=1)
        fig.add_scatter(x=steps, y=[g for _, _, g in live_losses], mode="lines", name="G loss (live)",
                        line=dict(color=CLEANSED, width=1), opacity=0.5, connectgaps=True, row=1, col=1)
    epochs = [h["epoch"] for h in history]
    fig.add_scatter(x=epochs, y=[h["loss_d"] for h in history], mode="lines+markers", name="D loss (epoch mean)",
                    line_color=HELPFUL, row=1, col=1)
    fig.add_scatter(x=epochs, y=[h["loss_g"] for h in history], mode="lines+markers", name="G loss (epoch mean)",
                    line_color=CLEANSED, row=1, col=1)
    for i, m in enumerate(metrics, start=1):
        pts = [(h["epoch"], h[m]) for h in history if m in h]
        fig.add_scatter(x=[e for e, _ in pts], y=[v for _, v in pts], mode="lines+markers",
                        name=f"test {METRIC_LABELS[m]}", line_color="#444", row=2, col=i)
        fig.update_yaxes(range=flat_range([v for _, v in pts]), row=2, col=i)
    # whole epochs only: a one-epoch fine-tune's single point got ticks at 0, 0.5, 1, 1.5 and 2
    fig.update_xaxes(title_text="epoch", tick0=0, dtick=max(1, math.ceil(max(epochs, default=1) / 5)))
    # The subplot titles sit below the toolbar's row (top right), which covered the last one while training.
    fig.update_layout(height=480 if metrics else 300, margin=dict(l=10, r=10, t=TOOLBAR_TOP, b=10), showlegend=False)
    return fig


def points_figure(train_xy: np.ndarray, scores: np.ndarray | None = None, metric: str | None = None,
                  generated: np.ndarray | None = None, cleansed: np.ndarray | None = None,
                  removed: np.ndarray | None = None, height: int = 560) -> go.Figure:
    """2D data: training points (trace 0, coloured by influence), generated and removed points on top."""
    fig = go.Figure()
    marker: dict = dict(size=5, opacity=0.75)
    if scores is not None and metric is not None:
        # Colour range clipped at the 99th percentile of |influence| so a few outliers do not grey out the rest.
        limit = float(np.percentile(np.abs(scores), 99)) or 1e-12
        side = "positive" if harmful_sign(metric) > 0 else "negative"
        marker.update(color=scores, cmin=-limit, cmax=limit, cmid=0,
                      colorscale="RdBu_r" if harmful_sign(metric) > 0 else "RdBu",
                      colorbar=dict(title=dict(text=f"influence on {METRIC_LABELS[metric]}<br>{side} (red) = harmful",
                                               side="right"), **SCI_COLORBAR))
    else:
        marker.update(color="#999")
    hover = "#%{customdata}<br>(%{x:.2f}, %{y:.2f})"
    if scores is not None:
        hover += "<br>influence %{marker.color:.2e}"
    fig.add_scattergl(x=train_xy[:, 0], y=train_xy[:, 1], mode="markers", name="training points",
                      customdata=np.arange(len(train_xy)), marker=marker, hovertemplate=hover + "<extra></extra>")
    if generated is not None:
        fig.add_scattergl(x=generated[:, 0], y=generated[:, 1], mode="markers", name="generated (original)",
                          marker=dict(size=4, color=GENERATED, symbol="diamond", opacity=0.7))
    if cleansed is not None:
        fig.add_scattergl(x=cleansed[:, 0], y=cleansed[:, 1], mode="markers", name="generated (after cleansing)",
                          marker=dict(size=6, color=CLEANSED, symbol="diamond-open", opacity=0.8))
    if removed is not None and removed.any():
        xy = train_xy[removed]
        fig.add_scattergl(x=xy[:, 0], y=xy[:, 1], mode="markers", name="in the removal set",
                          marker=dict(size=7, symbol="x-thin-open", color="#222", opacity=0.6, line=dict(width=1)))
    fig.update_layout(height=height, margin=MARGIN, dragmode="lasso", xaxis_title="x₁", yaxis_title="x₂",
                      legend=dict(orientation="h", y=1.08, x=0))
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    return fig


def validation_scatter(estimated: np.ndarray, actual: np.ndarray, metric: str, height: int = 420) -> go.Figure:
    label = METRIC_LABELS[metric]
    fig = go.Figure()
    fig.add_scatter(x=estimated, y=actual, mode="markers", name="instances", marker=dict(size=7, opacity=0.8))
    lo = float(min(np.min(estimated), np.min(actual)))
    hi = float(max(np.max(estimated), np.max(actual)))
    fig.add_scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="estimate = actual",
                    line=dict(dash="dash", color="#888"))
    fig.update_layout(height=height, margin=MARGIN, xaxis_title=axis_label(metric, lines=2, what="estimated"),
                      yaxis_title=f"actual change of {label} when removed (leave-one-out replay)",
                      legend=dict(orientation="h", y=1.08, x=0))
    fig.update_xaxes(**SCI_AXIS)
    fig.update_yaxes(**SCI_AXIS)
    return fig


def sweep_figure(table: pd.DataFrame, metric: str, height: int = 380) -> go.Figure:
    """Mean change of the test metric after cleansing vs the number removed, one line per selection method."""
    label, better = METRIC_LABELS[metric], "lower" if not HIGHER_IS_BETTER[metric] else "higher"
    fig = go.Figure()
    fig.add_hline(y=0, line=dict(color="#888", dash="dash"))
    for method, g in table.groupby("method", sort=False):
        g = g.sort_values("count")
        fig.add_scatter(x=g["count"], y=g[f"mean_change_{metric}"], mode="lines+markers",
                        name=METHOD_LABELS.get(method, method),
                        error_y=dict(type="data", array=g[f"std_change_{metric}"].fillna(0), visible=True),
                        customdata=np.stack([g["seeds"], g["p_value"]], axis=1),
                        hovertemplate="%{x} removed: %{y:.4g} (seeds %{customdata[0]}, p %{customdata[1]:.3g})")
    fig.update_layout(height=height, margin=MARGIN, xaxis_title="training instances removed (each method's first k)",
                      yaxis=dict(title=f"change of test {label} ({better} = better)", tickformat=".3~g"),
                      title=dict(text="mean ± std over seeds", font=dict(size=13)),
                      legend=dict(orientation="h", y=-0.25, x=0))
    fig.update_xaxes(**whole_counts(table["count"]))
    return fig


# Same-z differences: white = unchanged, then ever darker (monotone in lightness); most pixels change by
# a small fraction of the largest change, so the light end gets most of the scale.
DIFFERENCE_SCALE = [[0.0, "#ffffff"], [0.02, "#fff3b0"], [0.1, "#fdb462"], [0.35, "#e6550d"], [0.7, "#a63603"],
                    [1.0, "#3b0f00"]]


def difference_heatmap(diff: np.ndarray, height: int = 420) -> go.Figure:
    """|after - before| of two same-z sample grids as a heat map: white = unchanged, darker = more changed.

    The colour scale ends at the largest difference, not at 1: a replay moves pixels by a few
    thousandths, which on a 0..1 scale is one flat colour. Draw it with theme=None (Streamlit's
    theme replaces the colour scale)."""
    top = max(float(diff.max()), 1e-6)
    fig = go.Figure(go.Heatmap(z=diff, zmin=0, zmax=top, colorscale=DIFFERENCE_SCALE,
                               colorbar=dict(title=dict(text="|after − before|", side="right"), **SCI_COLORBAR),
                               hovertemplate="%{z:.2e}<extra></extra>"))
    fig.update_layout(height=height, margin=MARGIN,
                      title=dict(text="same-z difference |after − before| per pixel", font_size=13))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, autorange="reversed", scaleanchor="x")
    return fig


def class_bar(counts: pd.Series, height: int = 220) -> go.Figure:
    fig = go.Figure(go.Bar(x=counts.index.astype(str), y=counts.values, marker_color=HARMFUL))
    fig.update_layout(height=height, margin=MARGIN, xaxis_title="class", yaxis_title="instances in the removal set",
                      xaxis_type="category")
    return fig


# ---------------------------------------------------------------- reading chart selections
def selected_x_range(event) -> tuple[float, float] | None:
    """The x-range of a box selection (st.plotly_chart(..., on_select="rerun") state), or None."""
    selection = (event or {}).get("selection") or {}
    for box in selection.get("box") or []:
        xs = [float(v) for v in box.get("x") or []]
        if len(xs) >= 2:
            return min(xs), max(xs)
    return None


def selected_point_indices(event, curve: int = 0) -> list[int]:
    """Indices of the selected points of one trace (box, lasso or click)."""
    selection = (event or {}).get("selection") or {}
    return sorted({int(p["point_index"]) for p in selection.get("points") or []
                   if p.get("curve_number", 0) == curve and p.get("point_index") is not None})


def group_scatter(points: pd.DataFrame, metric: str, height: int = 420) -> go.Figure:
    """LDS: each random removal group's summed estimate against the actual change of its replay, one colour per
    fraction; the diagonal is 'sum = actual'."""
    fig = go.Figure()
    for f, g in points.groupby("fraction"):
        fig.add_scatter(x=g["predicted"], y=g["actual_valid"], mode="markers", name=f"{f:.0%} removed",
                        marker=dict(size=8, opacity=0.85),
                        hovertemplate="predicted %{x:.3g}, actual %{y:.3g}<extra>%{fullData.name}</extra>")
    both = np.concatenate([points["predicted"].to_numpy(), points["actual_valid"].to_numpy()])
    lo, hi = float(np.min(both)), float(np.max(both))
    fig.add_scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="sum = actual", line=dict(dash="dash", color="#888"))
    fig.update_layout(height=height, margin=MARGIN, legend=dict(orientation="h", y=1.1, x=0),
                      xaxis_title=f"sum over the group:<br>{axis_label(metric, 3)}",
                      # one short line: in a half column (274 px at 1024 px) a second took the x title's room, and
                      # "actual change of FID (validation split)" ran past the plot's height; the x title names the metric
                      yaxis_title="actual change (validation split)")
    fig.update_xaxes(**SCI_AXIS)
    fig.update_yaxes(**SCI_AXIS)
    return fig


CHECK_KINDS = {  # a check lane's kind -> (legend name, colour, marker); "high"/"low" named by the metric's sign
    "random": ("random groups", "#7f7f7f", "circle"), "harmful": ("most harmful 5%", HARMFUL, "diamond"),
    "helpful": ("most helpful 5%", HELPFUL, "diamond"), "single": ("random images", "#7f7f7f", "circle-open"),
    "top-single": ("largest |score|", "#9467bd", "square")}


def check_kind(kind: str, metric: str) -> str:
    """A stored lane kind in words: "high" / "low" sets become "harmful" / "helpful" by the metric's sign."""
    if kind in ("high", "low"):
        return "harmful" if kind == harmful_side(harmful_sign(metric)) else "helpful"
    return kind


def lane_name(kind: str, mixed: bool) -> str:
    """The legend's and the table's name of a lane kind (`check_kind`); mixed: a check whose "single" lanes were
    half the largest |scores| (`trust.mixed_singles`)."""
    return "random and largest |score|" if mixed and kind == "single" else CHECK_KINDS[kind][0]


def check_replays(lanes: list[dict], metric: str, mixed: bool = False, height: int = 460) -> go.Figure:
    """The spot check's replays: each lane's predicted change (the sum of its images' estimates) against the actual
    one (the lane minus lane 0 of the same replay), groups and single images side by side (their scales differ by
    the group's size); the diagonal is 'predicted = actual'. mixed: `trust.mixed_singles` of the check."""
    label, side = METRIC_LABELS[metric], "positive" if harmful_sign(metric) > 0 else "negative"
    panels = [("groups", lambda k: k not in ("single", "top-single")), ("single images", lambda k: k in
                                                                         ("single", "top-single"))]
    # one x title under both and the legend below them: side by side with a legend at the right, the two titles ran
    # over each other's tick labels in the Influence page's column at 1024 px
    fig = make_subplots(rows=1, cols=2, subplot_titles=[name for name, _ in panels], horizontal_spacing=0.14,
                        x_title=f"predicted: sum of their estimates ({side} = harmful)")
    for col, (_, keep) in enumerate(panels, start=1):
        mine = [lane for lane in lanes if keep(check_kind(lane["kind"], metric))]
        finite = [v for lane in mine for v in (lane["predicted"], lane["actual"]) if math.isfinite(v)]
        for kind, (_, color, symbol) in CHECK_KINDS.items():
            pts = [lane for lane in mine if check_kind(lane["kind"], metric) == kind]
            if pts:
                name = lane_name(kind, mixed)
                fig.add_scatter(x=[p["predicted"] for p in pts], y=[p["actual"] for p in pts], mode="markers",
                                name=name, marker=dict(size=9, color=color, symbol=symbol, opacity=0.85),
                                customdata=[p["size"] for p in pts], row=1, col=col,
                                hovertemplate="%{customdata} removed: predicted %{x:.3g}, actual %{y:.3g}"
                                              f"<extra>{name}</extra>")
        if finite:
            lo, hi = min(finite), max(finite)
            fig.add_scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="predicted = actual", row=1, col=col,
                            line=dict(dash="dash", color="#888"), showlegend=col == 1, hoverinfo="skip")
        fig.update_xaxes(row=1, col=col, **SCI_AXIS)
    fig.update_yaxes(title_text=f"actual change of {label}<br>(replay without them)", row=1, col=1, **SCI_AXIS)
    fig.update_yaxes(row=1, col=2, **SCI_AXIS)
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=TOOLBAR_TOP, b=10),
                      legend=dict(orientation="h", x=0, y=-0.3, yanchor="top"))
    return fig


def cleansing_curve(rows: list[dict], metric: str, height: int = 380) -> go.Figure:
    """Remove the top-k by the estimate, and k random: predicted and actual change against k (one replay)."""
    label = METRIC_LABELS[metric]
    better = "higher" if HIGHER_IS_BETTER[metric] else "lower"
    fig = go.Figure()
    fig.add_hline(y=0, line=dict(color="#888", dash="dash"))
    styles = {"top": ("most harmful first", HARMFUL), "random-k": ("random", "#7f7f7f")}
    for kind, (name, color) in styles.items():
        kept = sorted((r for r in rows if r["kind"] == kind), key=lambda r: r["size"])
        if not kept:
            continue
        x = [r["size"] for r in kept]
        fig.add_scatter(x=x, y=[r["actual_valid"] for r in kept], mode="lines+markers", name=f"{name}: actual",
                        line=dict(color=color))
        fig.add_scatter(x=x, y=[r["predicted"] for r in kept], mode="lines+markers", name=f"{name}: predicted",
                        line=dict(color=color, dash="dot"))
    fig.update_layout(height=height, margin=MARGIN, legend=dict(orientation="h", y=-0.3, x=0),
                      xaxis_title="training instances removed",
                      yaxis_title=f"change of {label} (validation)<br>{better} = better")
    fig.update_yaxes(**SCI_AXIS)
    fig.update_xaxes(**whole_counts(r["size"] for r in rows))
    return fig


def whole_counts(counts) -> dict:
    """An axis of instances removed, ticked at the counts themselves (one k read "499, 499.5, 500, 500.5, 501":
    half an instance removed)."""
    return dict(tickvals=sorted({int(c) for c in counts}), tickformat=",d")
