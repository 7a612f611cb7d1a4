"""Fine-tune and trace (issue 24): a trained GAN's next epoch traced, started from a run of the store or from files.

The fine-tune's first step is checked against an independent continuation of the source run's training: its
modules loaded from the weight files, torch.optim.Adam loaded from the exported optimizer state, the GAN losses
written out here."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from influence import store, tracelr
from influence.cli import main
from influence.config import apply_overrides
from influence.context import RunContext, load_run_config
from influence.errors import ConfigError
from influence.finetune import INIT_DIR, check_weights, from_files, from_run, weights_report
from influence.models import build_gan
from influence.train import Trace, initial_train_state, train

from _helpers import tiny_config, tree

LR = 2e-3


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> store.Run:
    """A one-epoch tiny run with Adam in float64: the trained GAN the tests fine-tune."""
    cfg = tiny_config()
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=1, optimizer="adam", dtype="float64",
                                                             lr_d=LR, lr_g=LR, lr_schedule=(), betas=(0.5, 0.999)))
    return train(cfg, store.store_root(tmp_path_factory.mktemp("finetune_store")))


def _modules(run: store.Run):
    """The run's trained G and D as modules, in float64."""
    G, D = (m.double() for m in build_gan(load_run_config(run).model, channels=1, size=28))
    for module, name in ((G, "generator"), (D, "discriminator")):
        module.load_state_dict(torch.load(run.dir / "weights" / f"{name}.pt", weights_only=True))
    return G, D


