"""Train or load: form validation, cached configurations, uploads, and a real background training job."""

from __future__ import annotations

import io
import time
import zipfile

import pytest

from apphelpers import open_app, texts, tiny_run_id
from influence import jobs
from influence.config import RunConfig, apply_overrides, preset

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _png(value: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (8, 8), value).save(buf, format="PNG")
    return buf.getvalue()


def _form(at, preset_name: str, **values: str):
    at.selectbox(key="preset-mnist").set_value(preset_name).run()
    for key, value in values.items():
        if key == "train.lr_schedule":  # a table editor: "" deletes the preset's rows
            assert value == ""
            rows = len(next(d for d in at.data_editor if d.key == f"f-mnist-{preset_name}-schedule").value)
            at.session_state[f"f-mnist-{preset_name}-schedule"] = {
                "edited_rows": {}, "added_rows": [], "deleted_rows": list(range(rows))}
            continue
        at.text_input(key=f"f-mnist-{preset_name}-{key}").set_value(value)
    next(b for b in at.button if b.label == "Start training").click().run()
    return at


@pytest.mark.parametrize("field, value, reason", [
    ("train.epochs", "0", "train.epochs must be at least 1"),
    ("train.lr_d", "fast", "cannot read 'fast' as float"),
    ("train.trace_epochs", "5", "train.trace_epochs must lie in 1..epochs"),
    ("train.batch_size", "-5", "train.batch_size must be at least 1"),
    ("data.image_size", "30", "data.image_size must be 28, 32, 64 or auto"),
])
def test_invalid_hyperparameters_are_rejected_with_the_reason(app_store, started_jobs, field, value, reason):
    at = _form(open_app("train"), "tiny", **{field: value})
    assert not at.exception
    errors = " ".join(e.value for e in at.error)
    assert "Not started" in errors and reason in errors
    assert started_jobs == []


def test_an_already_trained_configuration_is_loaded_not_retrained(app_store, started_jobs):
    at = _form(open_app("train"), "tiny")
    assert not at.exception
    assert "already trained" in texts(at)
    assert started_jobs == []
    assert at.session_state["run_id"] == tiny_run_id(app_store)


def test_the_form_builds_the_spec_from_the_preset_and_the_edits(app_store, started_jobs):
    _form(open_app("train"), "tiny", **{"train.epochs": "3", "model.width": "4"})
    assert len(started_jobs) == 1
    # tiny's schedule sets its last epoch's rate: it moves from epoch 2 of 2 to epoch 3 of 3
    expected = apply_overrides(preset("tiny"), ["train.epochs=3", "model.width=4", "train.lr_schedule=3:0.001:0.001"])
    assert started_jobs[0]["kind"] == "train"
    config = started_jobs[0]["params"]["config"]
    assert RunConfig.from_dict(config) == expected and config["preset"] == "tiny"


def test_the_schedule_follows_the_epochs_and_enter_does_not_submit(app_store, started_jobs):
    """mnist-adam traces its last epoch (10 of 10) at a tenth of the rate; at 30 epochs its schedule stayed at
    'from epoch 10', silently adding 20 epochs at the traced rate. And Enter in any field submitted the form."""
    at = _form(open_app("train"), "mnist-adam", **{"train.epochs": "30"})
    assert not at.exception
    config = started_jobs[0]["params"]["config"]["train"]
    assert config["epochs"] == 30 and config["lr_schedule"] == [[30, 4e-05, 4e-05]]
    assert "from epoch 30 of 30 (the preset's 10 of 10)" in texts(at)
    forms = [node for node in _in_order(at.main) if getattr(node, "type", None) == "form"]
    assert forms and all(not form.proto.form.enter_to_submit for form in forms)


def _in_order(node):
    for key in sorted(getattr(node, "children", {}) or {}):
        yield node.children[key]
        yield from _in_order(node.children[key])


