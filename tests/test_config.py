"""Run configuration: presets, run ids, --set parsing and validation."""

from __future__ import annotations

import dataclasses

import pytest

from influence.config import PRESETS, RunConfig, apply_overrides, describe_fields, preset, validate
from influence.context import RunContext
from influence.errors import ConfigError

from _helpers import toy_config


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_load_validate_and_round_trip(name):
    cfg = preset(name, seed=3)
    validate(cfg)
    assert cfg.seed == 3 and cfg.preset == name
    again = RunConfig.from_dict(cfg.to_dict())
    assert again == cfg and again.run_id == cfg.run_id
    assert cfg.run_id.startswith(f"{name}-s3-")


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ConfigError, match="unknown preset 'nope'.*tiny"):
        preset("nope")


def test_run_id_is_stable_and_a_hash_of_everything_but_the_preset_name():
    cfg = preset("tiny")
    # Stable across calls and processes: a pure function of the canonical JSON.
    assert cfg.run_id == preset("tiny").run_id
    import hashlib, json

    digest = hashlib.sha256(json.dumps(cfg.identity(), sort_keys=True).encode()).hexdigest()[:10]
    assert cfg.run_id == f"tiny-s0-{digest}"
    # Preset name only labels the id; the hash part does not change.
    renamed = dataclasses.replace(cfg, preset="other")
    assert renamed.run_id.split("-")[-1] == cfg.run_id.split("-")[-1]
    assert renamed.identity() == cfg.identity()
    # The seed changes it.
    assert preset("tiny", 1).run_id.split("-")[-1] != cfg.run_id.split("-")[-1]


def test_fields_added_later_leave_existing_run_ids_unchanged():
    # Ids of runs made before model.activation existed (pinned: stores on disk rely on them).
    assert preset("quick", 0).run_id == "quick-s0-01be64ccff"
    # The toy2d preset changed on 2026-11-30 to the paper's code (issue 14), so its id changed;
    # the earlier toy2d is the same config with the new keys at their defaults, and keeps its id.
    assert preset("toy2d", 0).run_id == "toy2d-s0-4ac499dfe7"
    legacy = apply_overrides(preset("toy2d"), ["model.bias=true", "model.init=torch", "data.dtype=float32"])
    assert legacy.run_id == "toy2d-s0-6a4f93477a"
    assert not {"bias", "init"} & set(legacy.identity()["model"]) and "dtype" not in legacy.identity()["data"]
    assert "activation" not in preset("quick").identity()["model"]
    smooth = apply_overrides(preset("toy2d"), ["model.activation=softplus"])
    assert smooth.identity()["model"]["activation"] == "softplus" and smooth.run_id != preset("toy2d").run_id


def _every_field_change(cfg: RunConfig) -> list[str]:
    """One --set assignment per config key that gives a valid config with that key changed."""
    new = {
        "data.source": None, "data.n_train": "999", "data.root": "/somewhere", "data.image_size": None,
        "data.color": "rgb", "data.n_valid": "77", "data.n_test": "78",
        "model.arch": "dcgan", "model.width": "9", "model.z_dim": "33", "model.activation": "softplus",
        "model.init": "glorot-uniform", "model.bias": None, "data.dtype": None,
        "train.epochs": "3", "train.batch_size": "50", "train.lr_d": "0.02", "train.lr_g": "0.03",
        "train.lr_schedule": "1:0.5:0.5", "train.weight_decay": "0.001", "train.trace_epochs": "2",
        "train.trace_steps": "5", "train.dtype": "float64", "train.device": "cpu",
        "eval.n_valid_z": "123", "eval.n_test_z": "124", "eval.n_grid": "16", "eval.feature": "inception",
        "eval.inception_weights": "/w.pth", "eval.metrics_every_epoch": "false", "seed": "5",
        "train.optimizer": "adam", "train.betas": "0.5,0.9", "train.eps": "1e-6", "train.momentum": "0.5",
        "train.nesterov": "true", "train.decoupled_wd": None, "train.scheme": "alternating", "train.d_steps": None,
        "train.ema_decay": "0.9", "train.trace_mode": "checkpoints", "train.checkpoint_every": "3",
        "eval.ema_generator": "false", "data.labels": "none", "data.name": "shapes",
        # the files of a pretrained G/D and their checksums: tests/test_own_data.py
        "model.init_g": None, "model.init_d": None, "model.init_g_sha256": None, "model.init_d_sha256": None,
        "train.trace_lr": "auto", "train.trace_lr_probe_steps": "5",
        # optimizer states of a fine-tune and their checksums: tests/test_finetune.py; the budget of trace_mode=auto
        # only decides the storage, never the result (not in the id)
        "model.init_opt_g": None, "model.init_opt_d": None, "model.init_opt_g_sha256": None,
        "model.init_opt_d_sha256": None, "model.init_from_run": None, "train.trace_budget_mb": None,
        # in the id only beside train.trace_lr auto or check: tests/test_tracelr.py
        "train.trace_lr_confirm": None,
    }
    return [f"{k}={v}" for k, v in new.items() if v is not None]


