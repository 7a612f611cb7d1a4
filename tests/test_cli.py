"""The command line: bad input is one 'error:' line, a non-zero exit, no traceback and no files written;
good input gives the engine's own numbers."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from influence import store
from influence.cli import main, read_removal_csv
from influence.cleanse import cleanse
from influence.context import RunContext, load_run_config
from influence.errors import ConfigError
from influence.estimator import estimate, harmful_order
from influence.validation.spotcheck import stored_check

from _helpers import REPO, copy_run, tree


@pytest.fixture(scope="module")
def cli_store(tmp_path_factory, tiny_run, toy_run):
    """A store with copies of the tiny (MNIST) and toy (2D) runs, their influence results included."""
    root = store.store_root(tmp_path_factory.mktemp("cli_store"))
    copy_run(tiny_run, root)
    copy_run(toy_run, root)
    return root


def _error(capsys, argv: list[str], root: Path, match: str) -> str:
    before = tree(root)
    code = main(argv)
    out, err = capsys.readouterr()
    after = tree(root)
    assert code == 2, (argv, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and out == ""
    assert match in lines[0], lines[0]
    assert after == before, set(after) ^ set(before)  # nothing written
    return lines[0]


@pytest.mark.parametrize(
    "args, match",
    [
        (["train", "--preset", "nope"], "unknown preset 'nope'"),
        (["train", "--preset", "toy2d", "--set", "train.nope=1"], "unknown config key 'train.nope'"),
        (["train", "--preset", "toy2d", "--set", "train.lr_d=-0.001"], "learning rates must be positive"),
        (["train", "--preset", "toy2d", "--set", "train.epochs=x"], "cannot read 'x' as int"),
        (["train", "--preset", "toy2d", "--set", "data.n_train=50"], "train.batch_size=100 is larger than the training set (50)"),
        (["train", "--preset", "toy2d", "--seed", "one"], "invalid int value"),
        (["estimate", "--run", "no-such-run", "--metric", "fid"], "no run 'no-such-run'"),
        (["estimate", "--run", "../etc", "--metric", "fid"], "invalid run id"),
        (["frobnicate"], "invalid choice"),
        (["estimate", "--metric", "fid"], "--run"),
    ],
)
def test_bad_input_is_one_error_line_and_writes_nothing(capsys, cli_store, args, match):
    _error(capsys, ["--store", str(cli_store), *args], cli_store, match)


def test_metric_that_the_data_set_lacks_is_an_error(capsys, cli_store, tiny_run, toy_run):
    _error(capsys, ["--store", str(cli_store), "estimate", "--run", tiny_run.run_id, "--metric", "all"], cli_store,
           "metric 'all' is not defined for image data")
    _error(capsys, ["--store", str(cli_store), "estimate", "--run", toy_run.run_id, "--metric", "fid"], cli_store,
           "metric 'fid' is not defined for 2D data")
    _error(capsys, ["--store", str(cli_store), "validate", "--run", toy_run.run_id, "--metric", "is"], cli_store,
           "metric 'is' is not defined for 2D data")


def test_validating_more_epochs_than_traced_is_an_error(capsys, cli_store, toy_run):
    _error(capsys, ["--store", str(cli_store), "validate", "--run", toy_run.run_id, "--metric", "all",
                    "--trace-epochs", "2"], cli_store, "train it with train.trace_epochs of at least 2")


def test_bad_cleanse_input_is_an_error(capsys, cli_store, toy_run, tmp_path):
    base = ["--store", str(cli_store), "cleanse", "--run", toy_run.run_id]
    bad = tmp_path / "bad.csv"
    bad.write_text("id\n1\n2\nthree\n")
    _error(capsys, [*base, "--remove", str(bad)], cli_store, "line 4: 'three' is not an integer id")
    bad.write_text("id\n5\n5\n")
    _error(capsys, [*base, "--remove", str(bad)], cli_store, "removal id 5 is listed more than once")
    bad.write_text("id\n2000\n")
    _error(capsys, [*base, "--remove", str(bad)], cli_store, "removal id 2000 is outside the training set (ids 0..1999)")
    _error(capsys, [*base, "--remove", str(tmp_path / "missing.csv")], cli_store, "cannot read removal file")
    _error(capsys, [*base, "--top-harmful", "0"], cli_store, "--top-harmful must lie in 1..1999")
    _error(capsys, [*base, "--top-harmful", "5", "--by", "fid"], cli_store, "unknown selection method 'fid'")
    _error(capsys, [*base, "--top-harmful", "5", "--damping", "1.5"], cli_store, "--damping must lie in [0, 1)")
    _error(capsys, [*base, "--top-harmful", "5", "--by", "all", "--against-random", "6", "--mode", "scratch"], cli_store,
           "--against-random compares replays: use it with --mode replay")
    _error(capsys, [*base, "--top-harmful", "5", "--by", "all", "--against-random", "3"], cli_store,
           "groups must lie in 5..1000")


def test_unreadable_store_is_an_error(capsys, tmp_path):
    not_a_folder = tmp_path / "store.txt"
    not_a_folder.write_text("I am a file")
    code = main(["--store", str(not_a_folder), "runs"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith("error: cannot use store folder") and len(err.strip().splitlines()) == 1
    assert not_a_folder.read_text() == "I am a file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.txt"]


def test_console_entry_point_reports_errors_without_a_traceback(tmp_path):
    not_a_folder = tmp_path / "store.txt"
    not_a_folder.write_text("x")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "influence", "--store", str(not_a_folder), "train", "--preset", "tiny"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("error: cannot use store folder") and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.txt"]


def test_estimate_prints_the_engines_numbers(capsys, cli_store, toy_run):
    code = main(["--store", str(cli_store), "estimate", "--run", toy_run.run_id, "--metric", "all", "--metric",
                 "dloss", "--top", "3", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out)
    run = store.open_run(cli_store, toy_run.run_id)
    for m in ("all", "dloss"):
        r = estimate(run, [m])[m]
        top = harmful_order(r)[:3]
        assert [t["id"] for t in result[m]["most_harmful"]] == top.tolist()
        assert [t["influence"] for t in result[m]["most_harmful"]] == r.scores[top].tolist()
        assert result[m]["verdict"] == "reliable" and result[m]["traced_steps"] == 20
    # harmful: positive for ALL, negative for D-loss
    assert result["all"]["most_harmful"][0]["influence"] > 0 > result["dloss"]["most_harmful"][0]["influence"]
    # the check behind the verdict (auto: full on the toy), replay by replay, and where it is stored
    check = stored_check(run, result["all"]["result"])
    assert check["level"] == "full" and result["all"]["check_file"].endswith(f"{result['all']['result']}-full.json")
    assert json.loads(Path(result["all"]["check_file"]).read_text()) == check
    for m in ("all", "dloss"):
        assert result[m]["check_replays"] == check["per_metric"][m]["lanes"]


def test_cleanse_from_a_csv_matches_the_engine(capsys, cli_store, toy_run, tmp_path):
    csv = tmp_path / "remove.csv"
    csv.write_text("# ids to drop\nid,label\n3,-1\n14,-1\n159,-1\n")
    assert read_removal_csv(csv.read_text()) == [3, 14, 159]
    code = main(["--store", str(cli_store), "cleanse", "--run", toy_run.run_id, "--remove", str(csv), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    printed = json.loads(out)
    direct = cleanse(store.open_run(cli_store, toy_run.run_id), [3, 14, 159])  # the stored attempt
    assert printed["n_removed"] == 3 and printed["mode"] == "replay"
    assert printed["after"] == direct.after and printed["before"] == direct.before
    run = store.open_run(cli_store, toy_run.run_id)
    scores = estimate(run, ["all"])["all"].scores
    assert printed["predicted_change"]["all"] == pytest.approx(scores[[3, 14, 159]].sum(), rel=1e-12)


def test_cleanse_against_random_ranks_the_set_among_random_sets_of_its_size(capsys, cli_store, toy_run):
    """--against-random: M random sets of the set's size, replayed as a group validation, each what cleansing it
    changes; the set's change ranked among theirs per metric and split in the metric's own direction (ALL: higher
    is better; D-loss: lower), p = (1 + as good) / (M + 1); the text output says it in words."""
    import pandas as pd

    argv = ["--store", str(cli_store), "cleanse", "--run", toy_run.run_id, "--top-harmful", "40", "--by", "all",
            "--against-random", "6"]
    assert main([*argv, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    a = printed["against_random"]
    assert a["groups"] == 6 and a["size"] == 40 and set(a["per_metric"]) == {"all", "dloss"}  # the estimated metrics
    run = store.open_run(cli_store, toy_run.run_id)
    table = pd.read_parquet(run.path(f"validate/groups/{a['key']}/groups.parquet"))
    assert len(table) == 6 and set(table["size"]) == {40}
    random_set = np.asarray(table["ids"][2], dtype=np.int64)
    cleansed = cleanse(run, random_set)  # the same removal through the cleanse's own replay
    for m in ("all", "dloss"):
        assert table[f"actual_test_{m}"][2] == pytest.approx(cleansed.after[m] - cleansed.before[m], rel=1e-9, abs=1e-12)
    better = {"all": lambda r, c: r >= c, "dloss": lambda r, c: r <= c}
    for m in ("all", "dloss"):
        ranked = a["per_metric"][m]
        for split, change in (("test", printed["change"][m]), ("valid", printed["validation"]["change"][m])):
            as_good = sum(better[m](x, change) for x in table[f"actual_{split}_{m}"])
            assert ranked[f"as_good_{split}"] == as_good and ranked[f"p_{split}"] == pytest.approx((1 + as_good) / 7)
    assert a["per_metric"]["all"]["as_good_valid"] == 0  # the 40 most harmful by ALL beat every random 40 there
    assert main(argv) == 0  # the text output, the stored cleanse and random sets read back
    assert ("ALL: removing this set did better than random sets of 40: 6 of 6 on the validation split (p = 0.14)"
            in capsys.readouterr().out)


def test_runs_lists_the_store(capsys, cli_store, tiny_run, toy_run):
    assert main(["--store", str(cli_store), "runs", "--json"]) == 0
    listed = {r["run_id"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(listed) == {tiny_run.run_id, toy_run.run_id}
    assert listed[toy_run.run_id]["summary"]["test"] == toy_run.read_json("summary.json")["test"]


def test_runs_lists_each_runs_estimate_in_use_with_its_trust(capsys, cli_store, toy_run):
    from influence.estimator import cached_results, chosen_name
    from influence.validation.spotcheck import stored_check
    from influence.validation.trust import kept

    run = store.open_run(cli_store, toy_run.run_id)
    estimate(run, ["all"])
    assert main(["--store", str(cli_store), "runs", "--json"]) == 0
    listed = {r["run_id"]: r for r in json.loads(capsys.readouterr().out)}[toy_run.run_id]["influence"]
    name, results = chosen_name(run), cached_results(run)
    assert "all" in results  # and any metric estimated with it
    assert listed == {"result": name, "trust": {m: kept(r, stored_check(run, name)) for m, r in results.items()}}
    assert main(["--store", str(cli_store), "runs"]) == 0
    line = f"  influence '{name}': ALL "
    assert any(out.startswith(line) for out in capsys.readouterr().out.splitlines())


def test_runs_lists_a_run_whose_check_is_damaged(capsys, toy_run, tmp_path):
    from influence.estimator import chosen_name
    from influence.validation.spotcheck import check_path, spot_check

    run = copy_run(toy_run, tmp_path)
    check = spot_check(run, ["all"], level="full")
    assert main(["--store", str(tmp_path), "runs"]) == 0
    assert "ALL groups " in capsys.readouterr().out
    run.path(check_path(chosen_name(run), check["level"])).write_text("{not json")  # damaged behind the store's back
    assert main(["--store", str(tmp_path), "runs"]) == 0
    out = capsys.readouterr().out
    assert toy_run.run_id in out and "  influence: unreadable (" in out


def test_removal_csv_forms():
    assert read_removal_csv("7\n8\n\n9\n") == [7, 8, 9]
    assert read_removal_csv("name,id\na,4\nb,2\n", n_train=10) == [4, 2]
    with pytest.raises(ConfigError, match="needs an 'id' or a 'path' column"):
        read_removal_csv("a,b\n1,2\n")
    with pytest.raises(ConfigError, match="empty"):
        read_removal_csv("# nothing\n")
    with pytest.raises(ConfigError, match="header but no ids"):
        read_removal_csv("id\n")
    with pytest.raises(ConfigError, match="outside the training set"):
        read_removal_csv("id\n99999999999999999999999\n", n_train=10)


def test_store_and_cluster_are_accepted_after_the_subcommand(capsys, cli_store, tiny_run, toy_run, monkeypatch):
    from influence.execution import ENV_CLUSTER

    # setenv, not delenv: monkeypatch then restores the variable's absence after main() has set it
    monkeypatch.setenv(ENV_CLUSTER, "tcp://unused:1")
    assert main(["runs", "--store", str(cli_store), "--json", "--cluster", "tcp://127.0.0.1:8786"]) == 0
    assert {r["run_id"] for r in json.loads(capsys.readouterr().out)} == {tiny_run.run_id, toy_run.run_id}
    assert os.environ[ENV_CLUSTER] == "tcp://127.0.0.1:8786"  # what the jobs' execution layer reads


def test_sweep_and_cleanse_take_the_same_job_locks_as_the_app(capsys, tiny_run, tmp_path, monkeypatch):
    """The CLI builds the app's specs (same job keys, so the same locks) and runs them through the job protocol."""
    import dataclasses

    from influence import jobs, specs
    from influence.context import load_run_config
    from influence.estimator import EstimateOptions

    monkeypatch.syspath_prepend(str(REPO / "app"))
    from explorer import sweepform

    root = store.store_root(tmp_path)
    copy_run(tiny_run, root)
    ran = []
    real = jobs.run_job

    def recorded(root_, spec, progress=None):
        ran.append(spec)
        return {"table": []} if spec["kind"] == "sweep" else real(root_, spec, progress)

    monkeypatch.setattr(jobs, "run_job", recorded)
    cfg = load_run_config(tiny_run)
    assert main(["sweep", "--store", str(root), "--preset", "tiny", "--seeds", "0", "1", "--methods", "fid", "random",
                 "--counts", "10", "50", "--json"]) == 0
    app_spec = sweepform.sweep_spec(cfg, "0, 1", ["fid", "random"], "10 50", "fid", 1000)
    assert jobs.job_key(ran[0]) == jobs.job_key(app_spec)
    # cleanse --top-harmful: the estimate under the app's estimate key, then the cleanse job
    assert main(["cleanse", "--store", str(root), "--run", tiny_run.run_id, "--top-harmful", "5", "--by", "fid",
                 "--json"]) == 0
    assert [s["kind"] for s in ran[1:]] == ["estimate", "cleanse"]
    assert jobs.job_key(ran[1]) == jobs.job_key({"kind": "estimate", "params": {
        "run_id": tiny_run.run_id, "metrics": ["fid"], "options": dataclasses.asdict(EstimateOptions())}})
    assert jobs.job_key(ran[1]) == jobs.job_key(specs.estimate_spec(tiny_run.run_id, ["fid"]))
    capsys.readouterr()


