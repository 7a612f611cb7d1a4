"""Figures of the 2D playground's classroom lessons (influence.classroom computes what they show)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from influence.metrics import METRIC_LABELS, harmful_sign

from .figures import CLEANSED, GENERATED, HARMFUL, HELPFUL, MARGIN, axis_label
from .numbers import SCI_AXIS, SCI_COLORBAR

NEUTRAL = "#b8b8b8"  # influence near 0: visible grey on the white background (not white on white)
OUTLINE = dict(width=0.5, color="rgba(40, 40, 40, 0.45)")


def influence_colorscale(metric: str) -> list[list]:
    """Helpful blue -> neutral grey -> harmful red, oriented by the metric's harmful sign."""
    low, high = (HELPFUL, HARMFUL) if harmful_sign(metric) > 0 else (HARMFUL, HELPFUL)
    return [[0.0, low], [0.5, NEUTRAL], [1.0, high]]


def influence_marker(scores: np.ndarray, metric: str, colorbar_x: float | None = None) -> dict:
    """Marker of points coloured by influence (range clipped at the 99th percentile of |influence|)."""
    limit = float(np.percentile(np.abs(scores), 99)) or 1e-12
    side = "positive" if harmful_sign(metric) > 0 else "negative"
    bar = dict(title=dict(text=f"influence on {METRIC_LABELS[metric]}<br>{side} (red) = harmful", side="right"),
               **SCI_COLORBAR)
    if colorbar_x is not None:
        bar["x"] = colorbar_x
    return dict(size=5, opacity=0.85, color=scores, cmin=-limit, cmax=limit, cmid=0,
                colorscale=influence_colorscale(metric), line=OUTLINE, colorbar=bar)


def add_shift_arrows(fig: go.Figure, before: np.ndarray, after: np.ndarray, magnification: float,
                     name: str = "generated") -> None:
    """Generated points before (dots) and arrows over them to where they move, drawn `magnification` times longer.

    All WebGL: Plotly draws every WebGL trace above every SVG one, so arrows drawn as SVG under
    WebGL training points cannot be seen. Heads are triangles turned along each shift (the axes
    are square: data angles are screen angles)."""
    head = before + magnification * (after - before)
    xs = np.column_stack([before[:, 0], head[:, 0], np.full(len(before), np.nan)]).ravel()
    ys = np.column_stack([before[:, 1], head[:, 1], np.full(len(before), np.nan)]).ravel()
    shift = head - before
    angle = np.degrees(np.arctan2(shift[:, 0], shift[:, 1]))  # clockwise from "up", as Plotly turns markers
    factor = f"{magnification:,.0f}" if magnification >= 1 else f"{magnification:g}"
    label = f"shift of the {name} points,<br>drawn {factor}x"  # one line would run under the colour bar at 1024 px
    fig.add_scattergl(x=xs, y=ys, mode="lines", name=label, legendgroup="shift", hoverinfo="skip",
                      line=dict(color=CLEANSED, width=1), opacity=0.9)
    fig.add_scattergl(x=head[:, 0], y=head[:, 1], mode="markers", name=label, legendgroup="shift", showlegend=False,
                      hoverinfo="skip", marker=dict(symbol="triangle-up", angle=angle, size=7, color=CLEANSED),
                      opacity=0.9)
    fig.add_scattergl(x=before[:, 0], y=before[:, 1], mode="markers", name=f"{name} points (before)",
                      marker=dict(size=5, color=GENERATED, line=OUTLINE))


def one_point_figure(train_xy: np.ndarray, instance: int, before: np.ndarray, after: np.ndarray,
                     magnification: float, height: int = 520) -> go.Figure:
    fig = go.Figure()
    fig.add_scattergl(x=train_xy[:, 0], y=train_xy[:, 1], mode="markers", name="training points (click one)",
                      customdata=np.arange(len(train_xy)), marker=dict(size=4, color="#c9c9c9", line=OUTLINE),
                      hovertemplate="#%{customdata}<br>(%{x:.2f}, %{y:.2f})<extra></extra>")
    add_shift_arrows(fig, before, after, magnification)
    _mark(fig, train_xy[instance], f"removed: #{instance}")
    _square(fig, height)
    return fig