def test_every_identity_field_changes_the_run_id():
    cfg = preset("tiny")
    keys = {k for k, _, _ in describe_fields()} - {"preset"}
    changes = _every_field_change(cfg)
    covered = {c.split("=")[0] for c in changes}
    # Fields deliberately skipped: they only have one valid value for the tiny preset alone.
    assert keys - covered == {"data.source", "data.image_size", "model.bias", "data.dtype", "train.decoupled_wd",
                              "train.d_steps", "model.init_g", "model.init_d", "model.init_g_sha256",
                              "model.init_d_sha256", "data.fingerprint", "data.root_in_id",  # folder: test_sources
                              "model.init_opt_g", "model.init_opt_d", "model.init_opt_g_sha256",
                              "model.init_opt_d_sha256", "model.init_from_run", "train.trace_budget_mb",
                              "train.trace_lr_confirm"}
    seen = {cfg.run_id}
    for assignment in changes:
        changed = apply_overrides(cfg, [assignment])
        assert changed != cfg, assignment
        assert changed.run_id not in seen, assignment
        seen.add(changed.run_id)
    # The two skipped ones, changed together with what makes them valid.
    a = apply_overrides(cfg, ["model.arch=dcgan", "data.image_size=32"])
    b = apply_overrides(cfg, ["model.arch=dcgan"])
    assert a.run_id != b.run_id
    c = apply_overrides(cfg, ["data.source=fashion-mnist"])
    assert c.run_id != cfg.run_id
    adam, alternating = apply_overrides(cfg, ["train.optimizer=adam"]), apply_overrides(cfg, ["train.scheme=alternating"])
    assert apply_overrides(adam, ["train.decoupled_wd=true"]).run_id != adam.run_id
    assert apply_overrides(alternating, ["train.d_steps=2"]).run_id != alternating.run_id
    toy = preset("toy2d")
    for assignment in ("model.bias=true", "data.dtype=float32"):
        assert apply_overrides(toy, [assignment]).run_id != toy.run_id, assignment


def test_trace_mode_auto_keeps_every_run_id():
    # auto (the default since issue 24) and snapshots (the default before it) give the same result bit for bit and
    # share the id runs made before auto existed have (their config.json says snapshots); an explicit checkpoints
    # keeps the id it always had (pinned: ids computed before trace_mode=auto existed).
    tiny = preset("tiny")
    assert tiny.train.trace_mode == "auto" and tiny.run_id == "tiny-s0-1e0f29c33c"
    assert apply_overrides(tiny, ["train.trace_mode=snapshots"]).run_id == tiny.run_id
    assert apply_overrides(tiny, ["train.trace_mode=checkpoints"]).run_id == "tiny-s0-57dbc1ef05"
    assert preset("dcgan32").run_id == "dcgan32-s0-6ded49494f"
    # mnist-adam trained in float64 until 2026-12-05: runs of that preset keep their id under the override
    assert apply_overrides(preset("mnist-adam"), ["train.dtype=float64"]).run_id == "mnist-adam-s0-9d4933d88a"
    assert preset("mnist-adam").run_id == "mnist-adam-s0-03521a3835"
    # the budget decides the storage only
    assert apply_overrides(tiny, ["train.trace_budget_mb=1"]).run_id == tiny.run_id


def test_set_parses_ints_floats_bools_none_and_schedules():
    cfg = apply_overrides(preset("tiny"), [
        "train.epochs=4", "train.lr_d=1e-3", "train.lr_g=0.25", "eval.metrics_every_epoch=False",
        "data.n_train=None", "train.trace_steps=7", "seed=11", "train.lr_schedule=2:0.001:0.002,4:1e-4:5e-4",
    ])
    assert cfg.train.epochs == 4 and isinstance(cfg.train.epochs, int)
    assert cfg.train.lr_d == 1e-3 and isinstance(cfg.train.lr_d, float)
    assert cfg.train.lr_g == 0.25
    assert cfg.eval.metrics_every_epoch is False
    assert cfg.data.n_train is None
    assert cfg.train.trace_steps == 7
    assert cfg.seed == 11
    assert cfg.train.lr_schedule == ((2, 0.001, 0.002), (4, 1e-4, 5e-4))
    assert cfg.lr_at_epoch(1) == (1e-3, 0.25)
    assert cfg.lr_at_epoch(2) == (0.001, 0.002) == cfg.lr_at_epoch(3)
    assert cfg.lr_at_epoch(4) == (1e-4, 5e-4)
    # bools: true/1/yes and false/0/no
    for raw, want in [("true", True), ("1", True), ("yes", True), ("no", False), ("0", False)]:
        assert apply_overrides(cfg, [f"eval.metrics_every_epoch={raw}"]).eval.metrics_every_epoch is want
    # an empty schedule clears it; the result is JSON round-trippable
    cleared = apply_overrides(cfg, ["train.lr_schedule=none"])
    assert cleared.train.lr_schedule == ()
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    assert apply_overrides(preset("tiny"), ["train.lr_schedule=20:0.001:0.001", "train.epochs=20"]).train.lr_schedule == (
        (20, 0.001, 0.001),
    )


