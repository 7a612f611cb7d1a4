"""Inspect and curate: the most harmful / helpful training instances, and the removal set built from them."""

import math

import numpy as np
import pandas as pd
import streamlit as st

from explorer import (cache, cards, curation, datamap_view, figures, gallery_filter, instance_view, numbers,
                      removal_tools, state, tables, widgets)
from influence.baselines import METHOD_LABELS, methods_for
from influence.errors import ConfigError
from influence.estimator import FLAG_NEVER_TRACED, harmful_order
from influence.metrics import METRIC_LABELS
from influence.removal import removal_csv

root = state.root()
run_id, cfg = widgets.require_run(root)
results = widgets.require_results(root, run_id)
dataset = cache.context(str(root), run_id).dataset
labels = dataset.train.y.numpy() if dataset.train.y is not None else None
paths = dataset.train_paths  # own images: each instance's file, relative to the data folder
class_names = dataset.class_names
TABLE_HEADER_PX = 35  # a data editor's header row, whatever the rows' height
SET_PX = 180  # the set's column: its buttons side by side; at 200 the gallery held 1 card a line at 1024 px
PICK_LABELS = {**METHOD_LABELS, **{m: f"top harmful by {METRIC_LABELS[m]}" for m in METRIC_LABELS},
               "random": "random (seeded)"}

st.title("Inspect and curate")
st.markdown("Look at the instances the estimate calls most harmful (or most helpful) and put the ones you want "
            "gone into the **removal set**; the Cleanse page retrains without it. " + widgets.SIGN_NOTE)


# ---------------------------------------------------------------- callbacks (run before the page redraws)
def set_ids(ids) -> None:
    state.set_removal(root, run_id, ids)


def add_ids(ids) -> None:
    state.add_to_removal(root, run_id, ids)


def drop_ids(ids) -> None:
    state.drop_from_removal(root, run_id, ids)


def quick_fill() -> None:
    method, k, replace = st.session_state["qf-method"], int(st.session_state["qf-k"]), st.session_state["qf-replace"]
    order = harmful_order(results[method]) if method in results else cache.ranking(str(root), run_id, method, cfg.seed)
    (set_ids if replace else add_ids)(order[:k].tolist())


def import_csv() -> None:
    upload = st.session_state.get(f"import-{run_id}")
    if upload is None:
        st.session_state.pop(f"import-msg:{run_id}", None)
        return
    try:
        ids = curation.read_removal_upload(upload.getvalue(), dataset.n_train, paths, dataset.ambiguous_paths)
    except ConfigError as e:
        st.session_state[f"import-msg:{run_id}"] = ("error", f"Not imported: {e}. The removal set is unchanged.")
        return
    set_ids(ids)
    st.session_state[f"import-msg:{run_id}"] = ("success",
                                                f"Imported {len(ids)} ids from {upload.name}; they replace the set.")


removal = state.removal(root, run_id)
in_set = set(removal)
# The set's column at a fixed width, the gallery the rest: as a quarter of the page (3:1) it was 125 px at 1024 px
# (its prediction ten lines, Undo over Redo), and no ratio both widens it there and keeps 4 cards a line at 1440.
layout = st.container(horizontal=True, gap="medium", wrap=False)
gallery_col, set_col = layout.container(), layout.container(width=SET_PX)

