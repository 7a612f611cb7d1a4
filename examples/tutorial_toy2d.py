# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Which training points hurt a GAN? The paper's 2D toy, step by step
#
# This tutorial walks through ASGD-Influence (Terashita et al., ICLR 2021) with the engine's
# Python API, as a class would: train the paper's toy GAN, estimate every training point's
# influence on the generator's quality, check the estimate against leave-one-out
# retraining, and remove the most harmful points.
#
# Open it as a notebook with `jupytext --to notebook examples/tutorial_toy2d.py`, or run it
# as a script: `python examples/tutorial_toy2d.py`. It takes about a minute on a laptop
# core; the test suite runs it on a smaller toy (`TUTORIAL_SMALL=1`) so it never goes stale.
#
# **Sign convention.** The influence of point j is the predicted change of a metric if j is
# removed from training: `metric(without j) - metric(with j)`. A point is *harmful* when its
# removal would improve the metric. The toy's metric is ALL, the average log-likelihood of
# real validation points under a density centred on the generated ones: higher is better,
# so a **positive** influence on ALL means harmful.

# %%
import os
import tempfile
from pathlib import Path

import numpy as np
import plotly.graph_objects as go

from influence import store
from influence.classroom import coverage
from influence.cleanse import cleanse
from influence.config import apply_overrides, preset
from influence.data import load_dataset
from influence.estimator import estimate, harmful_order
from influence.train import train
from influence.validation import validate

SMALL = os.environ.get("TUTORIAL_SMALL") == "1"  # the test suite's tiny version
STORE = Path(os.environ.get("TUTORIAL_STORE") or tempfile.mkdtemp(prefix="gan-influence-tutorial-"))
FIGURES = Path(os.environ.get("TUTORIAL_FIGURES") or STORE / "figures")
FIGURES.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## 1. Train the toy
#
# `toy2d` is the paper's experiment as its code builds it: 10,000 points from a correlated
# 2D normal, a fully connected GAN (ReLU, no biases, Glorot-uniform weights) trained for 50
# epochs with plain SGD at learning rate 1e-3, in float64. The run records a *trace* of its
# last epoch: the minibatches, the z and the parameters before every step.
# Every run is stored under an id made from its configuration: training the same
# configuration again reads it back.

# %%
cfg = preset("toy2d", seed=0)
if SMALL:
    cfg = apply_overrides(cfg, ["data.n_train=1000", "train.epochs=3", "data.n_valid=300", "data.n_test=300",
                                "eval.n_valid_z=300", "eval.n_test_z=300", "eval.n_grid=300"])
run = train(cfg, STORE)
print("run", run.run_id, "test metrics", run.read_json("summary.json")["test"])

# %% [markdown]
# Does the generator cover the data? `coverage` compares the generated samples' spread and
# centre with the real data's: a collapsed generator fills a small part of it.

# %%
last_epoch = sorted(p.name for p in run.path("grids").glob("*.npy"))[-1]
generated = run.read_npy(f"grids/{last_epoch}")  # the generator's samples after the last epoch (fixed z)
real = load_dataset(cfg.data, cfg.seed, store.cache_dir(STORE)).train.x.numpy()  # the points the run trained on
print(coverage(real, generated).message)

# %% [markdown]
# ## 2. Estimate every point's influence
#
# `estimate` walks the traced steps backwards once and returns, per metric, one score per
# training point (`scores`), flags, and a verdict on whether the linearisation held
# (the growth factor of the backward recursion). D-loss, the discriminator's loss, is
# computed too: it is the baseline the paper compares with.

# %%
results = estimate(run, ["all", "dloss"])
all_scores = results["all"].scores
print("verdict:", results["all"].meta["verdict_message"])
order = harmful_order(results["all"])  # most harmful first
print("five most harmful points:", order[:5].tolist(), "influence", np.round(all_scores[order[:5]], 8).tolist())

fig = go.Figure(go.Scattergl(x=real[:, 0], y=real[:, 1], mode="markers",
                             marker=dict(color=all_scores, colorscale="RdBu_r", cmid=0, size=4,
                                         colorbar=dict(title="influence on ALL<br>positive = harmful"))))
fig.add_scattergl(x=generated[:, 0], y=generated[:, 1], mode="markers", name="generated",
                  marker=dict(color="#2ca02c", size=3))
fig.update_layout(title="training points coloured by their influence on ALL", width=700, height=600)
fig.write_html(FIGURES / "influence.html")

# %% [markdown]
# ## 3. Is the estimate right? Leave-one-out
#
# For n points, replay the traced epoch without each one (same batches, same z) and measure
# how ALL actually changes. Kendall tau compares the two rankings (1 = identical order);
# the paper reports 0.87 on this toy.

# %%
n_check = 20 if SMALL else 100
accuracy = validate(run, ["all"], n=n_check)["all"]
print(f"Kendall tau {accuracy.kendall_tau:.3f}, Pearson r {accuracy.pearson_r:.3f} over {n_check} points")
fig = go.Figure(go.Scatter(x=accuracy.estimated, y=accuracy.actual, mode="markers"))
fig.update_layout(xaxis_title="estimated influence on ALL", yaxis_title="actual change (leave-one-out)")
fig.write_html(FIGURES / "accuracy.html")

# %% [markdown]
# ## 4. Cleanse: remove the most harmful points
#
# `cleanse` replays the traced epoch without a removal set and evaluates the **test** split,
# which the estimate never saw. The predicted change is the sum of the removed points'
# influences on the validation split, and it covers only the traced steps.

# %%
k = len(order) // 10
result = cleanse(run, order[:k])
change = result.after["all"] - result.before["all"]
print(f"removed {k} most harmful points: test ALL {result.before['all']:.5f} -> {result.after['all']:.5f} "
      f"({change:+.2e}; predicted on validation {result.predicted['all']:+.2e})")
random_set = np.random.default_rng(0).choice(len(order), k, replace=False)
random_result = cleanse(run, random_set)
print(f"removed {k} random points: change {random_result.after['all'] - random_result.before['all']:+.2e}")

# %% [markdown]
# Harmful points are the ones whose removal helps; in this toy they tend to lie where the
# generator already puts too much mass. Try the Streamlit app's 2D playground
# (`streamlit run app/main.py`) to click single points, compare D-loss with ALL, and raise the
# learning rate of the traced epoch until the estimate breaks.