@pytest.mark.parametrize(
    "assignment, message",
    [
        ("train.nope=1", "unknown config key 'train.nope'"),
        ("nope.lr=1", "unknown config key 'nope.lr'"),
        ("train=3", "unknown config key 'train'; train is a section: train.epochs, train.batch_size"),
        # a typo names the keys it is nearest to, not all sixty
        ("train.lr=1", "unknown config key 'train.lr'; did you mean train.lr_d, train.lr_g, train.lr_schedule?"),
        ("model.widht=8", "did you mean model.width"),
        ("train.lr_d", "--set expects key=value"),
        ("train.epochs=two", "train.epochs: cannot read 'two' as int"),
        ("train.lr_d=fast", "train.lr_d: cannot read 'fast' as float"),
        ("eval.metrics_every_epoch=maybe", "cannot read 'maybe' as bool"),
        ("train.epochs=None", "cannot read 'None' as int"),
        ("train.lr_schedule=2:0.1", "expected EPOCH:LR_D:LR_G"),
        ("train.lr_schedule=a:0.1:0.1", "expected EPOCH:LR_D:LR_G"),
        ("train.lr_schedule=5:0.1:0.1", "lr_schedule epochs must lie in 1..epochs"),
        ("train.lr_d=-0.01", "learning rates must be positive"),
        ("train.lr_g=0", "learning rates must be positive"),
        ("train.lr_schedule=2:0.001:-1", "learning rates must be positive"),
        ("train.batch_size=0", "train.batch_size must be at least 1"),
        ("train.trace_epochs=3", "train.trace_epochs must lie in 1..epochs"),
        ("model.arch=resnet", "model.arch must be one of"),
        ("model.arch=fcgan", "fcgan goes with normal2d data"),
        ("train.dtype=float16", "train.dtype must be one of"),
        ("train.weight_decay=-1", "weight_decay must not be negative"),
        ("data.image_size=48", "data.image_size must be 28, 32, 64 or auto"),
        ("train.optimizer=lion", "train.optimizer must be one of"),
        ("train.betas=0.5", "expected two numbers 'BETA1,BETA2'"),
        ("train.betas=1.0,0.9", "train.betas must be two numbers in [0, 1)"),
        ("train.decoupled_wd=true", "train.decoupled_wd (AdamW) needs train.optimizer=adam"),
        ("train.scheme=sequential", "train.scheme must be one of"),
        ("train.d_steps=2", "train.d_steps > 1 needs train.scheme=alternating"),
        ("train.ema_decay=1", "train.ema_decay must lie in [0, 1)"),
        ("train.trace_mode=sometimes", "train.trace_mode must be one of"),
        ("train.checkpoint_every=0", "train.checkpoint_every must be positive"),
        ("model.init=he", "model.init must be one of"),
        ("model.bias=false", "model.bias=false is implemented for fcgan only"),
        ("data.dtype=float64", "data.dtype=float64 applies to normal2d data only"),
    ],
)
def test_bad_overrides_raise_config_error_with_a_clear_message(assignment, message):
    with pytest.raises(ConfigError) as info:
        apply_overrides(preset("tiny"), [assignment])
    assert message in str(info.value)
    assert "\n" not in str(info.value).split("valid keys")[0]


def test_unknown_key_names_the_nearest_and_where_all_are(capsys):
    with pytest.raises(ConfigError, match=r"did you mean train.lr_d\b.*train --help. lists every key"):
        apply_overrides(preset("tiny"), ["train.lrd=0.1"])
    from influence.cli import main  # the help the message points to lists every key
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    shown = capsys.readouterr().out
    assert all(f"train.{f.name}" in shown for f in dataclasses.fields(RunConfig().train))


def test_from_dict_rejects_unknown_keys():
    d = preset("tiny").to_dict()
    d["train"]["velocity"] = 0.9
    with pytest.raises(ConfigError, match="train.velocity"):
        RunConfig.from_dict(d)


def test_batch_larger_than_the_data_set_is_a_config_error(tmp_path):
    cfg = apply_overrides(toy_config(), ["data.n_train=50"])  # batch_size 100 > 50 points
    with pytest.raises(ConfigError, match=r"train.batch_size=100 is larger than the training set \(50\)"):
        RunContext.create(cfg, tmp_path)
    ok = apply_overrides(toy_config(), ["data.n_train=100"])
    assert RunContext.create(ok, tmp_path).dataset.n_train == 100
