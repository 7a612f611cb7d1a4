"""The app's memory: the current run and each run's removal set.

Both live in `st.session_state` (this browser tab) and on disk, so a refresh, a second
tab or a restarted server starts where the user left off:
    <store>/_app_state.json             {"run_id": ..., "dismissed_jobs": [...], "seen_jobs": [...]}
    <store>/<run_id>/app/removal.json   {"ids": [...]}
    <store>/<run_id>/app/removal_sets.json   {"sets": {name: [ids]}}: named sets saved to switch between
Undo/redo of removal-set changes is per browser tab (session state).
removal.json goes through `store.Run` like every run file (atomic write, checksum in the
run's manifest, which is locked across processes, so a job writing its results meanwhile
is safe); an unreadable one counts as an empty set. Read-modify-writes (the app state, the
saved sets) hold a store lock, so two tabs never lose each other's change.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import streamlit as st

from influence import store
from influence.errors import ConfigError, StoreError

from . import cache

APP_STATE = "_app_state.json"
REMOVAL = "app/removal.json"
SAVED_SETS = "app/removal_sets.json"


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
    with store.exclusive(root / store.LOCKS / f"{APP_STATE}.lock", "the app's state"):  # two tabs: no lost update
        state = read_app_state(root)
        state.update(fields)
        store.write_json(root / APP_STATE, state)


def foreign_folders(root: Path) -> list[str]:
    """Folders in the store that are not runs (skipped by every listing; the sidebar names them)."""
    return store.foreign_folders(root)


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


def set_removal(root: Path, run_id: str, ids: Iterable[int], *, undoable: bool = True) -> list[int]:
    """Replace the run's removal set; the previous one goes onto this tab's undo stack (redo is cleared)."""
    clean = sorted({int(i) for i in ids})
    previous = removal(root, run_id)
    _write_removal(root, run_id, clean)
    if undoable and clean != previous:
        st.session_state.setdefault(f"removal-undo:{run_id}", []).append(previous)
        st.session_state[f"removal-redo:{run_id}"] = []
    return clean


def _write_removal(root: Path, run_id: str, ids: list[int]) -> None:
    store.Run(root, run_id).write_json(REMOVAL, {"ids": ids})
    st.session_state[f"removal:{run_id}"] = ids


def can_undo(run_id: str) -> bool:
    return bool(st.session_state.get(f"removal-undo:{run_id}"))


def can_redo(run_id: str) -> bool:
    return bool(st.session_state.get(f"removal-redo:{run_id}"))


def undo(root: Path, run_id: str) -> None:
    """Back to the removal set before the last change (this tab's history)."""
    _step(root, run_id, f"removal-undo:{run_id}", f"removal-redo:{run_id}")


def redo(root: Path, run_id: str) -> None:
    _step(root, run_id, f"removal-redo:{run_id}", f"removal-undo:{run_id}")


def _step(root: Path, run_id: str, source: str, target: str) -> None:
    stack = st.session_state.get(source) or []
    if stack:
        st.session_state.setdefault(target, []).append(removal(root, run_id))
        _write_removal(root, run_id, stack.pop())


# ---------------------------------------------------------------- named removal sets (saved with the run)
def saved_sets(root: Path, run_id: str) -> dict[str, list[int]]:
    """{name: ids} of the run's saved removal sets; an unreadable file counts as none."""
    run = store.Run(root, run_id)
    if not run.exists(SAVED_SETS):
        return {}
    try:
        sets = run.read_json(SAVED_SETS)["sets"]
        return {str(k): [int(i) for i in v] for k, v in sets.items()}
    except (StoreError, KeyError, TypeError, ValueError, AttributeError):
        return {}


def save_set(root: Path, run_id: str, name: str) -> str:
    """Save the current removal set under `name` (replacing a set of that name); returns the clean name."""
    name = name.strip()
    if not name:
        raise ConfigError("give the removal set a name")
    if len(name) > 80:
        raise ConfigError("a removal set name has at most 80 characters")
    run = store.Run(root, run_id)
    with run.exclusive("app-sets"):  # another tab saving a set meanwhile keeps its set
        sets = saved_sets(root, run_id) | {name: removal(root, run_id)}
        run.write_json(SAVED_SETS, {"sets": sets})
    return name


def load_set(root: Path, run_id: str, name: str) -> None:
    """Make a saved set the removal set (undoable)."""
    set_removal(root, run_id, saved_sets(root, run_id)[name])


def delete_set(root: Path, run_id: str, name: str) -> None:
    run = store.Run(root, run_id)
    with run.exclusive("app-sets"):
        sets = saved_sets(root, run_id)
        sets.pop(name, None)
        run.write_json(SAVED_SETS, {"sets": sets})


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
