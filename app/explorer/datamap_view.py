"""The Inspect page's map of the data: a 2D embedding of the run's feature-net features, coloured by
influence; a box or lasso selection goes to the gallery or the removal set; "similar images" lists an
instance's nearest neighbours in feature space with their influences.

Points are drawn with WebGL and carry only their id (trace order = training id), so 50k of them
serialise quickly; the embedding itself is cached in the run (influence.datamap).
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from influence import datamap
from influence.metrics import METRIC_LABELS, harmful_sign

from . import cache, cards, figures, gallery_filter, instance_view, state
from .numbers import SCI_COLORBAR

TSNE_SLOW_N = 10_000  # above this t-SNE takes minutes; the page says so before starting it
SIMILAR = 8  # neighbours shown for the chosen image


def map_figure(coords: np.ndarray, scores: np.ndarray, metric: str, removed: np.ndarray | None = None,
               height: int = 520) -> go.Figure:
    limit = float(np.percentile(np.abs(scores), 99)) or 1e-12
    side = "positive" if harmful_sign(metric) > 0 else "negative"
    fig = go.Figure()
    fig.add_scattergl(
        x=coords[:, 0], y=coords[:, 1], mode="markers", name="training images", customdata=np.arange(len(coords)),
        marker=dict(size=4, opacity=0.8, color=scores, cmin=-limit, cmax=limit, cmid=0,
                    colorscale="RdBu_r" if harmful_sign(metric) > 0 else "RdBu",
                    colorbar=dict(title=dict(text=f"influence on {METRIC_LABELS[metric]}<br>{side} (red) = harmful",
                                             side="right"), **SCI_COLORBAR)),
        hovertemplate="#%{customdata}<br>influence %{marker.color:.2e}<extra></extra>")
    if removed is not None and len(removed):
        fig.add_scattergl(x=coords[removed, 0], y=coords[removed, 1], mode="markers", name="in the removal set",
                          marker=dict(size=7, symbol="x-thin-open", color="#222", line=dict(width=1)), hoverinfo="skip")
    fig.update_layout(height=height, margin=figures.MARGIN, dragmode="lasso", legend=dict(orientation="h", y=1.08, x=0),
                      xaxis_title="map axis 1", yaxis_title="map axis 2")
    return fig


MAP = "on the map"


def selection(run_id: str) -> list[int] | None:
    """Ids picked for the gallery (on the map, or on the Influence page's scatter: gallery_filter.show_ids), or None."""
    return st.session_state.get(f"map-sel:{run_id}")


def selection_origin(run_id: str) -> str:
    """Where the selection was made ('on the map', 'in the IS-vs-FID scatter of the Influence page')."""
    return st.session_state.get(f"map-sel-from:{run_id}", MAP)


def clear_selection(run_id: str) -> None:
    st.session_state.pop(f"map-sel:{run_id}", None)
    st.session_state.pop(f"map-sel-from:{run_id}", None)


def render(root, run_id: str, results: dict, metric: str, dataset, removal: list[int]) -> None:
    n = dataset.n_train
    method = st.segmented_control("Embedding of the feature-net features", list(datamap.METHODS), default="pca",
                                  format_func=datamap.METHOD_LABELS.get, key=f"map-method-{run_id}") or "pca"
    run_dir = root / run_id
    if method == "tsne" and n > TSNE_SLOW_N and not (run_dir / "map" / "tsne.npy").exists():
        st.info(f"t-SNE of {n} instances takes minutes (once; then it is cached with the run).")
        if not st.button("Compute t-SNE", key=f"tsne-go-{run_id}"):
            return
    coords, feats = cache.map_data(str(root), run_id, method)
    scores = results[metric].scores
    st.caption(f"Each dot is a training image placed by {datamap.METHOD_LABELS[method]} of the features the metric "
               f"uses; colour = influence on {METRIC_LABELS[metric]} (red = harmful). Draw a box or lasso to pick images.")
    key = f"map-{run_id}-{method}-{metric}"
    event = st.plotly_chart(map_figure(coords, scores, metric, np.asarray(removal, dtype=np.int64)), key=key,
                            on_select="rerun", selection_mode=("box", "lasso", "points"))
    picked = figures.selected_point_indices(event)
    if picked:
        a, b = st.columns(2)  # room for the whole labels
        a.button(f"Show the {len(picked)} selected in the gallery", on_click=gallery_filter.show_ids,
                 args=(run_id, picked, MAP), icon=":material/grid_view:", wrap=True)
        b.button(f"Add the {len(picked)} selected to the removal set", icon=":material/add_box:",
                 on_click=state.add_to_removal, args=(root, run_id, picked), wrap=True)
        st.caption(f"{len(picked)} selected; harmful on {METRIC_LABELS[metric]}: "
                  f"{int((scores[picked] * harmful_sign(metric) > 0).sum())}")

    st.subheader("Similar images")
    default = picked[0] if picked else int(np.argmax(scores * harmful_sign(metric)))
    i = int(st.number_input("Instance id", 0, n - 1, default, key=f"similar-{run_id}",
                            help="Its nearest neighbours in the feature space of the map, with their influences"))
    ids, dist = datamap.nearest(feats, i, SIMILAR)
    row = [i, *ids.tolist()]
    st.caption(f"The chosen image and its {SIMILAR} nearest neighbours in the features the map uses. d = the "
               "neighbour's distance to the chosen image in that feature space (Euclidean; 0 = the same features; "
               "compare the values with each other, they have no unit of their own).")
    thumbs = cache.thumbnails(str(root), run_id, tuple(row), cache.THUMB_PX)
    paths = dataset.train_paths
    in_set = set(removal)
    names = cards.shown_names([paths[j] for j in row], cache.CARD_PX) if paths else [None] * len(row)
    with cards.grid(cache.CARD_PX) as grid:  # fixed-width cards that wrap: numbers stay on one line
        for j, png, d, name in zip(row, thumbs, [0.0, *dist.tolist()], names, strict=True):
            line = f"**#{j}**" + (" (chosen)" if j == i else f" · d = {d:.2g}")
            instance_view.gallery_card(grid, root, run_id, results, j, png, lambda line=line: st.markdown(line),
                                       paths[j] if paths else None, name, in_set, "similar-pick")
    st.button(f"Add the {SIMILAR} neighbours to the removal set", key=f"similar-add-{run_id}",
              on_click=state.add_to_removal, args=(root, run_id, ids.tolist()), icon=":material/add_box:")
