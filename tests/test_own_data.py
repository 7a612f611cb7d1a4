"""Own images end to end (issue 12): file paths in the table and removal CSVs, the cleaned export,
autoencoder features, honest metric verdicts, named results, the data map, Inception weights from the
torch hub cache, and starting a run from pretrained G/D state dicts."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from _helpers import copy_run, tiny_config
from influence import classifier, conditions, datamap, store
from influence.cli import main
from influence.config import DataConfig, EvalConfig, ModelConfig, RunConfig, TrainConfig, with_init_checksums
from influence.context import RunContext
from influence.data import prepare
from influence.errors import ConfigError
from influence.estimator import (EstimateOptions, cached_results, choose_results, chosen_name, estimate, harmful_order,
                                 result_sets)
from influence.export import export_cleaned
from influence.context import check_split_sizes
from influence.honesty import INFORMATIVE, UNINFORMATIVE, metric_report, reference_line, verdicts
from influence.removal import read_removal_csv, removal_csv
from influence.validation.spotcheck import spot_check
from influence.validation.trust import verdict
from influence.train import Trace, train

N_IMAGES = 240  # 10% validation and 10% test: 24 each, above the minimum of 20


def _tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """A trained run on an unlabelled folder of 32x32 RGB images in nested sub-folders, with unreadable files."""
    base = tmp_path_factory.mktemp("own")
    images = base / "images"
    rng = np.random.default_rng(0)
    for i in range(N_IMAGES):
        rel = Path(f"a{i % 3}") / (f"b{i % 2}" if i % 5 else "") / f"img_{i:04d}.png"
        (images / rel).parent.mkdir(parents=True, exist_ok=True)
        img = np.full((32, 32, 3), rng.integers(0, 256, 3), dtype=np.uint8)
        img[8:24, 8:24] = rng.integers(0, 256, 3)
        Image.fromarray(img).save(images / rel)
    (images / "a0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (images / "notes.txt").write_text("not an image")
    cfg = prepare(RunConfig(
        preset="owntest",
        data=DataConfig(source="folder", root=str(images), image_size=32, color="rgb", labels="none", n_valid=24,
                        n_test=24),
        model=ModelConfig(arch="dcgan", width=4, z_dim=8),
        train=TrainConfig(epochs=2, batch_size=48, lr_d=0.001, lr_g=0.001, dtype="float64"),
        eval=EvalConfig(n_valid_z=50, n_test_z=50, n_grid=16, feature="autoencoder"),
    ))
    root = base / "store"
    with mock.patch.object(classifier, "AE_STEPS", 40):
        run = train(cfg, root)
        estimate(run, ["fid", "dloss"])
    return run, images, cfg


def test_folder_instances_keep_their_paths(own):
    run, images, cfg = own
    ds = RunContext.create(cfg, run.root).dataset
    paths = ds.train_paths
    assert len(paths) == ds.n_train == N_IMAGES - 2 * (N_IMAGES // 10)
    assert sorted(paths + ds.paths["valid"] + ds.paths["test"]) == sorted(
        p for p in _tree(images) if p.endswith(".png") and "broken" not in p)
    # each path holds the image at that id: decode the file again and compare
    for i in (0, 7, len(paths) - 1):
        arr = np.asarray(Image.open(images / paths[i]).convert("RGB"), dtype=np.float32).transpose(2, 0, 1)
        assert np.allclose(arr / 127.5 - 1, ds.train.x[i].numpy(), atol=1e-6)
    assert ds.train.y is None and {n for n, _ in ds.skipped} == {"a0/broken.png", "notes.txt"}


def test_table_csv_is_plain_with_paths_and_a_sidecar(own):
    run, _, cfg = own
    table = pd.read_csv(run.path("influence/table.csv"))  # no comment lines
    ds = RunContext.create(cfg, run.root).dataset
    assert list(table.columns[:3]) == ["id", "path", "label"] and table["path"].tolist() == ds.train_paths
    meta = json.loads(run.path("influence/table.json").read_text())
    assert meta["result"] == chosen_name(run) and set(meta["metrics"]) == {"fid", "dloss"}
    assert "traced steps only (the last 1 of 2 epochs, 4 of 8 steps)" in meta["metrics"]["fid"]["if_removed"]
    parquet = pd.read_parquet(run.path("influence/table.parquet"))
    assert np.array_equal(parquet["influence_fid"].to_numpy(), cached_results(run)["fid"].scores)


def test_removal_csv_by_path_id_or_both(own):
    run, _, cfg = own
    ds = RunContext.create(cfg, run.root).dataset
    paths, n = ds.train_paths, ds.n_train
    text = removal_csv([5, 2], ds, cached_results(run)).decode()
    assert text.splitlines()[0] == "id,path,label,influence_fid,influence_dloss"
    assert read_removal_csv(text, n, paths) == [5, 2]
    assert read_removal_csv(f"path\n{paths[9]}\n{paths[1]}\n", n, paths) == [9, 1]
    with pytest.raises(ConfigError, match="line 2: 'nope.png' is not a training image"):
        read_removal_csv("path\nnope.png\n", n, paths)
    with pytest.raises(ConfigError, match="ids and paths disagree"):
        read_removal_csv(f"id,path\n3,{paths[4]}\n", n, paths)
    with pytest.raises(ConfigError, match="no file paths"):
        read_removal_csv("path\nx.png\n", n, None)


def test_export_copies_the_original_files_and_leaves_the_source_alone(own, tmp_path):
    run, images, cfg = own
    ds = RunContext.create(cfg, run.root).dataset
    before = _tree(images)
    removed = [0, 3, 17]
    manifest = export_cleaned(run, removed, tmp_path / "clean", why="test")
    out = _tree(tmp_path / "clean")
    kept = [p for i, p in enumerate(ds.train_paths) if i not in removed]
    assert set(out) == set(kept) | {"manifest.json", "removed.csv"}  # exactly these files
    assert all(out[p] == before[p] for p in kept)  # byte for byte
    assert _tree(images) == before
    assert manifest["n_exported"] == len(kept) and manifest["n_removed"] == 3 and manifest["why"] == "test"
    assert pd.read_csv(tmp_path / "clean" / "removed.csv")["path"].tolist() == [ds.train_paths[i] for i in removed]
    with pytest.raises(ConfigError, match="overlaps the source"):
        export_cleaned(run, removed, images / "inside")
    with pytest.raises(ConfigError, match="not empty"):
        export_cleaned(run, removed, tmp_path / "clean")
    assert _tree(images) == before and not (images / "inside").exists()
    # an estimate no replay has tested says so; the manifest never guesses a level
    assert {m: t["groups"] for m, t in manifest["trust"].items()} == {"fid": "not checked", "dloss": "not checked"}
    assert manifest["trust_check_file"] is None


def test_export_manifest_carries_the_spot_checks_levels(own, tmp_path, capsys):
    run, _, _ = own
    run = copy_run(run, tmp_path / "store")  # the check is written to a copy: other tests see the run unchecked
    check = spot_check(run, ["fid", "dloss"], level="full")
    manifest = export_cleaned(run, [0, 3], tmp_path / "clean")
    results = cached_results(run)
    for m in ("fid", "dloss"):
        levels = verdict(results[m], check)  # what the CLI's and the app's cards say
        assert manifest["trust"][m] == {k: levels[k] for k in ("groups", "singles", "summary", "measured")}
        assert levels["checked"] and manifest["trust"][m]["measured"]
    assert run.exists(manifest["trust_check_file"])
    assert json.loads((tmp_path / "clean" / "manifest.json").read_text())["trust"] == manifest["trust"]
    assert main(["--store", str(run.root), "export", "--run", run.run_id, "--top-harmful", "3", "--by", "fid",
                 "--to", str(tmp_path / "x")]) == 0
    said = capsys.readouterr().out.splitlines()
    assert f"  trust of the estimate (FID): {manifest['trust']['fid']['summary']}" in said


def test_cli_export_by_path_and_estimate_json_paths(own, tmp_path, capsys):
    run, _, cfg = own
    ds = RunContext.create(cfg, run.root).dataset
    removal = tmp_path / "r.csv"
    removal.write_text("path\n" + "\n".join(ds.train_paths[:4]) + "\n")
    assert main(["--store", str(run.root), "export", "--run", run.run_id, "--removal", str(removal),
                 "--to", str(tmp_path / "x"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_exported"] == ds.n_train - 4
    assert main(["--store", str(run.root), "estimate", "--run", run.run_id, "--metric", "fid", "--json"]) == 0
    top = json.loads(capsys.readouterr().out)["fid"]["most_harmful"]
    assert all(t["path"] == ds.train_paths[t["id"]] for t in top)


def test_cli_export_without_the_most_harmful_is_the_set_cleanse_replays_without(own, tmp_path, capsys):
    run, _, cfg = own
    ds = RunContext.create(cfg, run.root).dataset
    assert main(["--store", str(run.root), "export", "--run", run.run_id, "--top-harmful", "3", "--by", "fid",
                 "--to", str(tmp_path / "x"), "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    worst = harmful_order(cached_results(run)["fid"])[:3]  # FID: the most negative influences
    assert manifest["why"] == "the 3 most harmful by influence on FID" and manifest["n_removed"] == 3
    assert pd.read_csv(tmp_path / "x" / "removed.csv")["path"].tolist() == [ds.train_paths[i] for i in worst]


def test_autoencoder_features_and_their_report(own):
    run, _, cfg = own
    report = metric_report(run)
    assert report["features"]["feature"] == "autoencoder" and not report["features"]["comparable"]
    assert "fid_real_halves" in report["reference"] and "is_real" not in report["reference"]
    # the splits (24 images) are below the informative minimum: every metric says so
    assert all(v["verdict"] == UNINFORMATIVE and "only 24" in v["reasons"][0] for v in report["verdicts"].values())


def test_a_jobs_autoencoder_counts_its_steps_and_can_be_cancelled(own, tmp_path, monkeypatch):
    """A job that trained the autoencoder (about a minute at 800 steps) showed no count and could not be cancelled
    until it was done: its start-up now reports the steps, and a cancel stops it without a cache entry."""
    from influence import jobs
    from influence.errors import Cancelled
    from influence.progress import CancelToken

    _, _, cfg = own
    spec = {"kind": "train", "params": {"config": dataclasses.replace(cfg, seed=1).to_dict()}}  # a run not trained yet
    seen, token = [], CancelToken()

    def cancel_after_the_first_report(p) -> None:
        seen.append(p)
        if p.stage == "feature-net" and p.done:
            token.set()

    with mock.patch.object(classifier, "AE_STEPS", 20):
        monkeypatch.setenv(store.ENV_CACHE, str(tmp_path / "cache"))
        with jobs._started_up(tmp_path / "store", spec, seen.append, CancelToken()):
            pass
        counted = [(p.done, p.total, p.info.get("unit")) for p in seen if p.stage == "feature-net" and p.total]
        assert counted == [(i, 20, "step") for i in range(1, 21)]
        monkeypatch.setenv(store.ENV_CACHE, str(tmp_path / "cache2"))
        with pytest.raises(Cancelled), jobs._started_up(tmp_path / "store", spec, cancel_after_the_first_report, token):
            pass
    assert not list((tmp_path / "cache2").glob("autoencoder-*"))


def test_a_feature_net_records_the_threads_it_was_trained_at(own, tmp_path):
    """The autoencoder's weights depend on the thread count it was trained at (1 against 2 threads: 3e-3 apart
    after 30 steps) and on the processor's kernels, so two stores' FIDs differ unless they match: both are recorded
    and shown beside them."""
    run, _, cfg = own
    ds, ident = RunContext.create(cfg, run.root).dataset, cfg.identity()["data"]
    with mock.patch.object(classifier, "AE_STEPS", 5):  # a fresh cache: this process trains it
        classifier.load_feature_net(cfg.eval, ds, ident, tmp_path)
        info = classifier.feature_info(cfg.eval, ident, tmp_path)
    assert info["conditions"] == {"threads": torch.get_num_threads(), "device": "cpu", "dtype": "float32",
                                  "torch": torch.__version__, "processor": conditions.processor("cpu")}
    line = reference_line({"features": info})
    assert (f"feature net trained at {torch.get_num_threads()} torch threads on {platform.machine()} "
            f"{torch.backends.cpu.get_cpu_capability()} (torch") in line


def test_verdicts_name_the_reason():
    good = verdicts(False, {"test_accuracy": 0.97, "n_classes": 10}, {"is_real": 9.5}, 1000, 1000)
    assert all(v["verdict"] == INFORMATIVE for v in good.values())
    chance = verdicts(False, {"test_accuracy": 0.52, "n_classes": 2}, {"is_real": 1.0}, 1000, 1000)
    assert chance["fid"]["verdict"] == UNINFORMATIVE and "near chance" in chance["fid"]["reasons"][0]
    assert any("IS of the real test images is 1" in r for r in chance["is"]["reasons"])
    assert chance["dloss"]["verdict"] == INFORMATIVE  # D-loss does not use the features
    ae = verdicts(False, {"test_r2": 0.02}, {}, 1000, 1000)
    assert "autoencoder explains only 2.0%" in ae["fid"]["reasons"][0]
    with pytest.raises(ConfigError, match="validation split has 5 instances; at least 20"):
        check_split_sizes(5, 100)


def test_named_results_never_replace_each_other(toy_run, tmp_path):
    run = copy_run(toy_run, tmp_path)
    first = chosen_name(run)
    full = cached_results(run)["all"].scores.copy()
    other = estimate(run, ["all"], EstimateOptions(last_steps=3))["all"]
    assert set(result_sets(run)) == {first, first.replace("-v", "-last3-v")}
    assert chosen_name(run) == first and np.array_equal(cached_results(run)["all"].scores, full)
    ds = RunContext.create(RunConfig.from_dict(run.read_json("config.json")), run.root).dataset
    choose_results(run, first.replace("-v", "-last3-v"), ds)
    assert np.array_equal(cached_results(run)["all"].scores, other.scores)
    assert np.array_equal(pd.read_csv(run.path("influence/table.csv"))["influence_all"], other.scores)
    with pytest.raises(ConfigError, match="no influence result 'nope'"):
        choose_results(run, "nope")


def test_map_embedding_and_neighbours(own):
    run, _, cfg = own
    ctx = RunContext.create(cfg, run.root)
    feats = datamap.training_features(run, ctx)
    coords = datamap.embedding(run, "pca", ctx)
    assert coords.shape == (ctx.dataset.n_train, 2) and run.exists("map/pca.npy")
    z = (feats - feats.mean(0)) / (feats.std(0) + 1e-8)
    _, _, vt = np.linalg.svd(z - z.mean(0), full_matrices=False)
    reference = (z - z.mean(0)) @ vt[:2].T  # PCA by hand; components agree up to sign
    assert np.allclose(np.abs(coords), np.abs(reference), atol=1e-3 * np.abs(reference).max())
    ids, dist = datamap.nearest(feats, 4, 5)
    brute = np.argsort(np.linalg.norm(feats - feats[4], axis=1))[1:6]
    assert ids.tolist() == brute.tolist() and np.all(np.diff(dist) >= 0)


# ---------------------------------------------------------------- Inception weights
def _random_inception_state() -> dict[str, torch.Tensor]:
    from pytorch_fid import inception as fid_inception

    with mock.patch.object(fid_inception, "load_state_dict_from_url", lambda *a, **k: {}), \
            mock.patch.object(torch.nn.Module, "load_state_dict", lambda self, *a, **k: None):
        torch.manual_seed(0)
        return fid_inception.fid_inception_v3().state_dict()


def test_inception_weights_from_the_hub_cache(tmp_path, monkeypatch):
    from pytorch_fid.inception import InceptionV3

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("GAN_INFLUENCE_OFFLINE", "1")
    with pytest.raises(ConfigError) as err:
        classifier.load_inception()
    message = str(err.value)
    assert classifier.INCEPTION_FILE in message and str(tmp_path / "torch" / "hub" / "checkpoints") in message
    state = _random_inception_state()
    target = tmp_path / "torch" / "hub" / "checkpoints" / classifier.INCEPTION_FILE
    target.parent.mkdir(parents=True)
    torch.save(state, target)
    net = classifier.load_inception()
    x = torch.rand(2, 1, 28, 28) * 2 - 1
    with torch.no_grad():
        feats, probs = net(x)
        from pytorch_fid import inception as fid_inception

        with mock.patch.object(fid_inception, "load_state_dict_from_url", lambda *a, **k: state):
            reference = InceptionV3([3], resize_input=True, normalize_input=False).eval()
        expected = reference(x.expand(-1, 3, -1, -1))[0].flatten(1)
    assert feats.shape == (2, 2048) and torch.allclose(feats, expected, atol=1e-5)
    assert probs.shape == (2, 1008) and torch.allclose(probs.sum(1), torch.ones(2, dtype=probs.dtype))
    expected_probs = torch.softmax(expected @ state["fc.weight"].T + state["fc.bias"], 1)
    assert torch.allclose(probs.float(), expected_probs, atol=1e-5)


# ---------------------------------------------------------------- bring your own GAN
def _with_init(cfg: RunConfig, g: Path, d: Path) -> RunConfig:
    return with_init_checksums(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, init_g=str(g),
                                                                                  init_d=str(d))))


def test_import_round_trip(tiny_run, tmp_path):
    g, d = tiny_run.path("weights/generator.pt"), tiny_run.path("weights/discriminator.pt")
    base = tiny_config(seed=1)
    cfg = _with_init(dataclasses.replace(base, train=dataclasses.replace(base.train, epochs=1, lr_schedule=())), g, d)
    assert cfg.model.init_g_sha256 == hashlib.sha256(g.read_bytes()).hexdigest()
    assert cfg.run_id != dataclasses.replace(cfg, model=dataclasses.replace(
        cfg.model, init_g_sha256="0" * 64)).run_id  # the checksum is part of the id
    run = train(cfg, tmp_path / "s")
    trace = Trace.load(run)
    assert trace.first_step == 0
    initial = torch.from_numpy(np.array(trace.states[0][: trace.layout.n_theta]))
    theta_d, theta_g = trace.split(initial)
    gan, _, _ = RunContext.create(cfg, tmp_path / "s").new_gan()
    files_d = torch.cat([t.reshape(-1) for t in store.load_state_dict(d).values()])
    files_g = torch.cat([t.reshape(-1) for t in store.load_state_dict(g).values()])
    assert torch.equal(theta_d, files_d.to(theta_d.dtype)) and torch.equal(theta_g, files_g.to(theta_g.dtype))


def test_safetensors_wrong_shapes_and_batchnorm_are_refused(tiny_run, tmp_path):
    from safetensors.torch import save_file

    g, d = tiny_run.path("weights/generator.pt"), tiny_run.path("weights/discriminator.pt")
    state = store.load_state_dict(g)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "g.safetensors"))
    ctx = RunContext.create(_with_init(tiny_config(), tmp_path / "g.safetensors", d), tmp_path / "s")
    _, G, _ = ctx.new_gan()
    assert all(torch.equal(p.detach(), state[n].to(p.dtype)) for n, p in G.named_parameters())
    wide = _with_init(dataclasses.replace(tiny_config(), model=dataclasses.replace(tiny_config().model, width=16)), g, d)
    with pytest.raises(ConfigError, match=r"layer .net.0.weight. has shape \(32, 8, 2, 2\) in the file but "
                                          r"\(32, 16, 2, 2\)"):
        RunContext.create(wide, tmp_path / "s").new_gan()
    bn = dict(store.load_state_dict(d), **{"features.1.running_mean": torch.zeros(8)})
    torch.save(bn, tmp_path / "bn.pt")
    with pytest.raises(ConfigError, match="layer 'features.1' is a BatchNorm layer"):
        RunContext.create(_with_init(tiny_config(), g, tmp_path / "bn.pt"), tmp_path / "s").new_gan()
    with pytest.raises(ConfigError, match="model.init_g: cannot read"):
        _with_init(tiny_config(), tmp_path / "missing.pt", d)


def _labelled_split(n: int, seed: int):
    """Two classes a small CNN separates easily: the brighter half of a noisy 28x28 gray image, left or right."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.rand(n, 1, 28, 28, generator=g) * 0.6 - 0.8
    x[y == 0, :, :, :14] += 1.0
    x[y == 1, :, :, 14:] += 1.0
    return SimpleNamespace(x=x, y=y)


def test_a_classifier_stalled_at_the_papers_rate_is_trained_again_at_a_lower_one():
    # 400 images: the classifier trains on the training split (the validation split is under 5,000)
    data = SimpleNamespace(train=_labelled_split(400, 0), valid=_labelled_split(40, 1), test=_labelled_split(200, 2))
    net, accuracy, how = classifier.train_classifier(data, epochs=6)
    assert how["lr"] == classifier.CLASSIFIER_LR and list(how["training_accuracy"]) == ["0.01"] and accuracy > 0.9
    # a rate at which the sigmoid units saturate at once stalls near chance: the retry's net is kept, and it is
    # the net a direct training at the retry rate gives, weight for weight
    with mock.patch.object(classifier, "CLASSIFIER_LR", 50.0):
        net, accuracy, how = classifier.train_classifier(data, epochs=6)
    stalled, retried = how["training_accuracy"]["50.0"], how["training_accuracy"]["0.001"]
    assert stalled < 0.75 <= retried and how["lr"] == classifier.CLASSIFIER_RETRY_LR and accuracy > 0.9
    direct, fit = classifier._fit(data.train, 2, classifier.CLASSIFIER_RETRY_LR, 6, None)
    assert fit == retried
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), direct.state_dict().values()))
