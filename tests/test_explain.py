"""Influence on chosen generated samples: each objective's gradient against finite differences, the stacked
samples x instances matrix against single-sample passes, predictions against actual replays (the 2D
displacements, clarity on MNIST), naming by identity, near-copy signals against a direct computation, the CLI."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from influence import datamap, jobs, store
from influence.cli import main
from influence.context import RunContext, load_run_config
from influence.errors import ConfigError, InfluenceError
from influence.estimator import EstimateOptions, objective_gradients
from influence.objectives import build, features_of
from influence.samples import check, explain, find, latents, load, nearcopy
from influence.samples.explain import final_parameters
from influence.samples.pool import sample_pool
from influence.specs import explain_spec
from influence.train import Trace

from _helpers import copy_run, tree

# The tiny run's trace is 10 steps; its passes here walk the last few (each row costs a double backward), and
# checks replay the same steps.
SHORT = EstimateOptions(last_steps=3)
ONE = EstimateOptions(last_steps=1)


@pytest.fixture(scope="module")
def tiny(tiny_run, tmp_path_factory):
    return copy_run(tiny_run, store.store_root(tmp_path_factory.mktemp("explain_tiny")), keep_results=False)


@pytest.fixture(scope="module")
def toy(toy_run, tmp_path_factory):
    return copy_run(toy_run, store.store_root(tmp_path_factory.mktemp("explain_toy")), keep_results=False)


def _objective(run, text, n=3, seed=0):
    cfg = load_run_config(run)
    ctx = RunContext.create(cfg, run.root, dtype="float64")
    trace = Trace.load(run)
    final_d, final_g = final_parameters(ctx, trace)
    return ctx, final_d, final_g, build(ctx, final_d, final_g, text, latents.latents(cfg, {"seed": seed, "n": n}))


@pytest.mark.parametrize("run_name, text", [("tiny", "realism"), ("tiny", "clarity"), ("tiny", "reference:#7"),
                                            ("tiny", "class:3"), ("toy", "position"), ("toy", "reference:#7")])
def test_objective_gradients_match_finite_differences(request, run_name, text):
    ctx, final_d, final_g, obj = _objective(request.getfixturevalue(run_name), text)
    u_d, u_g, values = objective_gradients(ctx, [obj], final_d, final_g)
    assert u_d.shape[0] == obj.rows == len(values)
    gen = torch.Generator().manual_seed(1)
    v_d = torch.randn(final_d.shape, generator=gen, dtype=torch.float64)
    v_g = torch.randn(final_g.shape, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        fd = [(obj.values(ctx, final_d + eps * v_d, final_g + eps * v_g)
               - obj.values(ctx, final_d - eps * v_d, final_g - eps * v_g)) / (2 * eps) for eps in (1e-7, 1e-8)]
        assert np.allclose(obj.values(ctx, final_d, final_g).numpy(), values, rtol=1e-12)
    analytic = u_d @ v_d + u_g @ v_g
    # the nets' ReLUs: where a pre-activation lies within eps of its kink (one host's weights put a sample's
    # between 1e-7 and 1e-6 away along v: its differences at 1e-6 and 1e-5 were 0.5% off, at 1e-7 within 1e-9)
    # the difference quotient is not the derivative; two steps, and each row must match at one of them
    close = [torch.isclose(analytic, f, rtol=1e-5, atol=1e-9 * analytic.abs().max()) for f in fd]
    assert bool((close[0] | close[1]).all()), (analytic, fd)
    assert u_d.abs().max() == 0  # functions of the generator alone (realism holds D at the trained run's)


def test_the_matrix_rows_equal_single_sample_passes(tiny):
    cfg = load_run_config(tiny)
    both = explain(tiny, {"seed": 3, "n": 3}, "realism", SHORT)
    z = latents.latents(cfg, {"seed": 3, "n": 3}).numpy()
    assert both.matrix.shape == (3, cfg.data.n_train) and np.array_equal(both.z, z)
    for i in (0, 2):
        single = explain(tiny, {"z": z[i:i + 1].tolist()}, "realism", SHORT)
        assert single.name != both.name
        scale = np.abs(single.matrix).max()
        assert np.allclose(both.matrix[i], single.matrix[0], rtol=1e-4, atol=1e-5 * scale)
        assert np.isclose(both.values[i], single.values[0], rtol=1e-5)
        assert np.abs(single.matrix[0]).max() > 0


def test_toy_position_predicts_the_actual_displacements(toy):
    """For 4 generated points: a replay without each one's 20 most pulling points (largest predicted
    displacement) moves it as the sum of those displacements predicts."""
    e = explain(toy, {"seed": 0, "n": 4}, "position")
    assert e.matrix.shape == (8, 2000) and e.is_vector
    result = check(toy, e, [0, 1, 2, 3], k=20)
    s = result["summary"]
    assert min(s["cosine"]) > 0.9, s
    assert all(0.5 < r < 2.0 for r in s["length_ratio"]), s
    top = next(lane for lane in result["lanes"] if lane["kind"] == "top" and lane["sample"] == 0)
    assert sorted(top["ids"]) == sorted(e.responsible(0, 20).tolist())
    assert np.allclose(top["predicted"], e.matrix[:2, top["ids"]].sum(1))
    generated = toy.read_npy(f"explain/{e.name}/checks/{result['key']}-generated.npy")
    assert generated.shape == (1 + 8, 4, 2)
    assert np.allclose(generated[0], e.generated, atol=1e-12)  # lane 0 = the run's own samples
    assert np.allclose(generated[1, 0] - generated[0, 0], top["actual"], atol=1e-7)  # stored as float32
    assert check(toy, e, [0, 1, 2, 3], k=20) == result  # stored


def test_clarity_check_on_mnist_moves_as_predicted(tiny):
    """Removing a sample's 5% most harmful images (by clarity) raises its clarity as predicted, more than 5%
    random images do."""
    e = explain(tiny, {"seed": 5, "n": 2}, "clarity", SHORT)
    trace = Trace.load(tiny)
    window = trace.step_of_instance(1000, trace.steps - 3) >= 0
    n_traced = int(window.sum())
    assert (e.matrix[:, ~window] == 0).all()
    result = check(tiny, e, [0, 1], k=n_traced // 20)
    assert result["summary"]["top_moves_as_predicted"] == 1.0
    assert result["summary"]["top_beats_random"] == 1.0
    for lane in result["lanes"]:
        if lane["kind"] == "top":
            assert lane["predicted"][0] > 0 and lane["actual"][0] > 0.3 * lane["predicted"][0]


def test_results_are_named_by_the_objectives_identity(tiny):
    a = explain(tiny, {"seed": 3, "n": 3}, "realism", SHORT)
    stamp = tiny.path(f"explain/{a.name}/matrix.npy").stat().st_mtime_ns
    again = explain(tiny, {"seed": 3, "n": 3}, "realism", SHORT)
    assert again.name == a.name and tiny.path(f"explain/{a.name}/matrix.npy").stat().st_mtime_ns == stamp
    assert np.array_equal(again.matrix, a.matrix)
    assert find(tiny, "realism", a.z).name == a.name
    other = explain(tiny, {"seed": 4, "n": 1}, "realism", ONE)
    assert other.meta["identity"]["z_sha256"] != a.meta["identity"]["z_sha256"] and other.name.endswith("-last1-v1")
    ref7 = explain(tiny, {"seed": 4, "n": 1}, "reference:#7", ONE)
    ref8 = explain(tiny, {"seed": 4, "n": 1}, "reference:#8", ONE)
    assert len({a.name, other.name, ref7.name, ref8.name}) == 4
    assert ref7.meta["identity"]["reference"] == {"train_id": 7} and ref7.meta["harmful_sign"] == 1
    assert a.name.startswith("realism-") and a.name.endswith("-last3-v1")


def test_an_uploaded_reference_is_named_by_its_pixels(tiny, tmp_path):
    x = RunContext.create(load_run_config(tiny), tiny.root).dataset.train.x[7]
    png = io.BytesIO()
    Image.fromarray(((x[0].numpy() + 1) * 127.5).round().astype(np.uint8)).save(png, format="PNG")
    (tmp_path / "a.png").write_bytes(png.getvalue())
    (tmp_path / "b.png").write_bytes(png.getvalue())
    ctx, final_d, final_g, by_id = _objective(tiny, "reference:#7")
    _, _, _, by_file = _objective(tiny, f"reference:{tmp_path / 'a.png'}")
    _, _, _, same = _objective(tiny, f"reference:{tmp_path / 'b.png'}")
    assert by_file.name != by_id.name and same.identity()["reference"]["image_sha256"] == by_file.identity()["reference"]["image_sha256"]
    with torch.no_grad():  # the file holds the training image's pixels: the same distances
        assert torch.allclose(by_file.values(ctx, final_d, final_g), by_id.values(ctx, final_d, final_g), atol=1e-6)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(InfluenceError, match="cannot read"):
        _objective(tiny, f"reference:{tmp_path / 'bad.png'}")


def test_class_share_wants_the_way_back_to_the_data(tiny):
    ctx, final_d, final_g, obj = _objective(tiny, "class:3", n=50)
    with torch.no_grad():
        share = float(obj.values(ctx, final_d, final_g))
    probs = torch.softmax(ctx.features.net.features_and_logits(ctx.gan.generate(final_g, obj.z))[1], 1)
    assert np.isclose(share, float(probs[:, 3].mean()), rtol=1e-10)
    data_share = float((ctx.dataset.train.y == 3).double().mean())
    assert obj.want == ("less" if share > data_share else "more") and obj.harmful_sign == (1 if obj.want == "more" else -1)
    assert _objective(tiny, "class:3:less", n=50)[3].harmful_sign == -1


@pytest.mark.parametrize("text, match", [("blurriness", "unknown objective"), ("class:x", "neither a class number"),
                                         ("class:12", "not in 0..9"), ("position", "2D toy"),
                                         ("reference:#5000", "not in 0..999"), ("reference", "needs an image"),
                                         ("realism:3", "takes no argument")])
def test_bad_objectives_are_config_errors(tiny, text, match):
    with pytest.raises(ConfigError, match=match):
        _objective(tiny, text)


def test_near_copy_signals_match_a_direct_computation(tiny):
    e = explain(tiny, {"seed": 3, "n": 3}, "realism", SHORT)
    ctx = RunContext.create(load_run_config(tiny), tiny.root)
    train = datamap.training_features(tiny, ctx).astype(np.float64)
    with torch.no_grad():
        feats = features_of(ctx, torch.from_numpy(e.generated).to(ctx.dtype)).numpy()
    for i, row in e.nearcopy.iterrows():
        d = np.linalg.norm(train - feats[i], axis=1)
        assert row["nearest_id"] == int(np.argmin(d)) and np.isclose(row["nearest_distance"], d.min(), rtol=1e-5)
        a = np.sort(np.abs(e.matrix[i]))[::-1]
        assert np.isclose(row["top1_share"], a[0] / a.sum()) and np.isclose(row["top10_share"], a[:10].sum() / a.sum())
    # a sample that is one training image's copy, driven by a few images, is flagged; the others are not
    matrix = np.full((2, 50), 1e-3)
    matrix[0, :3] = 1.0
    features = np.random.default_rng(0).normal(size=(50, 4))
    near = nearcopy.signals(matrix, np.arange(2), features, np.stack([features[1] + 1e-3, features[1] + 5.0]),
                            nearcopy.typical_distance(features))
    assert near["likely_copy"].tolist() == [True, False] and near["nearest_id"].tolist()[0] == 1


def test_both_directions_and_the_exports(tiny):
    e = explain(tiny, {"seed": 3, "n": 3}, "realism", SHORT)
    strength = e.matrix[1] * e.harmful_sign
    assert np.array_equal(e.responsible(1, 5), np.argsort(-strength, kind="stable")[:5])
    assert np.array_equal(e.responsible(1, 5, "helpful"), np.argsort(strength, kind="stable")[:5])
    j = int(e.responsible(1, 1)[0])
    assert np.array_equal(e.footprint(j), np.argsort(-np.abs(e.matrix[:, j]), kind="stable"))
    table = pd.read_parquet(tiny.path(f"explain/{e.name}/matrix.parquet"))
    assert np.array_equal(table[["sample 0", "sample 1", "sample 2"]].to_numpy().T, e.matrix)
    top = pd.read_csv(tiny.path(f"explain/{e.name}/top.csv"))
    first = top[(top["sample"] == 1) & (top["side"] == "harmful")]
    assert first["id"].tolist()[:5] == e.responsible(1, 5).tolist()
    assert np.allclose(first["influence"].to_numpy()[:5], e.matrix[1, e.responsible(1, 5)])


def test_the_pool_ranks_stored_samples(tiny):
    pool = sample_pool(tiny)
    ctx = RunContext.create(load_run_config(tiny), tiny.root)
    final_d, final_g = final_parameters(ctx, Trace.load(tiny))
    with torch.no_grad():
        images = ctx.gan.generate(final_g, torch.from_numpy(pool.z).to(ctx.dtype))
        realism = ctx.gan.logits(final_d, images).numpy()
    assert np.allclose(pool.table["realism"], realism, rtol=1e-5)
    assert np.array_equal(pool.z, latents.pool_latents(load_run_config(tiny)).numpy())
    assert (pool.table["class"] >= 0).all() and (pool.table["clarity"] <= 0).all()
    assert pool.train_map.shape == (1000, 2) and sample_pool(tiny).table.equals(pool.table)  # cached


def test_the_explain_job_and_the_cli(capsys, toy, monkeypatch):
    spec = explain_spec(toy.run_id, {"seed": 1, "n": 2}, "position")
    result = jobs.run_job(toy.root, spec)
    e = load(toy, result["name"])
    assert e.kind == "position" and e.matrix.shape == (4, 2000)
    assert main(["--store", str(toy.root), "explain", "--run", toy.run_id, "--samples", "1:2", "--objective",
                 "position", "--json", "--top", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["name"] == e.name and len(out["samples"]) == 2
    assert [t["id"] for t in out["samples"][1]["top"]["largest"]] == e.responsible(1, 3).tolist()
    assert out["files"]["matrix"].endswith("matrix.parquet")
    assert main(["--store", str(toy.root), "explain", "--run", toy.run_id, "--samples", "1:2", "--objective",
                 "position", "--top", "3"]) == 0
    x, y = e.values[e.row_sample == 1]  # each sample's line names the objective and its value
    assert f"sample 1: position {x:.4g}, {y:.4g}; nearest training image #" in capsys.readouterr().out
    before = tree(toy.root)
    for argv, match in ((["--samples", "1:2", "--objective", "clarity"], "classifier of images"),
                        (["--samples", "0:65", "--objective", "position"], "at most 64"),
                        (["--samples", "nofile.npy", "--objective", "position"], "cannot read"),
                        (["--samples", "1:2", "--objective", "position", "--check", "5000"], "k must lie"),
                        (["--samples", "3:2", "--objective", "position", "--check", "0"], "k must lie"),
                        (["--samples", "3:2", "--objective", "position", "--check", "5", "--check-samples", "2"],
                         "check: samples must lie in 0..1")):
        code = main(["--store", str(toy.root), "explain", "--run", toy.run_id, *argv])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and err[-1].startswith("error: ") and match in err[-1], err
    assert tree(toy.root) == before  # every refusal came before a job: no pass on samples 3:2 was computed