def test_a_folder_data_set_needs_a_path_first(app_store):
    at = open_app("train")
    at.radio(key="data_key").set_value("folder").run()
    assert not at.exception
    assert "enter the folder path" in texts(at)
    assert not [b for b in at.button if b.label == "Start training"]


def test_an_uploaded_zip_is_saved_into_the_store(app_store, started_jobs):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a/one.png", b"not really a png")
        for i in range(60):
            z.writestr(f"a/{i}.png", _png(i))
    at = open_app("train")
    at.radio(key="data_key").set_value("upload").run()
    at.file_uploader(key="img_zip").set_value(("my digits.zip", buf.getvalue(), "application/zip")).run()
    assert not at.exception
    saved = list((app_store / "_uploads").iterdir())
    assert len(saved) == 1 and saved[0].name.endswith("-my_digits.zip")
    next(b for b in at.button if b.label == "Start training").click().run()
    data = started_jobs[0]["params"]["config"]["data"]
    assert data["source"] == "folder" and data["root"] == str(saved[0]) and data["n_train"] is None

    at.file_uploader(key="img_zip").set_value(("notes.zip", b"plain text", "application/zip")).run()
    assert "is not a zip file" in " ".join(e.value for e in at.error)


@pytest.mark.slow
def test_training_runs_in_the_background_and_its_run_becomes_current(app_store):
    """A real worker process: the tiny preset cut down to 200 images and one epoch."""
    at = _form(open_app("train"), "tiny", **{"data.n_train": "200", "train.epochs": "1", "train.lr_schedule": ""})
    assert not at.exception
    [status] = jobs.list_jobs(app_store)
    assert status["spec"]["kind"] == "train"
    assert "Training tiny-s0-" in texts(at)  # the job panel
    final = jobs.wait(app_store, status["key"], timeout_s=300)
    assert final["state"] == "done", final.get("message")
    at.run()  # the panel sees the finished job and makes its run the current one
    assert not at.exception
    new_id = final["result"]["run_id"]
    assert at.session_state["run_id"] == new_id
    assert f"Current run: {new_id}" in texts(at)
    assert "Finished in" in texts(at)
    # Switching back sticks: a refresh does not make the finished job's run current again.
    at.sidebar.selectbox(key="run_picker").set_value(tiny_run_id(app_store)).run()
    assert open_app("train").session_state["run_id"] == tiny_run_id(app_store)


@pytest.mark.slow
def test_cancel_stops_a_running_training_job(app_store):
    cfg = apply_overrides(preset("tiny"), ["train.epochs=20", "train.lr_schedule="])
    key = jobs.start_background(app_store, {"kind": "train", "params": {"config": cfg.to_dict()}})
    deadline = time.time() + 120
    while jobs.read_status(app_store, key)["state"] == "queued" and time.time() < deadline:
        time.sleep(0.2)  # the worker process is starting
    assert jobs.read_status(app_store, key)["state"] == "running"
    at = open_app("train")
    next(b for b in at.button if b.label == "Cancel").click().run()
    assert not at.exception
    assert jobs.wait(app_store, key, timeout_s=120)["state"] == "cancelled"
    at.run()
    assert "Cancelled" in texts(at)
    assert any(b.label == "Start again" for b in at.button)


