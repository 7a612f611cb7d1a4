"""Train or load: pick a data set and a preset (or edit hyperparameters) and train in the background,
or load a cached run; the current run's samples per epoch and training curves."""

import json

import pandas as pd
import streamlit as st

from explorer import cache, figures, finetuneform, jobpanel, state, tables, timing, trainform, widgets
from explorer.widgets import INFLUENCE_PAGE
from influence import jobs, store
from influence.config import DEFAULT_PRESET, RunConfig, parse_config
from influence.context import RunContext
from influence.data import Survey, prepare
from influence.data.locations import ImagesMissing, stored_run_images_found
from influence.errors import ConfigError, InfluenceError
from influence.finetune import configure, from_files
from influence.honesty import INFORMATIVE
from influence.relocation import remember
from influence.specs import recorded_train_config

SECTION_PX = 172  # a hyperparameter section: its longest name ("trace_lr_probe_steps"), a help icon; 5 a line at 1440

root = state.root()
st.title("Train or load a GAN")
st.markdown("Every run is cached in the store under an id made from its configuration: training the same "
            "configuration again loads it instead. Training records the trace of the last epoch(s), which the "
            "influence estimate walks backwards.")


def live_training(status: dict) -> None:
    """While training: per-step losses from the job status, per-epoch curves from the checkpoint, the newest samples."""
    run_id = jobpanel.spec_run_id(status["spec"])
    samples = st.session_state.setdefault(f"live:{status['key']}", [])
    sample = jobpanel.loss_sample(status)
    if sample is not None and (not samples or samples[-1][0] != sample[0]):
        samples.append(sample)
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


def start_or_load(cfg: RunConfig, note: str | None = None) -> None:
    """Train cfg in the background, or make its run current when this configuration is already trained
    (`note`: what the form changed on its own, shown once the job starts)."""
    if store.Run(root, cfg.run_id).exists("summary.json"):
        state.set_current_run(root, cfg.run_id)
        placed = remember(root, cfg)  # its images read at a new place (the recorded form): that place is kept
        st.session_state["train-flash"] = (f"This configuration is already trained: run `{cfg.run_id}` is now the "
                                           "current run." + (f" Its images are read from `{placed}` from now on."
                                                             if placed else ""))
    else:
        jobpanel.start(root, {"kind": "train", "params": {"config": cfg.to_dict()}})
        if note:
            st.session_state["train-flash"] = note
    st.rerun()  # the sidebar and the job panel above show the change


def finetune_form(source: str, base: RunConfig | None) -> None:
    """Start from a trained GAN: a store run's final G and D (`source` "run"), or uploaded files of the preset's
    architecture ("files", `base`); every epoch traced, at the rate the probe measures unless the user sets one."""
    c1, c2 = st.columns([1, 2])
    epochs = c1.number_input("Epochs to fine-tune (all traced)", min_value=1, max_value=50, value=1, key="ft_epochs")
    trace_lr = c2.selectbox("Traced learning rate", list(finetuneform.TRACE_LR), format_func=finetuneform.TRACE_LR.get,
                            key="ft_lr_mode")
    if trace_lr == "check":
        trace_lr = st.text_input("Your traced learning rate (both players)", "0.0002", key="ft_lr")
    if source == "run":
        ids = finetuneform.finetunable_runs(cache.runs(str(root), cache.runs_stamp(root)))
        if not ids:
            st.info("The store holds no finished image run yet: train one, or upload G and D files.")
            return
        run_id = st.selectbox("Run", ids, key="ft_run")
        keep = st.checkbox("Keep its final optimizer state (Adam's moments and update count)", key="ft_keep",
                           help="Otherwise the fine-tune's optimizer starts fresh, as after loading a model.")
        st.caption("The run brings its data set, architecture and recipe; its final G and D are the start; the "
                   "optimizer state " + ("is the run's." if keep else "starts fresh."))
        args = {"from_run_id": run_id, "keep_optimizer": keep}
    else:
        if base is None:
            st.info("Choose the data set to fine-tune on and the preset whose architecture the files have (above).")
            return
        g_file = st.file_uploader("G weights", type=finetuneform.WEIGHT_TYPES, key="ft_g")
        d_file = st.file_uploader("D weights", type=finetuneform.WEIGHT_TYPES, key="ft_d")
        if g_file is None or d_file is None:
            st.caption(f"State dicts of the preset's architecture ({base.model.arch}, width {base.model.width}, "
                       f"z_dim {base.model.z_dim}): torch .pt (read without running code) or .safetensors.")
            return
        g, d = (str(finetuneform.save_weights(root, f.name, f.getvalue())) for f in (g_file, d_file))
        try:
            fits, lines = finetuneform.check_lines(from_files(base, g, d, int(epochs)),
                                                   {g: g_file.name, d: d_file.name})
        except InfluenceError as e:
            fits, lines = False, [str(e)]
        (st.success if fits else st.error)("Architecture check: " + "; ".join(lines), icon=":material/rule:")
        if not fits:
            return
        st.caption("The optimizer state starts fresh (zero moments, update count 0): no optimizer state was given.")
        args = {"base": base, "init_g": g, "init_d": d}
    if st.button("Start fine-tuning", type="primary", icon=":material/play_arrow:"):
        try:
            cfg = configure(root, int(epochs), trace_lr, **args)
        except InfluenceError as e:
            st.error(f"Not started: {e}", icon=":material/error:")
            return
        start_or_load(cfg)