def _mark(fig: go.Figure, xy: np.ndarray, name: str, clickable: bool = True) -> None:
    """One point marked with a black cross (WebGL, so it is drawn above the other WebGL points); not `clickable`:
    hover and clicks go to the point under it."""
    fig.add_scattergl(x=[xy[0]], y=[xy[1]], mode="markers", name=name, marker=dict(size=16, symbol="x", color="#111"),
                      hoverinfo=None if clickable else "skip")


def click_figure(train_xy: np.ndarray, scores: np.ndarray | None, metric: str, chosen: int | None = None,
                 height: int = 520) -> go.Figure:
    """Training points to click (trace 0), coloured by influence where known; the chosen one marked (trace 1)."""
    marker = influence_marker(scores, metric) if scores is not None else dict(size=5, color=NEUTRAL, line=OUTLINE)
    fig = go.Figure(go.Scattergl(x=train_xy[:, 0], y=train_xy[:, 1], mode="markers", name="training points",
                                 customdata=np.arange(len(train_xy)), marker=marker,
                                 hovertemplate="#%{customdata}<br>(%{x:.2f}, %{y:.2f})<extra></extra>"))
    if chosen is not None:
        _mark(fig, train_xy[chosen], f"chosen: #{chosen}", clickable=False)
        fig.update_layout(showlegend=True, legend=dict(orientation="h", y=1.08, x=0))
    _square(fig, height)
    fig.update_layout(clickmode="event+select", dragmode="pan")
    return fig


def two_colourings(train_xy: np.ndarray, first: tuple[str, np.ndarray], second: tuple[str, np.ndarray],
                   height: int = 440) -> tuple[go.Figure, go.Figure]:
    figs = []
    for metric, scores in (first, second):
        fig = go.Figure(go.Scattergl(x=train_xy[:, 0], y=train_xy[:, 1], mode="markers", name="training points",
                                     marker=influence_marker(scores, metric),
                                     hovertemplate="(%{x:.2f}, %{y:.2f})<br>%{marker.color:.2e}<extra></extra>"))
        _square(fig, height)
        fig.update_layout(title=dict(text=f"coloured by influence on {METRIC_LABELS[metric]}", font=dict(size=14)))
        figs.append(fig)
    return figs[0], figs[1]


def check_scatter(estimated: np.ndarray, actual: np.ndarray, metric: str, height: int = 300) -> go.Figure:
    fig = go.Figure(go.Scatter(x=estimated, y=actual, mode="markers", marker=dict(size=8), name="instances"))
    lo = float(np.nanmin([estimated.min(), actual.min()])) if len(actual) else 0.0
    hi = float(np.nanmax([estimated.max(), actual.max()])) if len(actual) else 1.0
    fig.add_scatter(x=[lo, hi], y=[lo, hi], mode="lines", line=dict(dash="dash", color="#888"), name="estimate = actual")
    fig.update_layout(height=height, margin=MARGIN, xaxis_title=axis_label(metric, lines=3, what="estimated"),
                      yaxis_title="actual (leave-one-out)", showlegend=False)  # 3 lines: 2/5 of a column
    fig.update_xaxes(**SCI_AXIS)
    fig.update_yaxes(**SCI_AXIS)
    return fig


def density_figure(real: np.ndarray, generated: np.ndarray, height: int = 520) -> go.Figure:
    """Density contours of the real data, the generator's samples on top: small and translucent, so that where
    they cover the data its contours still show through (opaque ones hid all but the outer two)."""
    fig = go.Figure(go.Histogram2dContour(x=real[:, 0], y=real[:, 1], colorscale="Blues", showscale=False,
                                          ncontours=12, name="real data density", showlegend=True,
                                          contours=dict(coloring="fill"), line=dict(width=1, color="#3b6fb0")))
    fig.add_scattergl(x=generated[:, 0], y=generated[:, 1], mode="markers", name="generated samples",
                      marker=dict(size=4, color=GENERATED, opacity=0.5))
    _square(fig, height)
    return fig


def _square(fig: go.Figure, height: int) -> None:
    fig.update_layout(height=height, margin=MARGIN, xaxis_title="x₁", yaxis_title="x₂",
                      legend=dict(orientation="h", y=1.02, yanchor="bottom", x=0))
    fig.update_yaxes(scaleanchor="x", scaleratio=1)


