"""Generated samples: why did the GAN make this? Pick samples (grid or map), explain them (the training images
responsible, one click into the removal set), check the explanation by replays."""

import hashlib

import numpy as np
import streamlit as st
from explorer import cache, cards, jobpanel, samples_view, state, tables, widgets

from influence import store
from influence.context import fixed_latents, resolve_device
from influence.estimator import EstimateOptions, rows_per_product
from influence.objectives.samples import KIND_LABELS, reference_image
from influence.samples import find, stored
from influence.samples.check import check_key
from influence.samples.latents import POOL_SIZE
from influence.specs import explain_spec

root = state.root()
run_id, cfg = widgets.require_run(root)
st.title("Generated samples")
st.markdown("Why did the GAN make this? Pick generated samples, then **Explain**: the influence of every training "
            "image on each sample's *objective* = the predicted change of the objective if the image were removed. "
            "**Harmful** = removal would move it the way you want (realism, clarity and closeness to a reference: "
            "up); these are the images responsible for what you see. **Check** replays the traced steps without "
            "them (and without as many random images) and shows the samples at the same z before and after.")
if cfg.is_2d:
    st.info("This is a 2D run: its generated points are explained on the 2D playground (tab 'Pull a point').",
            icon=":material/scatter_plot:")
    st.page_link(widgets.PLAYGROUND_PAGE, label="Go to the 2D playground", icon=":material/arrow_forward:")
    st.stop()

run = store.open_run(root, run_id)
ctx = cache.context(str(root), run_id)
dataset = ctx.dataset
pool = cache.sample_pool(str(root), run_id)
table = pool.table
has_classifier = ctx.features is not None and ctx.features.has_probs
CHECK_PX = 112  # the before/after images of a check
CARD_PX = 124  # a grid card: its longest caption line ("nearest #12345") and 1 rem of padding a side
GRID_CHARS = int((CARD_PX - cards.PADDING_PX) / cards.CAPTION_CHAR_PX)
DESCRIBE = {"clarity": "clarity: the classifier's log-probability of the sample's class (blurry or ambiguous "
                       "samples score low)",
            "realism": "realism: the trained discriminator's logit (held fixed)",
            "reference": "pull toward a reference image: minus the feature distance to it"}
kinds = ["clarity", "realism", "reference"] if has_classifier else ["realism", "reference"]

# the whole width: in a column, "pull toward the reference" was cut at 1024 px
kind = st.segmented_control("Objective", kinds, default=kinds[0], format_func=lambda k: KIND_LABELS[k],
                            key=f"samples-kind-{run_id}") or kinds[0]
st.caption(DESCRIBE[kind])
objective, reference_filter = kind, None
if kind == "reference":
    c1, c2 = st.columns(2)
    source = c1.radio("Reference", ["a training image", "an image of yours"], horizontal=True, key="samples-ref-src")
    if source == "a training image":
        rid = int(c2.number_input("Training image id", 0, dataset.n_train - 1, 0, key=f"samples-ref-id-{run_id}"))
        objective = f"reference:#{rid}"
        c2.image(cache.thumbnails(str(root), run_id, (rid,), cache.THUMB_PX)[0])
    else:
        upload = c2.file_uploader("PNG or JPEG", type=["png", "jpg", "jpeg"], key=f"samples-ref-up-{run_id}")
        if upload is None:
            st.info("Upload the image the samples should be compared with.", icon=":material/upload:")
            st.stop()
        data = upload.getvalue()
        rel = f"explain/_references/{hashlib.sha256(data).hexdigest()[:16]}{'.png' if upload.name.lower().endswith('png') else '.jpg'}"
        if not run.exists(rel):
            run.write(rel, data)
        objective = f"reference:{run.path(rel)}"
    reference_filter = {"reference": reference_image(ctx, objective.split(":", 1)[1])[1]}

chosen = samples_view.picked(run_id)

