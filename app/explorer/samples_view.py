"""The Generated samples page's parts: the pool's map (generated and training images in one embedding), sample
images, the responsible-images gallery with one click into the removal set, and the check's before/after; the
2D playground's pull figure (arrows drawn as annotations, which Plotly puts above its WebGL points)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from PIL import Image

from influence.samples import Explanation

from . import cache, cards, figures, state, tables

SAMPLE_PX = 84
# short enough for the select box at 1024 px (the grid's caption says what each is)
SORTS = {"clarity": "clarity", "realism": "realism", "nearest_distance": "distance to nearest training image"}
PICKED = "#ff7f0e"
REAL = "#9a9a9a"


def picked_key(run_id: str) -> str:
    return f"samples-picked:{run_id}"


def picked(run_id: str) -> list[int]:
    return st.session_state.get(picked_key(run_id), [])


def set_picked(run_id: str, ids) -> None:
    st.session_state[picked_key(run_id)] = sorted({int(i) for i in ids})


def toggle(run_id: str, i: int) -> None:
    set_picked(run_id, set(picked(run_id)) ^ {int(i)})


def pngs(images: np.ndarray, px: int = SAMPLE_PX) -> list[bytes]:
    """PNG bytes of images in [-1, 1] (n, C, H, W), upscaled with nearest neighbour."""
    out = []
    for img in images:
        arr = ((img + 1.0) * 127.5).clip(0, 255).round().astype(np.uint8)
        arr = arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)
        buf = io.BytesIO()
        Image.fromarray(arr).resize((px, px), Image.Resampling.NEAREST).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def map_figure(train_map: np.ndarray, table, chosen: list[int], color_by: str, height: int = 520) -> go.Figure:
    """Training images (grey, trace 0) and the pool's samples (trace 1, coloured by `color_by`; picked ones
    ringed) on the same PCA plane of the feature-net features."""
    fig = go.Figure()
    fig.add_scattergl(x=train_map[:, 0], y=train_map[:, 1], mode="markers", name="training images",
                      marker=dict(size=3, color=REAL, opacity=0.35), hoverinfo="skip")
    values = table[color_by].to_numpy()
    fig.add_scattergl(x=table["map_x"], y=table["map_y"], mode="markers", name="generated samples",
                      customdata=table["sample"], marker=dict(size=8, color=values, colorscale="Viridis",
                                                              colorbar=dict(title=dict(text=color_by, side="right")),
                                                              line=dict(width=0.5, color="#333")),
                      hovertemplate="sample %{customdata}<br>" + color_by + " %{marker.color:.3g}<extra></extra>")
    if chosen:
        rows = table.iloc[chosen]
        fig.add_scattergl(x=rows["map_x"], y=rows["map_y"], mode="markers", name="picked",
                          marker=dict(size=15, color="rgba(0,0,0,0)", line=dict(width=2.5, color=PICKED)),
                          hoverinfo="skip")
    fig.update_layout(height=height, margin=figures.MARGIN, dragmode="lasso",
                      legend=dict(orientation="h", y=1.08, x=0), xaxis_title="map axis 1 (PCA of the features)",
                      yaxis_title="map axis 2")
    return fig


def value_text(explanation: Explanation, sample: int) -> str:
    rows = np.flatnonzero(explanation.row_sample == sample)
    return ", ".join(f"{explanation.meta['row_labels'][r].split(' ', 2)[-1] if explanation.is_vector else explanation.kind}"
                     f" {explanation.values[r]:.3g}" for r in rows)


CARD_PX = cache.THUMB_PX + 32  # a responsible image's card: its thumbnail and 1 rem of padding a side


def responsible_gallery(root: Path, run_id: str, explanation: Explanation, sample: int, k: int, side: str,
                        dataset, key: str) -> list[int]:
    """The sample's k most responsible training images on one side (only those whose influence is on that side),
    as cards (image, id, label, path, influence), with a button that adds all of them to the removal set.
    Returns their ids."""
    strength = explanation.strength(sample) * (-1 if side == "helpful" else 1)
    ids = [int(i) for i in explanation.responsible(sample, k, side) if strength[i] > 0]
    if not ids:
        st.caption("No training image has an influence on this side.")
        return []
    rows = explanation.sample_rows(sample)
    labels, names, paths = dataset.train.y, dataset.class_names, dataset.train_paths
    thumbs = cache.thumbnails(str(root), run_id, tuple(ids), cache.THUMB_PX)
    width = cache.CARD_PX if paths else CARD_PX  # own images: room for a file name on the card's line
    with cards.grid(width) as card_grid:  # cards of a fixed width, as many a line as the window holds
        files = cards.shown_names([paths[j] for j in ids], width) if paths else [None] * len(ids)
        for j, png, file in zip(ids, thumbs, files, strict=True):
            with card_grid.container(border=True, width=width):
                st.image(png)
                cards.heading(f"#{j}", figures.class_label(int(labels[j]), names) if labels is not None else None,
                              width)
                if paths:
                    cards.file_line(paths[j], file)
                st.caption(" / ".join(("+" if v > 0 else "") + tables.sci(float(v)) for v in rows[:, j]))
    in_set = set(state.removal(root, run_id))
    missing = [j for j in ids if j not in in_set]
    st.button(f"Add these {len(ids)} to the removal set" if missing else f"All {len(ids)} are in the removal set",
              key=f"add-{key}", icon=":material/add_box:", disabled=not missing,
              on_click=state.add_to_removal, args=(root, run_id, ids))
    return ids


STAR_RADIUS = 7  # px: the chosen point's marker; arrows keep clear of it


def pull_figure(train_xy: np.ndarray, generated: np.ndarray, chosen: int | None, pullers: np.ndarray | None = None,
                vectors: np.ndarray | None = None, actual: np.ndarray | None = None, magnification: float = 1.0,
                height: int = 560) -> go.Figure:
    """The 2D toy: training points (grey, trace 0) and generated points (green, trace 1; click one). For the
    chosen point: a line from each pulling training point, and its predicted displacement if they are removed
    (orange arrow, the sum of theirs) beside the actual one after a replay without them (black), both drawn
    `magnification` times longer. Arrows are annotations: Plotly draws those above its WebGL layer. Every marker
    trace is WebGL: an SVG trace (the star) would be drawn under the WebGL points."""
    fig = go.Figure()
    fig.add_scattergl(x=train_xy[:, 0], y=train_xy[:, 1], mode="markers", name="training points",
                      marker=dict(size=3, color=REAL, opacity=0.4), hoverinfo="skip")
    fig.add_scattergl(x=generated[:, 0], y=generated[:, 1], mode="markers", name="generated points (click one)",
                      customdata=np.arange(len(generated)), marker=dict(size=7, color=figures.GENERATED),
                      hovertemplate="generated point %{customdata}<extra></extra>")
    if chosen is not None:
        g = generated[chosen]
        if pullers is not None and vectors is not None:
            lengths = np.linalg.norm(vectors, axis=1)
            width = 0.6 + 2.4 * lengths / (lengths.max() or 1.0)
            for j, w in zip(pullers, width):
                fig.add_annotation(x=g[0], y=g[1], ax=train_xy[j, 0], ay=train_xy[j, 1], xref="x", yref="y",
                                   axref="x", ayref="y", showarrow=True, arrowhead=2, arrowsize=0.8,
                                   arrowwidth=float(w), arrowcolor="rgba(214, 39, 40, 0.55)", text="",
                                   standoff=STAR_RADIUS)  # annotations cover traces: stop short of the star
            fig.add_scattergl(x=train_xy[pullers, 0], y=train_xy[pullers, 1], mode="markers", name="pulling points",
                              marker=dict(size=8, color=figures.HARMFUL, line=dict(width=1, color="#400")),
                              customdata=pullers, hovertemplate="training point #%{customdata}<extra></extra>")
            _arrow(fig, g, g + magnification * vectors.sum(0), figures.CLEANSED, "predicted", 6.0, 1)
        if actual is not None:  # thinner, on top of the predicted one: both stay visible where they agree
            _arrow(fig, g, g + magnification * actual, "#111111", "actual", 2.0, -1)
        fig.add_scattergl(x=[g[0]], y=[g[1]], mode="markers", name="chosen point", hoverinfo="skip",
                          marker=dict(size=2 * STAR_RADIUS, color=figures.GENERATED, symbol="star",
                                      line=dict(width=1.5, color="#111")))
    fig.update_layout(height=height, margin=figures.MARGIN, legend=dict(orientation="h", y=1.08, x=0),
                      xaxis_title="x₁", yaxis_title="x₂", clickmode="event+select")
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    return fig


def _arrow(fig: go.Figure, start: np.ndarray, end: np.ndarray, color: str, text: str, width: float,
           side: int) -> None:
    """An arrow from the chosen point (clear of its star) and its label at the head, off to the arrow's left
    (`side` 1) or right (-1): the two labels sit on either side of the arrows, so where the arrows agree they
    neither cover each other (on rows beyond the heads they did when one arrow was longer) nor their shafts."""
    fig.add_annotation(x=end[0], y=end[1], ax=start[0], ay=start[1], xref="x", yref="y", axref="x", ayref="y",
                       showarrow=True, arrowhead=3, arrowsize=max(0.6, 3.0 / width), arrowwidth=width,
                       arrowcolor=color, text="", startstandoff=STAR_RADIUS)
    d = end - start
    away = side * np.array([-d[1], d[0]]) / (np.linalg.norm(d) or 1.0)  # the normal on that side (equal axes)
    fig.add_annotation(x=end[0], y=end[1], xref="x", yref="y", showarrow=False, text=f"<b>{text}</b>",
                       font=dict(color=color, size=13),
                       xanchor="center" if abs(away[0]) < 0.3 else ("left" if away[0] > 0 else "right"),
                       yanchor="middle" if abs(away[1]) < 0.3 else ("bottom" if away[1] > 0 else "top"),
                       xshift=float(6 * away[0]), yshift=float(6 * away[1]),
                       bgcolor="rgba(255,255,255,0.7)")
