"""The 2D playground's 'Pull a point' tab: click a generated point; the training points that pull
it most (the largest predicted displacements if removed, influence on its position) point at it, with the
predicted displacement of removing all of them; a replay without them gives the actual one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from influence import classroom, store
from influence.samples import check, explain

from . import cache, figures, samples_view, tables

PULLERS = 20


def render(root: Path, run_id: str, train_xy: np.ndarray) -> None:
    st.markdown(f"Click a **generated point** (green). The influence of each training point on its *position* is a "
                f"displacement: where the point would move if that training point were removed. Red arrows come "
                f"from the {PULLERS} training points that move it most; the orange arrow is the predicted "
                "displacement of removing all of them (the sum of theirs). **Replay without them** re-runs the "
                "traced steps without those points and draws the actual displacement (black).")
    run = store.open_run(root, run_id)
    pool = cache.sample_pool(str(root), run_id)
    key = f"pull-{run_id}"

    def on_click() -> None:
        sel = figures.selected_point_indices(st.session_state.get(f"{key}-chart"), curve=1)
        if sel:
            st.session_state[f"{key}-point"] = sel[0]

    point = st.session_state.get(f"{key}-point")
    pullers = vectors = actual = None
    factor = 1.0
    result = None
    if point is not None:
        with st.spinner(f"Estimating the influence of every training point on generated point {point} ..."):
            e = explain(run, {"pool": [int(point)]}, "position")
        pullers = e.responsible(0, PULLERS)
        vectors = e.sample_rows(0)[:, pullers].T
        done = st.session_state.setdefault(f"{key}-replayed", {})
        if point in done:
            result = done[point]
            top = next(lane for lane in result["lanes"] if lane["kind"] == "top")
            actual = np.asarray(top["actual"])
        shifts = np.stack([vectors.sum(0)] + ([actual] if actual is not None else []))
        factor = classroom.magnification(shifts, 0.6 * float(np.ptp(train_xy[:, 0])) / 4)
    chart, side = st.columns([3, 1])
    chart.plotly_chart(samples_view.pull_figure(train_xy, pool.generated, point, pullers, vectors, actual, factor),
                       key=f"{key}-chart", on_select=on_click, selection_mode=("points",))
    with side:
        if point is None:
            st.info("Click a generated point in the chart.", icon=":material/touch_app:")
            return
        predicted = vectors.sum(0)
        st.metric(f"predicted displacement of point {point}", tables.sci(float(np.linalg.norm(predicted))),
                  help=f"if its {PULLERS} most pulling training points are removed")
        if st.button("Replay without them", type="primary", icon=":material/replay:", key=f"{key}-go", wrap=True):
            with st.spinner("Replaying the traced steps without them ..."):
                st.session_state[f"{key}-replayed"][point] = check(run, e, [0], PULLERS)
            st.rerun()
        if actual is not None:
            s = result["summary"]
            st.metric("actual displacement", tables.sci(float(np.linalg.norm(actual))))
            st.metric("cosine, predicted vs actual", f"{s['cosine'][0]:.3f}")
            st.metric("length ratio, actual / predicted", f"{s['length_ratio'][0]:.2f}")
        st.caption(f"Arrows at the chosen point are drawn **{factor:,.0f}x** longer than the displacement; red "
                   "arrows are thicker for the points that move it more.")