if has_classifier:
    with st.expander("Class share: which images make the GAN over- or under-produce a class?",
                     icon=":material/pie_chart:"):
        names = dataset.class_names or [f"class {c}" for c in range(10)]
        share_row = st.container(horizontal=True, gap="medium", vertical_alignment="bottom")  # wraps when narrow
        cls = share_row.selectbox("Class", range(len(names)), format_func=lambda c: names[c],
                                  key=f"samples-class-{run_id}", width=180)
        want = share_row.segmented_control("Wanted", ["back toward the data", "more", "less"],
                                           default="back toward the data",
                                           key=f"samples-want-{run_id}") or "back toward the data"
        share_objective = f"class:{cls}" + ("" if want == "back toward the data" else f":{want}")
        valid_z = fixed_latents(cfg)["valid"].numpy()
        if share_row.button("Explain the share", key=f"samples-class-go-{run_id}", icon=":material/psychology_alt:"):
            jobpanel.start(root, explain_spec(run_id, {"valid": True}, share_objective, EstimateOptions()))
            st.rerun()
        share = find(run, "class", valid_z, {"class": int(cls)} | ({} if want == "back toward the data" else {"want": want}))
        if share is None:
            st.caption(f"The mean soft share of {names[cls]} over the {len(valid_z)} validation z; Explain computes the "
                       "influence of every training image on it (one pass).")
        else:
            st.caption(f"{share.meta['label']}: {share.values[0]:.3f} now; {share.meta['sign']}.")
            samples_view.responsible_gallery(root, run_id, share, 0, 12, "harmful", dataset, f"class-h-{run_id}")

found = find(run, kind, pool.z[chosen], reference_filter) if chosen else None  # their stored explanation
# An explain job's progress at full width (the picked column is too narrow for it): in the Check section for a check
# of the explanation shown there, above the grid otherwise.
explain_job = jobpanel.latest(root, "explain", run_id)
job_params = explain_job["spec"]["params"] if explain_job is not None else {}
check_job = explain_job if (found is not None and "check" in job_params and job_params["samples"] == {"pool": chosen}
                            and job_params["objective"] == objective) else None
if explain_job is not None and check_job is None:
    jobpanel.panel(root, explain_job)

# ---------------------------------------------------------------- pick
pick_col, side = st.columns([4, 1], gap="medium")  # 3 grid cards a line at 1024 px
with pick_col:
    grid_tab, map_tab = st.tabs(["Grid", "Map"])
    with grid_tab:
        controls = st.container(horizontal=True, gap="medium")  # fixed widths that wrap when narrow
        sorts = [s for s in samples_view.SORTS if s != "clarity" or has_classifier]
        sort = controls.selectbox("Sort by", sorts, format_func=samples_view.SORTS.get, key=f"samples-sort-{run_id}",
                                  width=300)
        lowest = controls.segmented_control("Order", ["lowest first", "highest first"], default="lowest first",
                                            key=f"samples-order-{run_id}") != "highest first"
        per_page = 30
        order = table.sort_values(sort, ascending=lowest, kind="stable")["sample"].to_numpy()
        n_pages = int(np.ceil(len(order) / per_page))
        page = int(controls.number_input("Page", 1, n_pages, 1, key=f"samples-page-{run_id}-{sort}-{lowest}",
                                         width=100))
        shown = order[(page - 1) * per_page: page * per_page]
        images = samples_view.pngs(pool.generated[shown])
        # the classes of the classifier trained on the labels by their names (a folder's: a line of its own)
        names = dataset.class_names if cfg.eval.feature == "mnist-cnn" else None
        named = bool(names) and not all(n.isdigit() for n in names)
        # Cards of a fixed width in a wrapping grid: as many a line as the window holds (5 at 1440 px, 3 at
        # 1024); columns of a fixed count squeezed the captions to a letter a line in a narrow window.
        with cards.grid(CARD_PX, key="samples-grid") as card_grid:
            for i, png in zip(shown.tolist(), images, strict=True):
                row = table.iloc[i]
                with card_grid.container(border=True, width=CARD_PX):
                    st.image(png, width="stretch")
                    # one short line per figure: cards of equal height keep the pick boxes in a row
                    lines = [f"**{i}**" + (f" · class {int(row['class'])}" if has_classifier and not named else ""),
                             *([cards.plain(cards.fit(names[int(row["class"])], GRID_CHARS))] if named else []),
                             *([f"clarity {row['clarity']:.2f}"] if has_classifier else []),
                             f"realism {row['realism']:.2f}", f"nearest #{int(row['nearest_id'])}",
                             f"distance {row['nearest_distance']:.2f}"]
                    st.caption("  \n".join(lines))
                    member = i in chosen
                    st.checkbox("pick", value=member, key=f"samples-pick-{run_id}-{i}-{int(member)}",
                                on_change=samples_view.toggle, args=(run_id, i))
        st.caption(f"{POOL_SIZE} samples from z fixed by the run's seed. Realism: the final discriminator's logit; "
                   "clarity: the feature classifier's log-probability of the sample's top class (0 = certain); "
                   "nearest: the training image closest in the feature space of the run's FID.")
    with map_tab:
        st.caption("Generated samples (coloured) and training images (grey) in one embedding: a PCA of the "
                   "feature-net features fitted on the training set. Draw a lasso or a box around samples to pick "
                   "them; they replace the picked set.")
        color_by = st.selectbox("Colour by", sorts, format_func=samples_view.SORTS.get, key=f"samples-color-{run_id}")

        def on_lasso() -> None:
            sel = samples_view.figures.selected_point_indices(st.session_state.get(f"samples-map-{run_id}"), curve=1)
            if sel:
                samples_view.set_picked(run_id, sel)

        st.plotly_chart(samples_view.map_figure(pool.train_map, table, chosen, color_by), key=f"samples-map-{run_id}",
                        on_select=on_lasso, selection_mode=("lasso", "box", "points"))

