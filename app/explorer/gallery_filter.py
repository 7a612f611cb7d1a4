"""A score range picked by box-selecting bars of an influence histogram; the curate gallery shows only it.

Set from the chart's on_select callback (so a selection applies once, when made, and a
cleared filter stays cleared); the chart key carries a generation number so clearing
also removes the drawn box.
"""

from __future__ import annotations

import streamlit as st

from . import figures


def get(run_id: str) -> dict | None:
    return st.session_state.get(f"filter:{run_id}")


def chart_key(run_id: str, metric: str, where: str) -> str:
    return f"hist-{where}-{run_id}-{metric}-{st.session_state.get(f'filter-gen:{run_id}', 0)}"


def on_select(run_id: str, metric: str, key: str) -> None:
    """on_select callback of a histogram: its box's x-range becomes the filter (an empty selection clears it)."""
    rng = figures.selected_x_range(st.session_state.get(key))
    if rng is None:
        st.session_state.pop(f"filter:{run_id}", None)
    else:
        st.session_state[f"filter:{run_id}"] = {"metric": metric, "range": rng}


def clear(run_id: str) -> None:
    st.session_state.pop(f"filter:{run_id}", None)
    st.session_state[f"filter-gen:{run_id}"] = st.session_state.get(f"filter-gen:{run_id}", 0) + 1


def histogram(run_id: str, scores, metric: str, where: str, log_y: bool, height: int = 330):
    """An influence histogram whose box selection sets the gallery filter."""
    key = chart_key(run_id, metric, where)
    return st.plotly_chart(figures.influence_histogram(scores, metric, log_y=log_y, height=height), key=key,
                           on_select=lambda: on_select(run_id, metric, key), selection_mode=("box",))


def show_ids(run_id: str, ids: list[int], where: str) -> None:
    """Show just these instances in the gallery (the Inspect page filters by this selection); `where` names the
    chart they were picked on, for the page to say so."""
    st.session_state[f"map-sel:{run_id}"] = [int(i) for i in ids]
    st.session_state[f"map-sel-from:{run_id}"] = where
    st.session_state["view"] = "Gallery"