def test_start_from_a_trained_gan_checks_the_files_and_builds_the_finetune_spec(app_store, started_jobs):
    from influence.finetune import configure

    source = tiny_run_id(app_store)
    weights = {p: (app_store / source / "weights" / f"{n}.pt").read_bytes() for p, n in (("g", "generator"),
                                                                                          ("d", "discriminator"))}
    at = open_app("train")
    at.radio(key="start_from").set_value("trained").run()
    at.radio(key="ft_source").set_value("files").run()
    for p in ("g", "d"):
        at.file_uploader(key=f"ft_{p}").set_value((f"{p}.pt", weights[p], "application/octet-stream")).run()
    assert not at.exception
    # the default preset (mnist-adam) has another architecture: the layers that do not fit are named
    [error] = [e.value for e in at.error]
    assert error.startswith("Architecture check: G layer '") and "in the configured" in error
    assert not [b for b in at.button if b.label == "Start fine-tuning"]
    at.selectbox(key="preset-mnist").set_value("tiny").run()
    assert "Architecture check: G 'g.pt' fits the configured smallcnn" in texts(at)
    next(b for b in at.button if b.label == "Start fine-tuning").click().run()
    assert not at.exception and len(started_jobs) == 1
    saved = {p: next((app_store / "_uploads" / "weights").glob(f"*-{p}.pt")) for p in ("g", "d")}
    expected = configure(app_store, 1, "auto", base=preset("tiny"), init_g=str(saved["g"]), init_d=str(saved["d"]))
    config = started_jobs[0]["params"]["config"]
    assert RunConfig.from_dict(config) == expected and config["train"]["trace_lr"] == "auto"

    # a run of the store, at the user's rate (kept, the probe beside it), its optimizer state fresh
    at.radio(key="ft_source").set_value("run").run()
    # the run brings its data set and architecture: the data set and preset fields are not offered
    assert not [w for w in [*at.radio, *at.selectbox] if w.key == "data_key" or (w.key or "").startswith("preset-")]
    at.selectbox(key="ft_run").set_value(source).run()
    at.selectbox(key="ft_lr_mode").set_value("check").run()
    at.text_input(key="ft_lr").set_value("0.003").run()
    next(b for b in at.button if b.label == "Start fine-tuning").click().run()
    assert not at.exception and len(started_jobs) == 2
    config = RunConfig.from_dict(started_jobs[1]["params"]["config"])
    assert config == configure(app_store, 1, "0.003", from_run_id=source)
    assert (config.train.trace_lr, config.train.lr_d, config.model.init_from_run) == ("check", 0.003, source)
    assert config.model.init_opt_d is None  # fresh


def test_the_current_run_says_how_to_train_it_again(app_store):
    """The command that reproduces the run (tests/test_cli.py checks that it does), the conditions training
    recorded, and its config.json to download."""
    from influence import store

    run_id = tiny_run_id(app_store)
    run = store.open_run(app_store, run_id)
    conditions = run.read_json("trace/meta.json")["conditions"]
    at = open_app("train", run_id)
    assert not at.exception
    said = texts(at)
    assert [c.value for c in at.code] == [f"gan-influence train --config {app_store / run_id / 'config.json'}"]
    threads = conditions["threads"]
    assert (f"the same weights bit for bit under training's conditions: {threads} torch thread"
            f"{'s' if threads != 1 else ''} on the CPU ({conditions['processor']}), {conditions['dtype']}, "
            f"torch {conditions['torch']}.") in said
    assert "Download config.json" in [b.proto.label for b in at.get("download_button")]


def test_a_runs_config_json_is_trained_again(app_store, started_jobs):
    """Start from a run's config.json: the recorded run is found again (already trained), another seed starts the
    recipe's run at that seed, and a file that is not a config is one message."""
    from influence import store

    run_id = tiny_run_id(app_store)
    config = (app_store / run_id / "config.json").read_bytes()
    at = open_app("train")
    at.radio(key="start_from").set_value("recorded").run()
    at.file_uploader(key="rec_config").set_value(("config.json", b"{not json", "application/json")).run()
    assert any(e.value.startswith("Not read: 'config.json' is not a run's config.json") for e in at.error)
    at.file_uploader(key="rec_config").set_value(("config.json", config, "application/json")).run()
    assert f"recorded as run `{run_id}`" in texts(at)
    next(b for b in at.button if b.label == "Train it again").click().run()
    assert not at.exception and not started_jobs
    assert f"This configuration is already trained: run `{run_id}` is now the current run." in texts(at)
    at.number_input(key="rec_seed").set_value(3).run()
    next(b for b in at.button if b.label == "Train it again").click().run()
    assert [RunConfig.from_dict(j["params"]["config"]) for j in started_jobs] == [
        RunConfig.from_dict({**store.read_json(app_store / run_id / "config.json"), "seed": 3})]