def curate_figure(train_xy: np.ndarray, scores: np.ndarray | None, metric: str, generated: np.ndarray | None,
                  cleansed: np.ndarray | None, magnification: float, removed: np.ndarray,
                  height: int = 560) -> go.Figure:
    """Training points (trace 0, for lasso selections) coloured by influence; the generated points, and
    after a cleanse arrows to where they moved; the removal set as crosses."""
    marker = influence_marker(scores, metric) if scores is not None else dict(size=5, color=NEUTRAL, line=OUTLINE)
    hover = "#%{customdata}<br>(%{x:.2f}, %{y:.2f})" + ("<br>influence %{marker.color:.2e}" if scores is not None else "")
    fig = go.Figure(go.Scattergl(x=train_xy[:, 0], y=train_xy[:, 1], mode="markers", name="training points",
                                 customdata=np.arange(len(train_xy)), marker=marker,
                                 hovertemplate=hover + "<extra></extra>"))
    if generated is not None and cleansed is not None:
        add_shift_arrows(fig, generated, cleansed, magnification)
    elif generated is not None:
        fig.add_scattergl(x=generated[:, 0], y=generated[:, 1], mode="markers", name="generated points",
                          marker=dict(size=5, color=GENERATED, line=OUTLINE))
    if removed.any():
        xy = train_xy[removed]
        fig.add_scattergl(x=xy[:, 0], y=xy[:, 1], mode="markers", name="in the removal set",
                          marker=dict(size=7, symbol="x-thin-open", color="#222", line=dict(width=1.5, color="#222")))
    _square(fig, height)
    fig.update_layout(dragmode="lasso")
    return fig


PAPER_FID_TAU = {1: 0.95, 5: 0.87, 10: 0.73, 20: 0.44}  # Terashita et al., MNIST, influence on FID


def accuracy_by_traced_epochs(stored: list[dict], traced_epochs: int) -> dict[tuple, list[dict]]:
    """Stored validations grouped by metric, n, selection and seed (the key's first four parts,
    '<metric>-n<N>-<selection>-s<seed>'), for groups validated at 2+ K.

    A validation without `trace_epochs` covered the whole trace: K = the run's traced epochs."""
    groups: dict[tuple, dict[int, dict]] = {}
    for v in stored:
        k = v.get("trace_epochs") or traced_epochs
        groups.setdefault((v["metric"], "-".join(v["key"].split("-")[:4])), {})[int(k)] = {**v, "k": int(k)}
    return {g: [by_k[k] for k in sorted(by_k)] for g, by_k in groups.items() if len(by_k) >= 2}


def trace_epochs_figure(groups: dict[tuple, list[dict]], height: int = 380) -> go.Figure:
    """Kendall tau and Pearson r (left axis) and the growth factor (right axis, log) against K."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for (metric, _), rows in groups.items():
        ks = [r["k"] for r in rows]
        label = f"{METRIC_LABELS[metric]}, n = {rows[0]['n']}"
        fig.add_scatter(x=ks, y=[r["kendall_tau"] for r in rows], mode="lines+markers", name=f"Kendall τ ({label})",
                        line=dict(color=HARMFUL), secondary_y=False)
        fig.add_scatter(x=ks, y=[r["pearson_r"] for r in rows], mode="lines+markers", name=f"Pearson r ({label})",
                        line=dict(color=HELPFUL, dash="dot"), secondary_y=False)
        fig.add_scatter(x=ks, y=[r.get("growth") for r in rows], mode="lines+markers", name=f"growth ({label})",
                        line=dict(color="#666", dash="dash"), secondary_y=True)
    fig.add_scatter(x=list(PAPER_FID_TAU), y=list(PAPER_FID_TAU.values()), mode="lines+markers",
                    name="paper: Kendall τ, FID on MNIST", line=dict(color="#aaa", width=3), secondary_y=False)
    fig.update_layout(height=height, margin=MARGIN, legend=dict(orientation="h", y=-0.25, x=0),
                      xaxis_title="traced epochs the estimate covers (the last K)")
    fig.update_yaxes(title_text="Kendall τ, Pearson r", range=[-0.2, 1.05], secondary_y=False)
    fig.update_yaxes(title_text="growth factor (log)", type="log", secondary_y=True)
    return fig
