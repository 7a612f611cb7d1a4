"""One training instance in detail: the image, its class and file (or place in MNIST), its score and harmful rank
per metric, the traced step that saw it, and where it was removed or checked (cleansing attempts, leave-one-out)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from influence.data import origin_text
from influence.estimator import FLAG_NAMES, FLAG_NEVER_TRACED
from influence.metrics import METRIC_LABELS
from influence.validation.trust import verdict

from . import cache, cards, figures, state, tables


def gallery_card(grid, root: Path, run_id: str, results: dict, i: int, png: bytes, heading: Callable[[], None],
                 path: str | None, shown: str | None, in_set: set, key: str) -> None:
    """A training image's card in a grid of cards (`cards.grid`): the image, its first line (`heading`), its file,
    its scores and a box that puts it into the removal set (widget key `key`-run-id-i-member)."""
    with grid.container(border=True, width=cache.CARD_PX):
        st.image(png)
        heading()
        if path is not None:
            cards.file_line(path, shown)
        st.caption(tables.score_lines(results, i, cache.verdicts_now(root, run_id)))
        member = i in in_set
        st.checkbox("remove", value=member, key=f"{key}-{run_id}-{i}-{int(member)}",
                    on_change=state.toggle_removal, args=(root, run_id, i))


def facts(root: Path, run_id: str, results: dict, frame: pd.DataFrame, i: int, check: dict | None = None) -> dict:
    """Everything the detail view says about instance i (no Streamlit calls: tested directly). `check`: the spot
    check of the result in use, whose single-image level says how far one image's score can be taken."""
    n = len(frame)
    row = frame.iloc[i]
    scores = []
    for metric, r in results.items():
        flag = int(r.flags[i])
        sign = r.meta["harmful_sign"]
        scores.append({
            "metric": METRIC_LABELS[metric], "influence": tables.sci(float(r.scores[i])),
            "side": "no estimate" if flag == FLAG_NEVER_TRACED else
            ("harmful" if r.scores[i] * sign > 0 else "helpful"),
            # the growth verdict (the table's flag; "metric uninformative" where the metric means nothing for the
            # run) is not a single image's accuracy: on mnist-adam with ReLU in float32 it read reliable where
            # leave-one-out gave tau 0.39 (FID) and 0.07 (IS); the check's single-image level is shown beside it
            "stability": row.get(f"flag_{metric}", FLAG_NAMES[flag]),
            "single images (check)": _single_level(verdict(r, check)),
            # last: in the Influence page's column at 1024 px the table scrolled the single-image level out of sight
            "harmful rank": f"{int(row[f'harmful_rank_{metric}'])} of {n}" if flag != FLAG_NEVER_TRACED else "-",
        })
    step, first_step, per_epoch = cache.traced_steps(str(root), run_id)
    t = int(step[i])
    seen = ("in no traced step: the estimate has nothing to say about it" if t < 0 else
            f"traced step {t} (training step {first_step + t + 1}, epoch {(first_step + t) // per_epoch + 1})")
    stamp = cache.files_stamp(root, run_id, "cleanse")
    removed_in = [f"{a['mode']}, {a['n_removed']} removed ({a['key']})" for a in cache.attempts(str(root), run_id, stamp)
                  if i in set(cache.removed_ids(str(root), run_id, a["key"]))]
    loo = []
    for v in cache.validations(str(root), run_id, cache.files_stamp(root, run_id, "validate")):
        hit = np.flatnonzero(np.asarray(v["ids"]) == i)
        if hit.size:
            loo.append(f"{METRIC_LABELS[v['metric']]}: estimated {tables.sci(float(v['estimated'][hit[0]]))}, "
                       f"actual {tables.sci(float(v['actual'][hit[0]]))} (leave-one-out, {v['key']})")
    return {"scores": scores, "seen": seen, "removed_in": removed_in, "loo": loo, "label": int(row["label"])}


def _single_level(v: dict) -> str:
    """The check's single-image level, and those its 8-16 images cannot rule out."""
    others = [level for level in v.get("singles_range", []) if level != v["singles"]]
    return v["singles"] + (f" ({' or '.join(others)} not ruled out)" if others else "")


def render(root: Path, run_id: str, results: dict, frame: pd.DataFrame, i: int, check: dict | None) -> None:
    dataset = cache.context(str(root), run_id).dataset
    info = facts(root, run_id, results, frame, i, check)
    left, right = st.columns([1, 3])
    with left:
        if dataset.is_image:
            st.image(cache.thumbnails(str(root), run_id, (i,), cache.GALLERY_PX * 2)[0])
        else:
            x = dataset.train.x[i].numpy()
            st.markdown(f"point ({x[0]:.3g}, {x[1]:.3g})")
    with right:
        title = f"**#{i}**"
        if info["label"] >= 0:
            title += f" · class {figures.class_label(info['label'], dataset.class_names)}"
        if dataset.is_image and (where := origin_text(dataset.origin(i))):  # its file, or its place in MNIST
            title += f" · {cards.plain(where)}"
        st.markdown(title)
        st.dataframe(pd.DataFrame(info["scores"]), hide_index=True)
        st.caption("stability: how much the traced steps amplify a perturbation (the growth of |u|); single images "
                   "(check): how well the spot check's single-image replays ranked as estimated. Take one image's "
                   "score as far as that level: trustworthy, rough, or noise.")
        st.caption(f"Seen first in {info['seen']}.")
        member = i in set(state.removal(root, run_id))
        st.caption(("In the removal set. " if member else "Not in the removal set. ")
                   + ("Removed in cleansing attempts: " + "; ".join(info["removed_in"]) + "."
                      if info["removed_in"] else "Removed in no cleansing attempt yet."))
        for line in info["loo"]:
            st.caption(line)
