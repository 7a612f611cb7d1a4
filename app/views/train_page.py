"""Train or load: pick a data set and a preset (or edit hyperparameters) and train in the background,
or load a cached run; the current run's samples per epoch and training curves."""

import pandas as pd
import streamlit as st

from explorer import cache, figures, jobpanel, state, tables, timing, trainform, widgets
from explorer.widgets import INFLUENCE_PAGE
from influence import jobs, store
from influence.config import DEFAULT_PRESET, RunConfig
from influence.data import Survey, prepare
from influence.errors import ConfigError, InfluenceError
from influence.honesty import INFORMATIVE

root = state.root()
st.title("Train or load a GAN")
st.markdown("Every run is cached in the store under an id made from its configuration: training the same "
            "configuration again loads it instead. Training records the trace of the last epoch(s), which the "
            "influence estimate walks backwards.")


def live_training(status: dict) -> None:
    """While training: per-step losses from the job status, per-epoch curves from the checkpoint, the newest samples."""
    run_id = jobpanel.spec_run_id(status["spec"])
    samples = st.session_state.setdefault(f"live:{status['key']}", [])
    info = status.get("info") or {}
    if isinstance(info.get("loss_d"), float) and (not samples or samples[-1][0] != status.get("done")):
        samples.append((int(status.get("done") or 0), info["loss_d"], info["loss_g"]))
    history = cache.live_history(str(root), run_id, cache.mtime_ns(root, run_id, "checkpoint/state.pt"))
    cfg = RunConfig.from_dict(status["spec"]["params"]["config"])
    per_epoch = (status.get("total") or 0) / cfg.train.epochs or None  # the job's total counts steps
    left, right = st.columns([3, 1])
    if samples or history:
        left.plotly_chart(figures.history_figure(history, samples, per_epoch), key=f"live-{status['key']}")
    grids = cache.epoch_grids(root, run_id, cfg.is_2d)
    if grids and not cfg.is_2d:
        png = cache.run_png(str(root), run_id, grids[-1], cache.mtime_ns(root, run_id, grids[-1]))
        if png:
            right.image(png, caption=f"samples after epoch {len(grids)}")


# ---------------------------------------------------------------- a training job in progress (or just ended)
job = jobpanel.latest(root, "train")
if job is not None:
    jobpanel.panel(root, job, live=live_training)
    jobpanel.adopt_trained_run(root, job)

if "train-flash" in st.session_state:
    st.success(st.session_state.pop("train-flash"), icon=":material/check_circle:")

new_tab, cached_tab = st.tabs(["Train a new run", "Load a cached run"])

# ---------------------------------------------------------------- new run
with new_tab:
    data_key = st.radio("Data set", list(trainform.DATASETS), format_func=trainform.DATASETS.get, horizontal=True,
                        key="data_key")
    data_root = None
    if data_key in ("torchvision-mnist", "fashion-mnist"):
        data_root = st.text_input("torchvision root folder", key="tv_root",
                                  help="The folder holding MNIST/ or FashionMNIST/ with raw/ inside (as torchvision "
                                       "lays it out). Without internet the files must already be there.")
    elif data_key == "folder":
        data_root = st.text_input("Folder of PNG/JPEG images", key="img_folder",
                                  help="One sub-folder per class (its name is the label), or images directly inside.")
    elif data_key == "upload":
        upload = st.file_uploader("Zip of PNG/JPEG images (one sub-folder per class)", type=["zip"], key="img_zip",
                                  max_upload_size=trainform.MAX_UPLOAD_MB)
        if upload is not None:
            try:
                data_root = str(trainform.save_upload(root, upload.name, upload.getvalue()))
                st.caption(f"Saved as `{data_root}`.")
            except ConfigError as e:
                st.error(str(e))
    found = None
    if data_key in trainform.OWN and (data_root or "").strip():
        # read once per path and minute (bounded: a huge tree such as / stops with a message), not per rerun
        found = cache.source_survey(data_root.strip())
        if not isinstance(found, Survey):
            st.error(found, icon=":material/error:")

    names = trainform.presets_for(data_key)
    c1, c2 = st.columns([2, 3])
    preset_name = c1.selectbox("Preset", names, index=names.index(DEFAULT_PRESET) if DEFAULT_PRESET in names else 0,
                               key=f"preset-{data_key}")
    c2.caption(trainform.preset_note(preset_name, data_key))
    finished_training = [j for j in jobs.list_jobs(root) if j["spec"].get("kind") == "train" and j["state"] == "done"]
    time_text = timing.estimate_text(preset_name, cache.runs(str(root), cache.runs_stamp(root)), finished_training)
    if time_text:
        c2.caption(time_text)

    try:
        base = trainform.base_config(preset_name, data_key, data_root)
        if found is not None:
            if not isinstance(found, Survey):
                raise ConfigError("choose a folder or zip of images that can be read (see above)")
            st.info(trainform.own_images_summary(found, prepare(base, found)), icon=":material/photo_library:")
            if found.unreadable:
                with st.expander(f"The {len(found.unreadable)} unreadable files, and why"):
                    st.dataframe(pd.DataFrame(found.unreadable, columns=["file", "why it is skipped"]),
                                 hide_index=True)
            st.caption(trainform.HELD_OUT_NOTE)
    except InfluenceError as e:
        st.info(str(e))
        base = None

    if base is not None:
        # Enter in a field must not start a half-edited run: only the button submits.
        with st.form(f"hyper-{data_key}-{preset_name}", border=False, enter_to_submit=False):
            edited: dict[str, str] = {}
            sections: dict[str, list] = {}
            schedule_help = ""
            for field in trainform.fields(base):
                if field[0] == trainform.SCHEDULE_KEY:
                    schedule_help = field[2]
                    continue
                sections.setdefault(trainform.section_of(field[0]), []).append(field)
            hyper = st.expander("Hyperparameters: the preset's values; change any to customise the run",
                                icon=":material/tune:")
            for col, (section, items) in zip(hyper.columns(len(sections)), sections.items(), strict=True):
                col.markdown(f"*{section}*")
                for key, text, help_text, choices in items:
                    label, widget_key = key.split(".", 1)[-1], f"f-{data_key}-{preset_name}-{key}"
                    if choices:
                        edited[key] = col.selectbox(label, choices, index=choices.index(text) if text in choices else 0,
                                                    help=help_text, key=widget_key)
                    else:
                        edited[key] = col.text_input(label, text, help=help_text or None, key=widget_key,
                                                     placeholder="none")
            hyper.markdown("*learning-rate schedule*: from the given epoch on, these rates replace lr_d/lr_g "
                           "(one row per change; add rows at the bottom, delete with the row's checkbox). Left as "
                           "they are, the preset's rows move with `epochs`: they set the rate of the last epochs.")
            schedule = hyper.data_editor(
                pd.DataFrame(trainform.schedule_rows(base), columns=list(trainform.SCHEDULE_COLUMNS)),
                num_rows="dynamic", hide_index=True, key=f"f-{data_key}-{preset_name}-schedule",
                column_config={
                    "from epoch": st.column_config.NumberColumn("from epoch", min_value=1, step=1, format="%d",
                                                                help=schedule_help or None),
                    "lr_D": st.column_config.NumberColumn("lr_D", min_value=0.0, format="%g",
                                                          help="discriminator learning rate from that epoch on"),
                    "lr_G": st.column_config.NumberColumn("lr_G", min_value=0.0, format="%g",
                                                          help="generator learning rate from that epoch on"),
                })
            submitted = st.form_submit_button("Start training", type="primary", icon=":material/play_arrow:")
        if submitted:
            try:
                rows, moved = trainform.schedule_following_epochs(base, edited.get("train.epochs", ""),
                                                                  schedule.to_dict("records"))
                edited[trainform.SCHEDULE_KEY] = trainform.schedule_text(rows)
                cfg = trainform.apply_edits(base, edited)
            except InfluenceError as e:  # a bad value, or own images that changed or cannot be read
                st.error(f"Not started: {e}", icon=":material/error:")
            else:
                run = store.Run(root, cfg.run_id)
                if run.exists("summary.json"):
                    state.set_current_run(root, cfg.run_id)
                    st.session_state["train-flash"] = (f"This configuration is already trained: run `{cfg.run_id}` "
                                                       "is now the current run.")
                else:
                    jobpanel.start(root, {"kind": "train", "params": {"config": cfg.to_dict()}})
                    if moved:
                        st.session_state["train-flash"] = moved
                st.rerun()  # the sidebar and the job panel above show the change