def test_the_first_fine_tuned_step_continues_the_runs_training(source):
    root = store.store_root(source.dir.parent)
    cfg = from_run(root, source.run_id, 1, keep_optimizer=True, trace_lr="schedule")
    assert (cfg.train.lr_d, cfg.train.lr_g, cfg.train.trace_epochs) == (LR, LR, 1)
    run = train(cfg, root)
    start = run.read_json("summary.json")["start"]
    assert start["optimizer_state"] == "supplied" and start["from_run"] == source.run_id
    trace, before = Trace.load(run), Trace.load(source)
    # the fine-tune starts where the run stopped: weights and Adam's moments, bit for bit
    assert np.array_equal(trace.states[0], before.final_state)

    # Independently: the run's modules and torch.optim.Adam with the exported state take the same step
    G, D = _modules(source)
    opts = {}
    for player, module in (("d", D), ("g", G)):
        opts[player] = torch.optim.Adam(module.parameters(), foreach=False)
        path = root / INIT_DIR / source.run_id / f"optimizer_{player}.pt"
        opts[player].load_state_dict(torch.load(path, weights_only=True))
    assert opts["d"].param_groups[0]["lr"] == LR and opts["d"].param_groups[0]["betas"] == (0.5, 0.999)
    ctx = RunContext.create(cfg, root)
    x = ctx.train_x[torch.from_numpy(trace.batch(0))].double()
    z = torch.tensor(trace.z[0], dtype=torch.float64)
    fake_logits = D(G(z))  # simultaneous: both players' gradients at the same parameters
    loss_d = F.softplus(-D(x)).mean() + F.softplus(fake_logits).mean()
    loss_g = F.softplus(-fake_logits).mean()
    grads_d = torch.autograd.grad(loss_d, list(D.parameters()), retain_graph=True)
    grads_g = torch.autograd.grad(loss_g, list(G.parameters()))
    for module, grads in ((D, grads_d), (G, grads_g)):
        for p, g in zip(module.parameters(), grads):
            p.grad = g
    opts["d"].step(), opts["g"].step()
    s = trace.layout.split(torch.tensor(trace.states[1]))
    flat = lambda m: torch.cat([p.detach().reshape(-1) for p in m.parameters()])  # noqa: E731
    torch.testing.assert_close(s.theta_d, flat(D), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(s.theta_g, flat(G), rtol=1e-9, atol=1e-12)
    exp_avg_sq = torch.cat([opts["d"].state[p]["exp_avg_sq"].reshape(-1) for p in D.parameters()])
    torch.testing.assert_close(s.buf_d[1], exp_avg_sq, rtol=1e-9, atol=1e-15)
    assert not torch.allclose(s.theta_d, torch.tensor(trace.states[0][: trace.n_d]), atol=1e-6)  # it moved


def test_a_fine_tunes_optimizer_state_is_fresh_unless_supplied(source):
    root = store.store_root(source.dir.parent)
    cfg = from_run(root, source.run_id, 1)
    state = initial_train_state(RunContext.create(cfg, root))
    assert all(float(b.abs().max()) == 0 for b in (*state.buf_d, *state.buf_g))
    assert RunContext.create(cfg, root).start_counts == (0, 0)
    kept = from_run(root, source.run_id, 1, keep_optimizer=True)
    assert RunContext.create(kept, root).start_counts == (10, 10)  # one epoch of 10 simultaneous steps
    assert kept.run_id != cfg.run_id  # the optimizer state's checksum is part of the id


def test_the_run_id_follows_the_weights_files(source, tmp_path):
    g, d = (source.dir / "weights" / f"{name}.pt" for name in ("generator", "discriminator"))
    copy_g = tmp_path / "g.pt"
    copy_g.write_bytes(g.read_bytes())
    base = from_files(tiny_config(), str(copy_g), str(d), 1)
    assert base.run_id == from_files(tiny_config(), str(g), str(d), 1).run_id  # the bytes, not the path
    state = torch.load(copy_g, weights_only=True)
    first = next(iter(state))
    state[first] = state[first] + 1e-6
    torch.save(state, copy_g)
    changed = from_files(tiny_config(), str(copy_g), str(d), 1)
    assert changed.run_id != base.run_id and changed.model.init_g_sha256 != base.model.init_g_sha256


def test_weights_of_another_architecture_are_refused_naming_the_layers(source, tmp_path, capsys):
    from safetensors.torch import save_file

    g, d = (source.dir / "weights" / f"{name}.pt" for name in ("generator", "discriminator"))
    state = torch.load(d, weights_only=True)
    save_file(state, str(tmp_path / "d.safetensors"))
    fits = from_files(tiny_config(), str(g), str(tmp_path / "d.safetensors"), 1)
    assert all(r["problem"] is None for r in weights_report(fits))
    check_weights(fits)

    wider = apply_overrides(tiny_config(), ["model.width=16"])
    report = weights_report(from_files(wider, str(g), str(d), 1))
    bad = [r for r in report if r["problem"]]
    assert bad and {r["player"] for r in bad} == {"G", "D"}
    named = bad[0]["layer"]
    assert named in torch.load(g, weights_only=True) and "shape" in bad[0]["problem"]

    root = tmp_path / "store"
    root.mkdir()
    before = tree(root)
    code = main(["--store", str(root), "finetune", "--preset", "tiny", "--init-g", str(g), "--init-d", str(d),
                 "--set", "model.width=16"])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith("error: the weights do not fit the configured smallcnn") and f"layer '{named}'" in err
    assert tree(root) == before  # nothing written
    with pytest.raises(ConfigError, match="starts from trained weights"):
        from_files(tiny_config(), str(g), None, 1)


def test_the_cli_fine_tunes_a_store_run_at_the_probed_rate(source, capsys, monkeypatch):
    monkeypatch.setattr(tracelr, "RUNGS", 2)  # a short ladder: the test is about the workflow
    root = store.store_root(source.dir.parent)
    argv = ["--store", str(root), "finetune", "--from", source.run_id, "--json", "--set", "train.trace_lr_probe_steps=2"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    run = store.open_run(root, out["run_id"])
    cfg = load_run_config(run)
    assert out["run_id"].startswith("tiny-ft-s0-") and cfg.train.trace_lr == "auto" and cfg.model.init_from_run
    assert out["start"]["optimizer_state"] == "fresh" and "optimizer state fresh" in out["start"]["sentence"]
    probe = out["trace_lr"]
    assert probe == run.read_json("summary.json")["trace_lr"] and probe["probe_steps"] == 2
    assert probe["rungs"][0]["lr_d"] == LR and probe["traced_steps"] == 10 == len(Trace.load(run).lrs)
    assert np.all(Trace.load(run).lrs == probe["chosen"][0])  # the traced epoch ran at the probe's pick
    assert probe["cost"]["ratio"] > 0 and "the probe took" in probe["cost"]["sentence"]


def test_a_fine_tune_measures_with_its_source_runs_feature_net(source, tmp_path, monkeypatch):
    """On a store whose cache holds another feature net of the data set (a moved store, another thread count), a
    fine-tune of a run measures IS/FID with the net its source run did, so that the two runs' metrics compare,
    and keeps its own copy of it."""
    import shutil

    from influence.classifier import PINNED, PINNED_INFO

    root = store.store_root(source.dir.parent)
    cache = tmp_path / "cache"
    shutil.copytree(store.cache_dir(), cache, ignore=shutil.ignore_patterns("sources"))
    for f in cache.glob("classifier-*.pt"):
        net = store.load_state_dict(f)
        store.save_state_dict(f, {k: v + 0.05 if v.is_floating_point() else v for k, v in net.items()})
    monkeypatch.setenv(store.ENV_CACHE, str(cache))
    cfg = from_run(root, source.run_id, 1, trace_lr="schedule")
    run = train(cfg, root)
    assert run.read_bytes(PINNED) == source.read_bytes(PINNED)
    assert run.read_json(PINNED_INFO) == source.read_json(PINNED_INFO)  # and its record: accuracy, conditions
    ctx = RunContext.create(cfg, root)
    theta_d, theta_g = (torch.from_numpy(np.array(a)).to(ctx.device, ctx.dtype) for a in Trace.load(run).final_eval())
    measured = ctx.evaluator("test").evaluate(theta_d, theta_g, ("fid",))["fid"]
    assert measured == pytest.approx(run.read_json("summary.json")["test"]["fid"], rel=1e-12)