# ---------------------------------------------------------------- gallery
with gallery_col:
    # A row that wraps: in fixed columns a narrow window cut "helpful" and "Gallery" off.
    controls = st.container(horizontal=True, vertical_alignment="bottom")
    sort_metric = controls.selectbox("Sort by influence on", list(results), format_func=METRIC_LABELS.get,
                                     key=f"sort-{run_id}", width=170)
    direction = controls.segmented_control("Most ... first", ["harmful", "helpful"], default="harmful",
                                            key="direction", wrap=False) or "harmful"
    classes = None
    if labels is not None and class_names:
        classes = controls.multiselect("Classes", list(range(len(class_names))), format_func=lambda c: class_names[c],
                                       key=f"classes-{run_id}", placeholder="all classes", width=200)
    views = ["Gallery", "Table", "Map"] if dataset.is_image else ["Table"]
    view = controls.segmented_control("View", views, default=views[0], key="view", wrap=False) or views[0]

    active = gallery_filter.get(run_id)
    with st.expander("Filter by influence range: drag a box over the bars", expanded=active is not None,
                     icon=":material/filter_alt:"):
        result = results[sort_metric]
        gallery_filter.histogram(run_id, result.scores[result.flags != FLAG_NEVER_TRACED], sort_metric, "curate",
                                 log_y=True, height=230)
    if active is not None:
        lo, hi = active["range"]
        f1, f2 = st.columns([4, 1])
        f1.info(f"Showing only {METRIC_LABELS[active['metric']]} influence between {numbers.sci(lo)} and "
                f"{numbers.sci(hi)}.",
                icon=":material/filter_alt:")
        f2.button("Clear filter", on_click=gallery_filter.clear, args=(run_id,), wrap=True)

    ids = curation.ordered_ids(results, sort_metric, direction == "helpful", labels, classes, active)
    picked_on_map = datamap_view.selection(run_id)
    if picked_on_map is not None:
        ids = ids[np.isin(ids, picked_on_map)]
        m1, m2 = st.columns([4, 1])
        m1.info(f"Showing only the {len(picked_on_map)} images selected {datamap_view.selection_origin(run_id)}.",
                icon=":material/scatter_plot:")
        m2.button("Clear selection", on_click=datamap_view.clear_selection, args=(run_id,), wrap=True)
    per_page = 25
    n_pages = max(1, math.ceil(len(ids) / per_page))
    paging = st.container(horizontal=True, vertical_alignment="center")
    # A new filter (box range, classes, map selection) is a new list: it opens on its first page.
    shown_by = hash((str(active), tuple(classes or ()), tuple(picked_on_map or ())))
    page = paging.number_input("Page", 1, n_pages, 1, key=f"page-{run_id}-{sort_metric}-{direction}-{shown_by}",
                               width=110)
    page_ids = [int(i) for i in ids[(page - 1) * per_page: page * per_page]]
    paging.caption(f"{len(ids)} instances match · page {page} of {n_pages}", width="content")
    paging.button("Add page to set", on_click=add_ids, args=(page_ids,), icon=":material/add_box:",
                  help="Put every instance shown on this page into the removal set")
    paging.button("Take page out", on_click=drop_ids, args=(page_ids,), icon=":material/indeterminate_check_box:",
                  help="Take every instance shown on this page out of the removal set")

    if view == "Map":
        datamap_view.render(root, run_id, results, sort_metric, dataset, removal)
    elif not page_ids:
        st.info("No instance matches the class and range filters.")
    elif view == "Gallery":
        thumbs = cache.thumbnails(str(root), run_id, tuple(page_ids), cache.GALLERY_PX)
        # Fixed-width cards in a wrapping row: five fixed columns squeezed a narrow window's numbers onto two lines.
        names = cards.shown_names([paths[i] for i in page_ids], cache.CARD_PX) if paths else [None] * len(page_ids)
        with cards.grid(cache.CARD_PX) as grid:
            for i, png, name in zip(page_ids, thumbs, names, strict=True):
                label = figures.class_label(int(labels[i]), class_names) if labels is not None else None
                instance_view.gallery_card(grid, root, run_id, results, i, png,
                                           lambda i=i, label=label: cards.heading(f"#{i}", label, cache.CARD_PX),
                                           paths[i] if paths else None, name, in_set, "pick")
    else:
        frame = pd.DataFrame({"remove": [i in in_set for i in page_ids], "id": page_ids})
        if paths:
            frame["path"] = [paths[i] for i in page_ids]
        elif dataset.original_set is not None:  # where to find the image outside this tool
            frame[f"{dataset.original_set} index"] = dataset.source_index[page_ids]
        if dataset.is_image:
            frame.insert(1, "image", cache.thumbnail_uris(str(root), run_id, tuple(page_ids)))
        else:
            xy = dataset.train.x[page_ids].numpy()
            frame["x₁"], frame["x₂"] = xy[:, 0], xy[:, 1]
        if labels is not None:
            frame["class"] = [figures.class_label(int(labels[i]), class_names) for i in page_ids]
        scores = [METRIC_LABELS[m] for m in results]
        for m, r in results.items():
            frame[METRIC_LABELS[m]] = r.scores[page_ids]
        row_px = cache.THUMB_PX + 6 if dataset.is_image else 35
        # The key follows the page and its ticks: after an edit is applied the editor starts afresh.
        key = f"editor-{run_id}-{hash((tuple(page_ids), tuple(frame['remove'])))}"
        edited = st.data_editor(
            frame, key=key, hide_index=True, disabled=[c for c in frame.columns if c != "remove"],
            # every row of the page and the 35 px header, no inner scroll (row_px for the header left an empty row)
            row_height=row_px, height=row_px * len(frame) + TABLE_HEADER_PX + 3,
            # The scores right after the id: a long path or class name pushed an own run's D-loss out of sight.
            column_order=[c for c in ("remove", "image", "id", *scores) if c in frame.columns]
            + [c for c in frame.columns if c not in ("remove", "image", "id", *scores)],
            column_config={
                "remove": st.column_config.CheckboxColumn("remove", help="tick to put it into the removal set"),
                "image": st.column_config.ImageColumn("image", width="small"),
                "path": st.column_config.TextColumn("path", width="medium"),
                **{METRIC_LABELS[m]: st.column_config.NumberColumn(METRIC_LABELS[m], format=numbers.SCI_FORMAT,
                                                                   help=r.meta["sign"]) for m, r in results.items()},
            })
        flipped = edited["remove"] != frame["remove"]
        if flipped.any():
            add_ids(edited.loc[flipped & edited["remove"], "id"].tolist())
            drop_ids(edited.loc[flipped & ~edited["remove"], "id"].tolist())
            st.rerun()