# ---------------------------------------------------------------- cached runs
with cached_tab:
    runs = cache.runs(str(root), cache.runs_stamp(root))
    if not runs:
        st.info("The store holds no runs yet: train one in the first tab.")
    else:
        table = tables.runs_table(runs)

        def on_pick() -> None:
            rows = st.session_state["runs_table"]["selection"]["rows"]
            if rows and table.iloc[rows[0]]["state"] == "finished":
                state.set_current_run(root, table.iloc[rows[0]]["run"])

        st.caption("Click a row to make that run the current one. Unfinished runs resume when trained again.")
        st.dataframe(table, hide_index=True, on_select=on_pick, selection_mode="single-row", key="runs_table",
                     column_config={"date": st.column_config.TextColumn("date")})
        for r in runs:
            if "problem" in r:
                st.warning(f"{r['run_id']}: {r['problem']}")

# ---------------------------------------------------------------- the current run
run_id = state.current_run_id(root)
st.divider()
if run_id is None:
    st.info("No trained run yet. Pick a data set and preset above and press **Start training**; "
            "the `tiny` preset takes about a minute on a laptop.", icon=":material/school:")
    st.stop()

cfg = RunConfig.from_dict(cache.config(str(root), run_id))
st.subheader(f"Current run: {run_id}")
grids = cache.epoch_grids(root, run_id, cfg.is_2d)
left, right = st.columns([2, 3])
with left:
    st.markdown("**Samples per epoch** (the same z every epoch)")
    if grids:
        epoch = st.slider("Epoch", 1, len(grids), len(grids), key=f"epoch-{run_id}") if len(grids) > 1 else 1
        rel = grids[epoch - 1]
        if cfg.is_2d:
            points = cache.run_npy(str(root), run_id, rel, cache.mtime_ns(root, run_id, rel))
            train_xy = cache.context(str(root), run_id).dataset.train.x.numpy()
            st.plotly_chart(figures.points_figure(train_xy, generated=points, height=420), key="grid2d")
        else:
            st.image(cache.run_png(str(root), run_id, rel, cache.mtime_ns(root, run_id, rel)),
                     caption=f"epoch {epoch}")
with right:
    st.markdown("**Training curves**")
    verdicts = cache.verdicts_now(root, run_id)
    st.plotly_chart(figures.history_figure(cache.history(str(root), run_id), uninformative=tuple(
        m for m in verdicts if verdicts[m]["verdict"] != INFORMATIVE)), key="history")
    widgets.metric_meaning(root, run_id, cfg)
    widgets.source_notes(root, run_id)
    with st.expander("Configuration"):
        st.json(cache.config(str(root), run_id))
st.page_link(INFLUENCE_PAGE, label="Next: estimate the influence of each training instance",
             icon=":material/arrow_forward:")
