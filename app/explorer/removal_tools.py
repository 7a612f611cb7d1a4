"""Undo/redo of removal-set changes and named removal sets to switch between (the Inspect page's set column)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from influence.errors import ConfigError

from . import state, tables


def render(root: Path, run_id: str) -> None:
    row = st.container(horizontal=True)  # wraps in a narrow column instead of cutting the labels
    row.button("Undo", icon=":material/undo:", key="set-undo", disabled=not state.can_undo(run_id),
               on_click=state.undo, args=(root, run_id), help="the removal set before the last change", wrap=True)
    row.button("Redo", icon=":material/redo:", key="set-redo", disabled=not state.can_redo(run_id),
               on_click=state.redo, args=(root, run_id), wrap=True)
    saved = state.saved_sets(root, run_id)
    with st.expander(f"Saved sets ({len(saved)})", icon=":material/bookmarks:"):
        st.text_input("Name", key=f"set-name-{run_id}", placeholder="e.g. blurry sevens")
        st.button("Save the current set", key="set-save", on_click=_save, args=(root, run_id), width="stretch")
        if saved:
            name = st.selectbox("Saved set", list(saved), key=f"set-pick-{run_id}",
                                format_func=lambda n: f"{n} ({tables.plural(len(saved[n]), 'instance')})")
            load, delete = st.columns(2)
            load.button("Load", key="set-load", on_click=state.load_set, args=(root, run_id, name),
                        help="replaces the removal set (Undo brings the old one back)", width="stretch")
            delete.button("Delete", key="set-delete", on_click=state.delete_set, args=(root, run_id, name),
                          width="stretch")
        message = st.session_state.pop("set-msg", None)
        if message:
            (st.error if message[0] == "error" else st.success)(message[1])


def _save(root: Path, run_id: str) -> None:
    try:
        name = state.save_set(root, run_id, st.session_state.get(f"set-name-{run_id}", ""))
    except ConfigError as e:
        st.session_state["set-msg"] = ("error", f"Not saved: {e}.")
        return
    st.session_state["set-msg"] = ("success", f"Saved as '{name}'.")