# ---------------------------------------------------------------- the picked samples and Explain
with side:
    st.subheader("Picked")
    st.metric("samples", len(chosen), help="at most 64 per explanation (one backward pass, one adjoint per sample)")
    if chosen:
        thumbs = samples_view.pngs(pool.generated[chosen][:24], 42)
        st.image(thumbs, width=42)
        st.button("Clear", on_click=samples_view.set_picked, args=(run_id, []), icon=":material/delete:")
    options = EstimateOptions()
    spec = explain_spec(run_id, {"pool": chosen}, objective, options) if 0 < len(chosen) <= 64 else None
    if st.button("Explain", type="primary", icon=":material/psychology_alt:", disabled=spec is None,
                 help="one backward pass over the traced steps for all picked samples; its cost grows with their "
                      "number (each sample carries its own adjoint)"):
        jobpanel.start(root, spec)
        st.rerun()
    if spec is not None and found is None:
        stacked = rows_per_product(resolve_device(cfg.train.device), cfg.model.arch) is None
        seconds = tables.explain_seconds(stored(run), cache.results(str(root), run_id, cache.files_stamp(
            root, run_id, "influence")), len(chosen), stacked)
        if seconds is not None:
            # short: at 1024 px this column is about 90 px wide
            st.caption(f"Takes roughly {tables.duration(seconds, rough=True)} here for "
                       f"{tables.plural(len(chosen), 'sample')} ("
                       + ("" if stacked else "a pass each on this CPU, ") + "from this run's passes), in the "
                       "background.")
    if len(chosen) > 64:
        st.warning("Pick at most 64 samples.")
    st.caption("Removal set: " + tables.plural(len(state.removal(root, run_id)), "image"))
    st.page_link(widgets.CURATE_PAGE, label="Inspect it", icon=":material/arrow_forward:")  # a narrow column

if not chosen:
    st.info("Pick samples in the grid or on the map, then Explain.", icon=":material/touch_app:")
    st.stop()
stamp = cache.files_stamp(root, run_id, "explain")
if found is None:
    st.info(f"No explanation of the {KIND_LABELS[kind]} of these {len(chosen)} samples yet: press Explain.",
            icon=":material/psychology_alt:")
    st.stop()
explanation = cache.explanation(str(root), run_id, found.name, stamp)

# ---------------------------------------------------------------- explain
st.header("Explain")
meta = explanation.meta
st.caption(f"{meta['label']}: {meta['sign']}. Stability of the pass: {meta['verdict_message']}. "
           f"Computed in {meta['seconds']:.0f} s over {meta['traced_steps']} traced steps.")
near = explanation.nearcopy
if near is not None:
    view = near.assign(pool_sample=[chosen[i] for i in near["sample"]])
    copies = view[view["likely_copy"]]
    if len(copies):
        st.warning(f"{tables.plural(len(copies), 'picked sample')} look like copies of training images: "
                   + ", ".join(f"sample {int(r.pool_sample)} of #{int(r.nearest_id)}" for r in copies.itertuples()),
                   icon=":material/content_copy:")
    st.dataframe(view[["pool_sample", "nearest_id", "distance_ratio", "top1_share", "top10_share", "likely_copy"]],
                 hide_index=True, height=min(35 * (len(view) + 1) + 3, 260),
                 column_config={"pool_sample": "sample", "nearest_id": "nearest training image",
                                "distance_ratio": st.column_config.NumberColumn(
                                    "distance / typical", format="%.2f",
                                    help="distance to the nearest training image over the typical distance between "
                                         "a training image and its nearest neighbour"),
                                "top1_share": st.column_config.NumberColumn("top-1 share", format="percent",
                                                                            help="share of |influence| on the sample"),
                                "top10_share": st.column_config.NumberColumn("top-10 share", format="percent"),
                                "likely_copy": "likely copy"})

e1, e2 = st.columns([1, 3])
which = e1.selectbox("Sample", range(explanation.n_samples), format_func=lambda i: f"sample {chosen[i]}",
                     key=f"samples-which-{run_id}")