@pytest.mark.parametrize("given, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_the_cli_waits_passively_for_openmp_unless_told_otherwise(given, expected):
    """Spinning OpenMP threads made a 71 s training take minutes once anything else ran on the cores (issue 15);
    the CLI sets the policy before torch loads, as the app's job workers get it."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | ({"OMP_WAIT_POLICY": given} if given else {})
    code = "import influence.cli, os, sys; sys.stdout.write(os.environ['OMP_WAIT_POLICY'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out == expected


def test_commands_and_job_workers_start_without_scikit_learn():
    """scikit-learn's imports were 2 s of the 5-7 s a command took to start (estimate, validate, cleanse, sweep,
    and the app's server, through the job specs); only an Isolation Forest needs it, and imports it then."""
    code = ("import sys, influence.cli, influence.specs, influence.baselines, influence.validation, influence.jobs; "
            "sys.stdout.write(str(sorted(m for m in sys.modules if m.split('.')[0] == 'sklearn')))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]"


def test_a_recorded_config_trains_the_same_run_bit_for_bit(capsys, toy_run, tmp_path):
    """train --config: a run's config.json, in another store, gives the same run id and the same weights (the
    same torch thread count); --seed gives the recipe's run at another seed."""
    import numpy as np

    from influence.config import RunConfig

    config = toy_run.path("config.json")
    root = tmp_path / "elsewhere"
    assert main(["--store", str(root), "train", "--config", str(config), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["run_id"] == toy_run.run_id
    again = store.open_run(root, toy_run.run_id)
    assert np.array_equal(again.read_npy("weights/final.npy"), toy_run.read_npy("weights/final.npy"))
    assert main(["--store", str(root), "train", "--config", str(config), "--seed", "1", "--json"]) == 0
    recorded = RunConfig.from_dict(json.loads(config.read_text()))
    assert json.loads(capsys.readouterr().out)["run_id"] == RunConfig.from_dict({**recorded.to_dict(), "seed": 1}).run_id


def test_a_recorded_config_is_bound_to_its_inputs(capsys, cli_store, toy_run, tmp_path):
    config = toy_run.path("config.json")
    base = ["--store", str(cli_store), "train"]
    _error(capsys, [*base, "--config", str(config), "--preset", "toy2d"], cli_store, "give --config or --preset, not both")
    _error(capsys, [*base, "--config", str(tmp_path / "none.json")], cli_store, "--config: cannot read")
    (tmp_path / "bad.json").write_text("{not json")
    _error(capsys, [*base, "--config", str(tmp_path / "bad.json")], cli_store, "is not a run's config.json")
    (tmp_path / "odd.json").write_text(json.dumps({**json.loads(config.read_text()), "colour": 1}))
    _error(capsys, [*base, "--config", str(tmp_path / "odd.json")], cli_store, "unknown config key(s): colour")
    # a pretrained file that is not the recorded one: another run under the same recipe, refused
    g = tmp_path / "g.pt"
    g.write_bytes(b"the generator it was made with")
    d = json.loads(config.read_text())
    d["model"] |= {"init_g": str(g), "init_g_sha256": hashlib.sha256(g.read_bytes()).hexdigest()}
    (tmp_path / "init.json").write_text(json.dumps(d))
    g.write_bytes(b"another generator")
    _error(capsys, [*base, "--config", str(tmp_path / "init.json")], cli_store,
           f"model.init_g: {g} is not the file {tmp_path / 'init.json'} was made with")


def test_a_negative_top_is_one_error_line(capsys, cli_store, toy_run):
    _error(capsys, ["--store", str(cli_store), "estimate", "--run", toy_run.run_id, "--metric", "all", "--top", "-3"],
           cli_store, "--top must be at least 0")


def test_every_option_of_every_command_says_what_it_does():
    import argparse

    from influence.cli.parser import build_parser

    top = build_parser()
    (commands,) = [a for a in top._actions if isinstance(a, argparse._SubParsersAction)]
    bare = {name: [a.option_strings[0] for a in sub._actions if a.option_strings and not a.help]
            for name, sub in {"gan-influence": top, **commands.choices}.items()}
    assert {name: opts for name, opts in bare.items() if opts} == {}


def test_a_progress_bar_starts_again_with_each_part_of_a_stage(capsys):
    """A sweep's cleanses each report a "replay" stage of their own: drawn on the first one's bar, the count went
    back and the time and the time left ran on from the first (the check's tasks did the same before their
    reports were added up)."""
    from influence.cli.follow import Bar
    from influence.progress import Progress

    bar, bars = Bar(), []
    for done, total in ((3, 10), (9, 10), (1, 10), (4, 10), (2, 20)):
        bar(Progress("replay", done, total, 0.0))
        bars.append(bar.bar)
    bar.close()
    assert [len({id(b) for b in bars[:i]}) for i in range(1, 6)] == [1, 1, 2, 2, 3]
    assert [b.total for b in bars] == [10, 10, 10, 10, 20] and bars[-1].n == 2


def test_leave_one_out_says_how_few_images_its_jaccard_rests_on(capsys, toy_run, tmp_path):
    """n = 8: "top 10%" is one image from each end, and the line said "Jaccard top-10% 1.000" as if it meant much."""
    run = copy_run(toy_run, tmp_path)
    args = ["--store", str(run.root), "validate", "--run", run.run_id, "--metric", "all"]
    assert main([*args, "--n", "8"]) == 0
    assert "Jaccard top-10% " in (out := capsys.readouterr().out)
    assert "(the 1 most negative and 1 most positive: rough below n = 100)" in out
    assert main([*args, "--n", "100"]) == 0
    assert "Jaccard top-10% " in (out := capsys.readouterr().out) and "rough below" not in out


def test_no_bar_of_feature_net_epochs_where_the_net_is_loaded(capsys, tiny_run, tmp_path):
    """Every command on image data drew "feature-net: 0/50" and left it there: the net came from the cache."""
    run = copy_run(tiny_run, tmp_path, keep_results=False)
    assert main(["--store", str(run.root), "estimate", "--run", run.run_id, "--metric", "fid", "--check", "none"]) == 0
    err = capsys.readouterr().err
    assert "influence:" in err and "feature-net" not in err  # the pass's bar is drawn, no epochs of a net


def test_the_most_harmful_mnist_images_are_named_by_their_place_in_mnist(capsys, cli_store, tiny_run):
    """"#1094" led to no image outside this tool; MNIST's training index does (torchvision's MNIST(train=True)[k])."""
    source_index = RunContext.create(load_run_config(tiny_run), tiny_run.root).dataset.source_index
    assert main(["--store", str(cli_store), "estimate", "--run", tiny_run.run_id, "--metric", "fid", "--json",
                 "--check", "none"]) == 0
    top = json.loads(capsys.readouterr().out)["fid"]["most_harmful"]
    assert all(t["source"] == "MNIST train" and t["source_index"] == source_index[t["id"]] for t in top)
    assert main(["--store", str(cli_store), "estimate", "--run", tiny_run.run_id, "--metric", "fid", "--check",
                 "none"]) == 0
    assert f"most harmful: #{top[0]['id']} MNIST train[{top[0]['source_index']}] (" in capsys.readouterr().out


def test_a_progress_bar_into_a_file_is_drawn_now_and_then_not_at_every_step(capsys):
    """A bar redrew at every report: a CLI run's log held a line per training step (2,000 for mnist-adam)."""
    from influence.cli.follow import Bar
    from influence.progress import Progress

    bar = Bar()
    for done in range(1, 2001):
        bar(Progress("train", done, 2000, 0.0, {"epoch": 1, "loss_d": 0.7}))
    assert bar.bar.n == 2000
    bar.close()
    assert capsys.readouterr().err.count("train:") < 10


def test_a_training_bar_keeps_the_last_losses_between_reports_that_lack_them():
    """An alternating G step reports loss_d=None and an epoch's end no losses: a bar drawn at one of those showed
    "loss_d=None", or the epoch alone (a CLI log of quick's training showed no losses for five epochs)."""
    from influence.cli.follow import Bar
    from influence.progress import Progress

    bar = Bar()
    bar(Progress("train", 1, 10, 0.0, {"epoch": 1, "loss_d": 0.5, "loss_g": None}))
    bar(Progress("train", 2, 10, 0.0, {"epoch": 1, "loss_d": None, "loss_g": 1.25}))
    bar(Progress("train", 5, 10, 0.0, {"epoch": 1, "epoch_done": {"epoch": 1}}))
    assert bar.bar.postfix == "epoch=1, loss_d=0.5, loss_g=1.25"
    bar(Progress("replay", 1, 4, 0.0, {}))  # the next stage starts without the last one's losses
    assert not bar.bar.postfix
    bar.close()


def test_a_table_written_before_mnists_index_is_written_again_by_the_next_estimate(tiny_run, tmp_path):
    import pandas as pd

    run = copy_run(tiny_run, tmp_path)
    meta = run.read_json("influence/table.json")
    old = pd.read_csv(run.path("influence/table.csv")).drop(columns="source_index")
    run.write("influence/table.csv", old.to_csv(index=False).encode())
    run.write_json("influence/table.json", {k: v for k, v in meta.items() if k != "version"})  # as written before
    assert main(["--store", str(run.root), "estimate", "--run", run.run_id, "--metric", "fid", "--check", "none"]) == 0
    table = pd.read_csv(run.path("influence/table.csv"))
    source_index = RunContext.create(load_run_config(run), run.root).dataset.source_index
    assert table["source_index"].tolist() == source_index.tolist() and run.read_json("influence/table.json") == meta
