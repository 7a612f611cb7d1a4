"""Counterfactual cleansing: replay and scratch retraining against computations done by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from influence.cleanse import attempts, check_removal_ids, cleanse, removal_key
from influence.context import RunContext, load_run_config
from influence.errors import ConfigError
from influence.estimator import estimate
from influence.train import Trace, replay, train_without

from _helpers import copy_run, tree

REMOVE = [5, 40, 41, 333, 1999]


def _by_hand(run, ids, mode="replay", split="test"):
    """(weights, metrics before, metrics after on `split`) computed without cleanse()."""
    cfg = load_run_config(run)
    ctx = RunContext.create(cfg, run.root)
    trace = Trace.load(run)
    if mode == "replay":
        d, g = replay(ctx, trace, ids)
    else:
        d, g = train_without(ctx, ids)
    evaluator = ctx.evaluator(split)
    fd, fg = trace.split(torch.from_numpy(np.array(trace.final)))
    return torch.cat([d, g]).numpy(), evaluator.evaluate(fd, fg), evaluator.evaluate(d, g)


def test_replay_cleansing_equals_a_manual_replay_and_test_evaluation(toy_run, tmp_path):
    run = copy_run(toy_run, tmp_path)
    result = cleanse(run, REMOVE)
    weights, before, after = _by_hand(run, REMOVE)
    assert result.mode == "replay" and result.removed.tolist() == REMOVE
    assert result.before == before and result.after == after
    assert set(after) == {"all", "dloss"}
    assert np.array_equal(run.read_npy(f"cleanse/{result.key}/weights.npy"), weights)
    # the run's own test metrics are the "before"
    assert result.before == pytest.approx(run.read_json("summary.json")["test"], rel=1e-12)
    # predicted change: sum of the cached influence of the removed set
    for m in ("all", "dloss"):
        assert result.predicted[m] == pytest.approx(estimate(run, [m])[m].scores[REMOVE].sum(), rel=1e-12)
    stored = run.read_json(f"cleanse/{result.key}/result.json")
    assert stored["change"] == {m: after[m] - before[m] for m in after}
    # the validation split the estimate is taken on (its z), where predicted and actual are the same quantity
    _, valid_before, valid_after = _by_hand(run, REMOVE, split="valid")
    assert result.validation == {"before": valid_before, "after": valid_after} and valid_after != after
    assert stored["validation"]["change"] == {m: valid_after[m] - valid_before[m] for m in valid_after}
    assert result.key == removal_key(np.array(REMOVE), "replay")
    assert run.read_npy(f"cleanse/{result.key}/samples.npy").shape == (200, 2)
    # asked again (ids in another order): the stored attempt, not a new computation
    again = cleanse(run, list(reversed(REMOVE)))
    assert again.key == result.key and again.after == result.after and again.seconds == result.seconds
    assert again.validation == result.validation
    assert [a["key"] for a in attempts(run)] == [result.key]


@pytest.mark.slow
def test_replay_cleansing_on_the_tiny_mnist_run(tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path)
    ids = [0, 10, 500, 999]
    result = cleanse(run, ids)
    weights, before, after = _by_hand(run, ids)
    assert set(after) == {"fid", "is", "dloss"}
    assert result.before == before and result.after == after
    assert np.array_equal(run.read_npy(f"cleanse/{result.key}/weights.npy"), weights)
    assert run.read_bytes(f"cleanse/{result.key}/grid.png")[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "ids, message",
    [
        ([3, 2000], "removal id 2000 is outside the training set (ids 0..1999)"),
        ([-1], "removal id -1 is outside the training set"),
        ([4, 9, 4], "removal id 4 is listed more than once"),
        ([1, 2.5], "removal id '2.5' is not an integer"),
        (["7"], "removal id '7' is not an integer"),
        ([True], "removal id 'True' is not an integer"),
        (list(range(2000)), "would remove every training instance"),
    ],
)
def test_bad_removal_ids_are_config_errors_and_write_nothing(toy_run, tmp_path, ids, message):
    run = copy_run(toy_run, tmp_path)
    before = tree(run.dir)
    with pytest.raises(ConfigError) as info:
        cleanse(run, ids)
    assert message in str(info.value)
    assert tree(run.dir) == before
    assert not run.path("cleanse").exists()


def test_bad_mode_is_a_config_error(toy_run):
    with pytest.raises(ConfigError, match="cleansing mode must be one of"):
        cleanse(toy_run, [1], mode="magic")


def test_check_removal_ids_sorts_and_accepts_numpy_integers():
    assert check_removal_ids(np.array([9, 3, 5], dtype=np.int32), 10).tolist() == [3, 5, 9]
    assert check_removal_ids([], 10).tolist() == []


def test_scratch_retraining_is_deterministic_and_differs_from_replay(toy_run, tmp_path):
    a = copy_run(toy_run, tmp_path / "a")
    b = copy_run(toy_run, tmp_path / "b")
    scratch_a = cleanse(a, REMOVE, mode="scratch")
    scratch_b = cleanse(b, REMOVE, mode="scratch")
    wa = a.read_npy(f"cleanse/{scratch_a.key}/weights.npy")
    assert np.array_equal(wa, b.read_npy(f"cleanse/{scratch_b.key}/weights.npy"))
    assert scratch_a.after == scratch_b.after
    # equals retraining by hand from the seed's initial weights
    weights, _, after = _by_hand(a, REMOVE, mode="scratch")
    assert np.array_equal(wa, weights) and scratch_a.after == after
    valid = RunContext.create(load_run_config(a), a.root).evaluator("valid")
    assert scratch_a.validation["after"] == valid.evaluate(*Trace.load(a).split(torch.from_numpy(wa)))
    # ... and is another counterfactual than replaying only the traced epoch
    replayed = cleanse(a, REMOVE, mode="replay")
    assert replayed.key != scratch_a.key
    wr = a.read_npy(f"cleanse/{replayed.key}/weights.npy")
    assert np.abs(wr - wa).max() > 1e-6
    assert replayed.after != scratch_a.after
    # Removing nothing from scratch reproduces the run itself (same seed, same data order).
    ctx = RunContext.create(load_run_config(a), a.root)
    d, g = train_without(ctx, [])
    assert np.array_equal(torch.cat([d, g]).numpy(), a.read_npy("weights/final.npy"))