e1.image(samples_view.pngs(explanation.generated[which:which + 1], 168)[0])
e1.caption(samples_view.value_text(explanation, which))
k = int(e1.number_input("Images per side", 1, 60, 12, key=f"samples-k-{run_id}"))
with e2:
    st.markdown("**Responsible**: removing them would move the sample the way you want (harmful, :red[positive])")
    samples_view.responsible_gallery(root, run_id, explanation, which, k, "harmful", dataset, f"h-{run_id}-{which}")
    st.markdown("**Supporting**: removing them would move it the other way (helpful, negative)")
    samples_view.responsible_gallery(root, run_id, explanation, which, k, "helpful", dataset, f"s-{run_id}-{which}")

with st.expander("Footprint of a training image: the picked samples it drives most", icon=":material/footprint:"):
    j = int(st.number_input("Training image id", 0, dataset.n_train - 1,
                            int(explanation.responsible(which, 1)[0]), key=f"samples-foot-{run_id}"))
    order = explanation.footprint(j)
    f1, f2 = st.columns([1, 5])
    f1.image(cache.thumbnails(str(root), run_id, (j,), cache.THUMB_PX)[0], caption=f"#{j}")
    imgs = samples_view.pngs(explanation.generated[order[:12]])
    for col, i, png in zip(f2.columns(min(12, len(order))), order[:12], imgs, strict=False):
        col.image(png)
        col.caption(f"sample {chosen[int(i)]}: " + " / ".join(
            tables.sci(float(v)) for v in explanation.matrix[explanation.row_sample == int(i), j]))

# ---------------------------------------------------------------- check
st.header("Check")
if check_job is not None:
    jobpanel.panel(root, check_job)
traced = int(meta["traced_steps"])
default_k = max(1, round(0.01 * dataset.n_train))
c1, c2 = st.columns([1, 3])
check_k = int(c1.number_input("k: images removed per sample", 1, dataset.n_train // 2, default_k,
                              key=f"samples-check-k-{run_id}"))
c2.caption(f"Replays the {traced} traced steps once per lane: without each picked sample's k most responsible images "
           "and without k random ones (lane 0 = nothing removed, in the same replay). Predicted change = the sum of "
           "the removed images' influences; actual = the replay's objective minus lane 0's.")
samples_all = list(range(explanation.n_samples))
if c1.button("Check by replay", icon=":material/science:", wrap=True):  # a quarter column: cut at 1024 px
    jobpanel.start(root, explain_spec(run_id, {"pool": chosen}, objective, options,
                                      {"samples": samples_all, "k": check_k, "seed": 0}))
    st.rerun()
rel = f"explain/{explanation.name}/checks/{check_key(samples_all, check_k, 0)}"
if run.exists(f"{rel}.json"):
    result = run.read_json(f"{rel}.json")
    generated = run.read_npy(f"{rel}-generated.npy")
    s = result["summary"]
    m1, m2, m3 = st.columns(3)
    m1.metric("top-k moved as predicted", f"{s['top_moves_as_predicted']:.0%}")
    m2.metric("top-k moved it more than random k", f"{s['top_beats_random']:.0%}")
    m3.metric("Pearson r, predicted vs actual", "-" if s["pearson"] != s["pearson"] else f"{s['pearson']:.2f}")
    lanes = {(lane["kind"], lane["sample"]): (n, lane) for n, lane in enumerate(result["lanes"])}
    for i in samples_all:
        (nt, top_lane), (nr, rand_lane) = lanes[("top", i)], lanes[("random", i)]
        check_row = st.container(horizontal=True, gap="small")  # the text goes below the images when narrow
        before, after_top, after_rand = samples_view.pngs(np.stack([generated[0, i], generated[1 + nt, i],
                                                                    generated[1 + nr, i]]), CHECK_PX)
        # a fixed width: with "content" a caption wider than the image stretched that one image
        check_row.image(before, caption=f"sample {chosen[i]}: the run", width=CHECK_PX)
        check_row.image(after_top, caption=f"without its top {check_k}", width=CHECK_PX)
        check_row.image(after_rand, caption=f"without {check_k} random", width=CHECK_PX)
        check_row.markdown(
            f"the run: {samples_view.value_text(explanation, i)}  \n"
            f"without the top {check_k}: predicted {tables.sci(top_lane['predicted'][0])}, actual "
            f"**{tables.sci(top_lane['actual'][0])}**  \n"
            f"without {check_k} random: predicted {tables.sci(rand_lane['predicted'][0])}, actual "
            f"**{tables.sci(rand_lane['actual'][0])}**")
    st.caption(f"Replay: {result['lanes_plan']['mode']} lanes; lane 0 = {result['baseline']}; {result['seconds']:.0f} s.")
