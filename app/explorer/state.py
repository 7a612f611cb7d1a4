"""The app's memory: the current run and each run's removal set.

Both live in `st.session_state` (this browser tab) and on disk, so a refresh, a second
tab or a restarted server starts where the user left off:
    <store>/_app_state.json             {"run_id": ..., "dismissed_jobs": [...], "seen_jobs": [...]}
    <store>/<run_id>/app/removal.json   {"ids": [...]}
removal.json goes through `store.Run` like every run file (atomic write, checksum in the
run's manifest, which is locked across processes, so a job writing its results meanwhile
is safe); an unreadable one counts as an empty set.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import streamlit as st

from influence import store
from influence.errors import StoreError

from . import cache

APP_STATE = "_app_state.json"
REMOVAL = "app/removal.json"


def root() -> Path:
    """The store (env GAN_INFLUENCE_STORE or ./runs), created if missing."""
    return store.store_root().resolve()


def read_app_state(root: Path) -> dict:
    path = root / APP_STATE
    if not path.exists():
        return {}
    try:
        state = store.read_json(path)
    except StoreError:
        return {}  # damaged: start afresh rather than refuse to open the app
    return state if isinstance(state, dict) else {}


def update_app_state(root: Path, **fields) -> None:
    state = read_app_state(root)
    state.update(fields)
    store.write_json(root / APP_STATE, state)


def finished_runs(root: Path) -> list[dict]:
    """Runs that finished training (newest first): the ones every page can work with."""
    return [r for r in cache.runs(str(root), cache.runs_stamp(root)) if r.get("summary") and "problem" not in r]


def current_run_id(root: Path) -> str | None:
    """This tab's run, else the last one chosen in any tab, else the newest finished run."""
    ids = [r["run_id"] for r in finished_runs(root)]
    for candidate in (st.session_state.get("run_id"), read_app_state(root).get("run_id")):
        if candidate in ids:
            st.session_state["run_id"] = candidate
            return candidate
    if ids:
        st.session_state["run_id"] = ids[0]
        return ids[0]
    return None


def set_current_run(root: Path, run_id: str) -> None:
    st.session_state["run_id"] = run_id
    update_app_state(root, run_id=run_id)


# ---------------------------------------------------------------- removal set
def removal(root: Path, run_id: str) -> list[int]:
    """The run's removal set, sorted ids."""
    key = f"removal:{run_id}"
    if key not in st.session_state:
        run = store.Run(root, run_id)
        ids: list[int] = []
        if run.exists(REMOVAL):
            try:
                ids = [int(i) for i in run.read_json(REMOVAL)["ids"]]
            except (StoreError, KeyError, TypeError, ValueError):
                ids = []  # unreadable: an empty set, rewritten on the next change
        st.session_state[key] = ids
    return st.session_state[key]


def set_removal(root: Path, run_id: str, ids: Iterable[int]) -> list[int]:
    clean = sorted({int(i) for i in ids})
    store.Run(root, run_id).write_json(REMOVAL, {"ids": clean})
    st.session_state[f"removal:{run_id}"] = clean
    return clean


def add_to_removal(root: Path, run_id: str, ids: Iterable[int]) -> list[int]:
    return set_removal(root, run_id, set(removal(root, run_id)) | {int(i) for i in ids})


def drop_from_removal(root: Path, run_id: str, ids: Iterable[int]) -> list[int]:
    return set_removal(root, run_id, set(removal(root, run_id)) - {int(i) for i in ids})


def toggle_removal(root: Path, run_id: str, instance: int) -> None:
    """Checkbox callback: flip one instance in or out of the removal set."""
    current = set(removal(root, run_id))
    current ^= {int(instance)}
    set_removal(root, run_id, current)


# ---------------------------------------------------------------- dismissed job panels
def dismissed_jobs(root: Path) -> set[str]:
    return set(read_app_state(root).get("dismissed_jobs", []))


def dismiss_job(root: Path, key: str) -> None:
    update_app_state(root, dismissed_jobs=sorted(dismissed_jobs(root) | {key}))


def undismiss_job(root: Path, key: str) -> None:
    if key in dismissed_jobs(root):
        update_app_state(root, dismissed_jobs=sorted(dismissed_jobs(root) - {key}))


def first_sight(root: Path, key: str) -> bool:
    """True once per job key (per store): for acting once on a finished job."""
    seen = set(read_app_state(root).get("seen_jobs", []))
    if key in seen:
        return False
    update_app_state(root, seen_jobs=sorted(seen | {key}))
    return True
