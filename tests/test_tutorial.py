"""The runnable tutorial (examples/tutorial_toy2d.py) runs end to end on a tiny toy, so it cannot go stale."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from influence import store
from influence.validation import stored_validations

TUTORIAL = Path(__file__).resolve().parents[1] / "examples" / "tutorial_toy2d.py"


def test_the_tutorial_runs_and_leaves_what_it_printed_in_the_store(tmp_path):
    env = dict(os.environ, TUTORIAL_SMALL="1", TUTORIAL_STORE=str(tmp_path / "store"),
               TUTORIAL_FIGURES=str(tmp_path / "figures"))
    out = subprocess.run([sys.executable, str(TUTORIAL)], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    run_id = next(line.split()[1] for line in lines if line.startswith("run "))
    run = store.open_run(tmp_path / "store", run_id)
    assert json.loads(run.path("config.json").read_text())["model"]["init"] == "glorot-uniform"
    (acc,) = stored_validations(run)
    tau_line = next(line for line in lines if line.startswith("Kendall tau"))
    assert f"Kendall tau {acc['kendall_tau']:.3f}" in tau_line and acc["n"] == 20
    assert np.isfinite(acc["estimated"]).all()
    assert any(line.startswith("removed 100 most harmful points") for line in lines)
    assert {p.name for p in (tmp_path / "figures").iterdir()} == {"influence.html", "accuracy.html"}
