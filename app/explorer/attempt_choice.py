"""Which cleansing attempt the Cleanse page shows: the one just computed, else the one the page says it shows.

The selectbox keeps the user's pick across reruns, but two events must override it: an attempt that
appeared since the last rerun (a job just finished: show its result), and a switch of the mode toggle
while the current set already has an attempt in that mode (the page says "its result is shown below").
"""

from __future__ import annotations

from collections.abc import MutableMapping


def widget_key(run_id: str) -> str:
    return f"attempt-{run_id}"


def new_keys(session: MutableMapping, run_id: str, keys: list[str]) -> list[str]:
    """Attempts that appeared since the last rerun (call before `pick`, which records what was seen)."""
    seen = session.get(f"attempts-seen:{run_id}")
    return [k for k in keys if seen is not None and k not in seen]


def pick(session: MutableMapping, run_id: str, keys: list[str], current_key: str, mode: str) -> str | None:
    """The attempt to force into the selectbox now (also written to its state), or None to keep the user's."""
    seen_key, mode_key, widget = f"attempts-seen:{run_id}", f"attempts-mode:{run_id}", widget_key(run_id)
    new, last_mode = new_keys(session, run_id, keys), session.get(mode_key)
    session[seen_key], session[mode_key] = list(keys), mode
    if new:
        choice = current_key if current_key in new else new[-1]
    elif current_key in keys and (mode != last_mode or session.get(widget) not in keys):
        choice = current_key
    elif session.get(widget) in keys:
        return None
    else:
        choice = keys[-1]  # nothing chosen yet and no attempt for this set: the newest
    session[widget] = choice
    return choice