# ---------------------------------------------------------------- the removal set
with set_col:
    st.subheader("Removal set")
    st.metric("instances", len(removal), help="Saved with the run; a refresh keeps it.")
    widgets.removal_prediction(root, run_id, removal)
    removal_tools.render(root, run_id)
    if removal:
        counts = tables.class_counts(removal, labels, class_names)
        if len(counts):
            st.plotly_chart(figures.class_bar(counts), key="set-classes")
        st.dataframe(pd.DataFrame({"id": removal}), hide_index=True, height=160)
        st.download_button("Export CSV", removal_csv(removal, dataset, results, cache.verdicts_now(root, run_id)),
                           file_name=f"removal-{run_id}.csv",
                           mime="text/csv", on_click="ignore", icon=":material/download:", width="stretch")
        st.button("Clear", on_click=set_ids, args=([],), icon=":material/delete:", width="stretch")
        if st.button("Cleanse without this set", icon=":material/arrow_forward:", width="stretch", wrap=True,
                     key="to-cleanse"):
            st.switch_page(widgets.CLEANSE_PAGE)
    else:
        st.caption("Empty. Tick instances in the gallery, fill it below, or import a CSV.")

    with st.expander("Quick fill", expanded=not removal, icon=":material/bolt:"):
        methods = [m for m in methods_for(cfg.is_2d) if m in results or m not in METRIC_LABELS]
        st.selectbox("Pick", methods, index=methods.index(sort_metric), format_func=PICK_LABELS.get,
                     key="qf-method")
        st.number_input("How many", 1, dataset.n_train - 1, min(50, dataset.n_train - 1), key="qf-k")
        st.toggle("Replace the set (off: add to it)", value=True, key="qf-replace")
        st.button("Fill", on_click=quick_fill, type="primary", icon=":material/bolt:")

    # a popover, wider than this column: the upload box in an expander here was cut at 1024 and 1200 px
    with st.popover("Import a CSV of ids", icon=":material/upload:", width="stretch", wrap=True):
        st.caption("A CSV with an 'id' or a 'path' column, or one id per line. It replaces the current set; "
                   "a malformed file leaves the set as it is.")
        st.file_uploader("CSV file", type=["csv", "txt"], key=f"import-{run_id}", on_change=import_csv,
                         max_upload_size=curation.MAX_REMOVAL_BYTES >> 20)
    message = st.session_state.get(f"import-msg:{run_id}")  # another run's import says nothing here
    if message:
        (st.error if message[0] == "error" else st.success)(message[1])