def recorded_form() -> None:
    """Train a run's config.json again (from this or another store or machine): the same run id, and under the
    same conditions the same run bit for bit; its inputs must be the recorded ones (`specs.recorded_train_config`)."""
    upload = st.file_uploader("A run's config.json", type=["json"], key="rec_config")
    if upload is None:
        st.caption("The current run's Configuration below offers its config.json to download; a colleague's works "
                   "the same. The same config gives the same run id and, under the conditions training recorded, "
                   "the same weights bit for bit.")
        return
    try:
        recorded = parse_config(upload.getvalue(), f"'{upload.name}'")
    except ConfigError as e:
        st.error(f"Not read: {e}", icon=":material/error:")
        return
    c1, c2 = st.columns([1, 3])
    seed = int(c1.number_input("Seed", min_value=0, max_value=2**32 - 1, value=recorded.seed, key="rec_seed"))
    sets = [f"seed={seed}"]
    if recorded.data.source == "folder":
        where = c2.text_input("Its images on this machine: a folder or .zip holding the files it was trained on "
                              "(their fingerprint is checked)", value=recorded.data.root or "", key="rec_root")
        sets.append(f"data.root={where}")
    st.caption(f"`{recorded.preset}` on {recorded.data.name or recorded.data.source}, recorded as run "
               f"`{recorded.run_id}`.")
    if not st.button("Train it again", type="primary", icon=":material/replay:"):
        return
    try:
        cfg = recorded_train_config(recorded, f"'{upload.name}'", sets)
        with st.spinner("Reading its data ..."):
            RunContext.create(cfg, root)  # its data (own images: the recorded files) before a job starts
    except ImagesMissing as e:
        st.error(f"Not started: there is nothing at `{e.root}`: give the place of its images above.",
                 icon=":material/error:")
        return
    except InfluenceError as e:
        st.error(f"Not started: {e}", icon=":material/error:")
        return
    start_or_load(cfg)


def data_and_preset() -> tuple[RunConfig | None, str, str]:
    """The data set and preset fields: (the configuration they make or None, the data set's key, the preset)."""
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
    return base, data_key, preset_name


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
    start_from = st.radio("Start from", ["scratch", "trained", "recorded"], horizontal=True, key="start_from",
                          format_func={"scratch": "the preset's random weights",
                                       "trained": "a trained GAN (fine-tune and trace)",
                                       "recorded": "a run's config.json (train it again)"}.get)
    source = None
    if start_from == "trained":
        source = st.radio("Trained GAN from", list(finetuneform.SOURCES), format_func=finetuneform.SOURCES.get,
                          horizontal=True, key="ft_source")
    base = None
    if start_from == "recorded":  # the config brings its data set, recipe and seed
        recorded_form()
    elif source == "run":  # the run brings its data set, architecture and recipe: no data set or preset to choose
        finetune_form(source, None)
    else:
        base, data_key, preset_name = data_and_preset()
        if source == "files":
            finetune_form(source, base)
    if start_from == "scratch" and base is not None:
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
            # sections of a fixed width that wrap: five columns at 1024 px broke the fields' names mid-word
            row = hyper.container(horizontal=True, gap="small")
            for section, items in sections.items():
                col = row.container(width=SECTION_PX)
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
                start_or_load(cfg, moved)

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
            elif not stored_run_images_found(r["config"], store.cache_dir()):
                st.warning(f"{r['run_id']}: its images are not at `{r['config']['data']['root']}` (moved or "
                           "deleted?). Make it the current run: the pages that read them ask for their new place.",
                           icon=":material/folder_off:")

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
    summary = cache.summary(str(root), run_id)
    if summary.get("start"):
        st.caption("Started from " + summary["start"]["sentence"].removeprefix("weights from ") + ".")
    with st.expander("Configuration, and how to train this run again"):
        recorded = cache.config(str(root), run_id)
        st.markdown(trainform.reproduce_note(cfg, cache.training_conditions(str(root), run_id)))
        st.code(trainform.reproduce_command(root / run_id / "config.json"), language="bash", wrap_lines=True)
        st.download_button("Download config.json", json.dumps(recorded, indent=1), file_name=f"{run_id}.config.json",
                           mime="application/json", icon=":material/download:")
        st.json(recorded)
if summary.get("trace_lr"):  # the page's whole width: in the curves' column the table's verdicts lay out of sight
    probe = summary["trace_lr"]
    with st.expander("Traced learning rate: the probe's measurements", expanded=True, icon=":material/speed:"):
        st.markdown(finetuneform.probe_sentence(probe))
        table = finetuneform.probe_frame(probe)
        st.dataframe(table, hide_index=True, column_config={c: st.column_config.NumberColumn(format="%.3g")
                                                            for c in table.columns[:7]})
        if probe.get("warning"):
            st.warning(probe["warning"] + ".", icon=":material/warning:")
st.page_link(INFLUENCE_PAGE, label="Next: estimate the influence of each training instance",
             icon=":material/arrow_forward:")
