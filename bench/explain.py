"""Why did my GAN make this? The issue-25 numbers: influence on chosen generated samples against replays.

    # 2D toy: for 10 generated points, predicted vs actual displacement after removing their 20 most pulling points
    .venv/bin/python bench/explain.py toy --seed 0 --store /tmp/x/store
    # cost: 64 samples in one pass against 1, on the same run (per-pass seconds; the load average is recorded)
    .venv/bin/python bench/explain.py cost --preset tiny --counts 1 64 --last-steps 3 --store /tmp/x/store
    # planted near-copies: MNIST 10k with one image 50 times, or 6k coloured digits with one image 30 times
    .venv/bin/python bench/explain.py copies --variant mnist --work /tmp/x/copies-mnist
    .venv/bin/python bench/explain.py copies --variant rgb --work /tmp/x/copies-rgb
    # ... a typical image planted (one the GAN draws) instead of an outlier
    .venv/bin/python bench/explain.py copies --variant mnist --quantile 0.5 --work /tmp/x/copies-typical
    # ... on 1,000 digits trained long enough to memorise, the last 5 epochs traced
    .venv/bin/python bench/explain.py copies --variant mnist --n 1000 --work /tmp/x/copies-small \
        --set train.epochs=200 --set train.lr_schedule=196:4e-5:4e-5 --set train.trace_epochs=5
    # ... on 1,000 digits, every one of 30 epochs traced (the copies before D saturates on them)
    .venv/bin/python bench/explain.py copies --variant mnist --n 1000 --work /tmp/x/copies-all \
        --set train.epochs=30 --set train.trace_epochs=30 --tag alltraced
    # accuracy on mnist-adam seeds 0-2 (unattended, resumable: every chunk of replays is saved under --out)
    .venv/bin/python bench/explain.py accuracy --preset mnist-adam --seeds 0 1 2 --store runs --out bench-out/explain
    .venv/bin/python bench/explain.py accuracy --preset mnist-adam --seeds 1 2 --loo-n 0 --store runs --out bench-out/explain

Accuracy, per seed: 20 chosen samples (the 10 of lowest clarity among 1,000 seeded z, and 10 random others),
objective clarity, one pass. Group check: per sample, a replay without its top 1% responsible images (most
harmful: removal raises its clarity) and one without a random 1%: the share of samples whose top-1% lane moved
their clarity the predicted way, and the share where it moved it further the wanted way than the random 1%;
Pearson r of predicted (the sum of the removed images' influences) against actual over those 40 lanes (and over
all lanes x samples). Leave-one-out: n random traced images, one replay each, Kendall tau per sample on 3
samples (the lowest-clarity one and the first two random ones; all 20 as well). Replays are lanes of
`counterfactual.replay_lanes` (lane 0 = nothing removed); chunks of lanes are saved as they finish, so a
killed bench resumes with the next chunk. Results: <out>/seed<S>/result.json and <out>/summary.json (every seed
under <out> so far; --loo-n 0 leaves leave-one-out out).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time
from pathlib import Path

# Before torch loads OpenMP: spinning waits starve everything else on the cores (docs/architecture.md, jobs).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
from PIL import Image, ImageDraw
from scipy import stats

from influence import store
from influence.config import DataConfig, apply_overrides, preset
from influence.context import RunContext, load_run_config
from influence.counterfactual import Lane
from influence.data import load_dataset, prepare
from influence.estimator import EstimateOptions
from influence.objectives.samples import class_log_probs, features_of
from influence.samples import check, explain, replay_removals
from influence.samples.explain import final_parameters
from influence.train import Trace, train

ASSETS = Path(__file__).resolve().parents[1] / "assets"


def _json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, default=float))


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ---------------------------------------------------------------- the 2D toy
def cmd_toy(args) -> dict:
    cfg = apply_overrides(preset("toy2d", args.seed), args.set)
    run = train(cfg, store.store_root(args.store))
    e = explain(run, {"seed": 100 + args.seed, "n": args.points}, "position")
    result = check(run, e, list(range(args.points)), args.k)
    s = result["summary"]
    random_len = [float(np.linalg.norm(lane["actual"])) for lane in result["lanes"] if lane["kind"] == "random"]
    out = {"run_id": run.run_id, "points": args.points, "k": args.k, "cosine": s["cosine"],
           "length_ratio": s["length_ratio"], "median_cosine": s["median_cosine"],
           "median_length_ratio": s["median_length_ratio"], "min_cosine": min(s["cosine"]),
           "actual_length_top": [float(np.linalg.norm(lane["actual"])) for lane in result["lanes"]
                                 if lane["kind"] == "top"],
           "actual_length_random": random_len, "pass_seconds": e.meta["seconds"], "replay_seconds": result["seconds"],
           "verdict": e.meta["verdict"]}
    print(f"toy2d seed {args.seed}, {args.points} points, top {args.k} pulling points removed:")
    for i, (c, r) in enumerate(zip(s["cosine"], s["length_ratio"])):
        print(f"  point {i}: cosine {c:.4f}, length ratio (actual / predicted) {r:.3f}; |actual| "
              f"{out['actual_length_top'][i]:.3g} vs random-{args.k} {random_len[i]:.3g}")
    print(f"  median cosine {s['median_cosine']:.4f} (min {min(s['cosine']):.4f}), median length ratio "
          f"{s['median_length_ratio']:.3f}")
    return out


# ---------------------------------------------------------------- cost
def cmd_cost(args) -> dict:
    cfg = apply_overrides(preset(args.preset, args.seed), args.set)
    run = train(cfg, store.store_root(args.store))
    options = EstimateOptions(last_steps=args.last_steps)
    explain(run, {"seed": 6, "n": 1}, args.objective, options)  # a warm-up: no timed pass pays one-time imports
    rows = []
    for n in args.counts:
        load_before = _load()
        started = time.perf_counter()
        e = explain(run, {"seed": 7, "n": n}, args.objective, options)
        wall = time.perf_counter() - started
        if wall < e.meta["seconds"]:  # a computed pass takes at least its own time: this one was read back
            raise SystemExit(f"the store already holds the explanation of {n} samples (its pass took "
                             f"{e.meta['seconds']:.1f} s, read back in {wall:.1f} s): the cost bench times passes, "
                             "give it a fresh --store")
        rows.append({"samples": n, "rows": e.meta["rows"], "pass_seconds": e.meta["seconds"],
                     "wall_seconds": wall, "traced_steps": e.meta["traced_steps"],
                     "rows_per_product": e.meta["rows_per_product"],
                     "load_before": load_before, "load_after": _load()})
        print(f"{args.preset} {args.objective}: {n} samples, pass {e.meta['seconds']:.1f} s over "
              f"{e.meta['traced_steps']} steps (load {load_before} -> {rows[-1]['load_after']})")
    base = rows[0]["pass_seconds"]
    for r in rows:
        r["ratio"] = r["pass_seconds"] / base
    print("ratio to the first: " + ", ".join(f"{r['samples']} samples {r['ratio']:.1f}x" for r in rows))
    return {"run_id": run.run_id, "preset": args.preset, "objective": args.objective, "threads": torch.get_num_threads(),
            "rows": rows}


# ---------------------------------------------------------------- planted near-copies
def _outlier(images: np.ndarray, rng: np.random.Generator, subset: int = 2000, quantile: float = 0.995) -> int:
    """An unusual image: of a seeded subset, the one at the given quantile of the pixel distance to its nearest
    neighbour in the whole set (a copied image that resembles thousands of others is not a copy anyone can see)."""
    flat = images.reshape(len(images), -1).astype(np.float64) / 255.0
    ids = rng.choice(len(flat), min(subset, len(flat)), replace=False)
    sq = (flat**2).sum(1)
    d2 = sq[ids, None] + sq[None] - 2 * flat[ids] @ flat.T
    d2[np.arange(len(ids)), ids] = np.inf
    nn = d2.min(1)
    return int(ids[np.argsort(nn)[int(quantile * (len(ids) - 1))]])


def _planted_folder(variant: str, folder: Path, seed: int, copies: int | None = None,
                    n: int | None = None, quantile: float = 0.995) -> tuple[str, int]:
    """Writes the variant's images into class sub-folders; returns (the planted file's name, copies).
    copies: the planted image's count (the issue's 50 for MNIST, 30 for RGB by default); n: the source images
    (10,000 MNIST, 6,000 RGB by default; fewer make a GAN that memorises); quantile: which image is planted, by
    its distance to its nearest neighbour (0.995: an outlier; 0.5: a typical image, one the GAN draws)."""
    n = n or (10_000 if variant == "mnist" else 6_000)
    src = load_dataset(DataConfig(source="mnist", n_train=n), seed, store.cache_dir(None))
    x = ((src.train.x[:, 0].numpy() + 1) * 127.5).round().astype(np.uint8)
    y = src.train.y.numpy()
    rng = np.random.default_rng(seed)
    copies = copies or (50 if variant == "mnist" else 30)
    if variant == "rgb":  # digits drawn in a random saturated colour on a dark tinted background
        hue = rng.uniform(0, 1, len(x))
        colour = np.stack([np.clip(np.abs(((hue * 6 + k) % 6) - 3) - 1, 0, 1) for k in (0, 4, 2)], 1)
        back = rng.uniform(0, 0.25, (len(x), 3))
        a = x[..., None] / 255.0
        images = ((a * colour[:, None, None] + (1 - a) * back[:, None, None]) * 255).round().astype(np.uint8)
    else:
        images = x
    planted = _outlier(images, rng, quantile=quantile)
    if (folder / "done").exists():
        return f"{y[planted]}/planted.png", copies
    for i, (img, label) in enumerate(zip(images, y)):
        d = folder / str(label)
        d.mkdir(parents=True, exist_ok=True)
        name = "planted.png" if i == planted else f"{i:05d}.png"
        Image.fromarray(img).save(d / name)
    for c in range(1, copies):
        Image.fromarray(images[planted]).save(folder / str(y[planted]) / f"planted_copy{c:02d}.png")
    (folder / "done").write_text("")
    return f"{y[planted]}/planted.png", copies


def _grid(rows: list[tuple[str, list[np.ndarray], list[bool] | None]], px: int = 56) -> Image.Image:
    """A figure: one labelled row of images (in [-1, 1], (C, H, W)) per entry; flagged images outlined red."""
    width = 230 + px * max(len(r[1]) for r in rows) + 10
    sheet = Image.new("RGB", (width, len(rows) * (px + 12) + 10), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (label, images, flags) in enumerate(rows):
        top = 8 + r * (px + 12)
        draw.text((8, top + px // 2 - 6), label, fill="black")
        for c, img in enumerate(images):
            arr = ((np.asarray(img) + 1) * 127.5).clip(0, 255).round().astype(np.uint8)
            arr = arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)
            tile = Image.fromarray(arr).convert("RGB").resize((px - 4, px - 4), Image.Resampling.NEAREST)
            left = 230 + c * px
            if flags is not None and flags[c]:
                draw.rectangle([left - 2, top - 2, left + px - 3, top + px - 3], outline="#d62728", width=3)
            sheet.paste(tile, (left, top))
    return sheet


def _copy_ranks(e, copy_ids: np.ndarray) -> dict:
    """Where the copies stand in each sample's ranking, beside the top-10 precision: the median copy's rank
    (percent of the traced instances ranked above it) by |influence| and by pull toward the objective
    (harmful sign), the top-10 precision by pull, and the copies' share of the sample's total |influence|
    against their share of the traced instances."""
    traced = np.flatnonzero(np.any(e.matrix != 0, axis=0))
    copies = np.intersect1d(copy_ids, traced)
    rank_abs, rank_pull, share, precision_pull = [], [], [], []
    for row in e.matrix:
        for ranks, key in ((rank_abs, np.abs(row)), (rank_pull, -row * e.harmful_sign)):
            order = np.argsort(-key[traced], kind="stable")
            position = np.empty(len(traced), dtype=np.int64)
            position[order] = np.arange(len(traced))
            ranks.append(float(np.median(position[np.searchsorted(traced, copies)]) / len(traced) * 100))
        top = traced[np.argsort(row[traced] * e.harmful_sign, kind="stable")[:10]]
        precision_pull.append(float(np.isin(top, copies).mean()))
        share.append(float(np.abs(row[copies]).sum() / max(np.abs(row[traced]).sum(), 1e-300)))
    return {"copies_traced": len(copies), "traced": len(traced),
            "median_copy_rank_pct_abs": rank_abs, "median_copy_rank_pct_pull": rank_pull,
            "top10_precision_pull": precision_pull, "copies_share_of_abs_influence": share,
            "copies_share_of_traced": len(copies) / len(traced)}


def _saturation(ctx, theta_d: torch.Tensor, theta_g: torch.Tensor, copy_ids: np.ndarray) -> dict:
    """How much the copies can still drive training at the end: the final D's logit on them and the norm of
    their real-side D-loss gradient, against the other training images' (medians, 10% and 90% quantiles), and
    D's logit on 2,000 generated samples. A copy D calls real with certainty has a vanishing gradient, so it
    moves the traced steps (and the estimate) little, however often it appears."""
    x = ctx.dataset.train.x.to(ctx.dtype)
    grad = torch.func.vmap(torch.func.grad(lambda t, xi: ctx.gan.real_losses(t, xi[None]).sum()), in_dims=(None, 0))
    with torch.no_grad():
        logit = torch.cat([ctx.gan.logits(theta_d, x[i:i + 256]) for i in range(0, len(x), 256)]).numpy()
        norm = torch.cat([grad(theta_d, x[i:i + 64]).norm(dim=1) for i in range(0, len(x), 64)]).numpy()
        z = torch.randn(2000, ctx.cfg.model.z_dim, generator=torch.Generator().manual_seed(5), dtype=ctx.dtype)
        fake = ctx.gan.logits(theta_d, ctx.gan.generate(theta_g, z)).numpy()
    is_copy = np.isin(np.arange(len(x)), copy_ids)

    def q(v):
        return [float(a) for a in np.quantile(v, [0.5, 0.1, 0.9])]

    return {"d_logit_copies": q(logit[is_copy]), "d_logit_others": q(logit[~is_copy]), "d_logit_generated": q(fake),
            "grad_norm_copies": q(norm[is_copy]), "grad_norm_others": q(norm[~is_copy])}


def cmd_copies(args) -> dict:
    work = Path(args.work)
    folder = work / "data"
    planted_name, copies = _planted_folder(args.variant, folder, args.seed, args.copies, args.n, args.quantile)
    base = preset("mnist-adam", args.seed)
    cfg = prepare(apply_overrides(base, ["data.source=folder", f"data.root={folder}", "data.n_train=none",
                                         f"data.color={'rgb' if args.variant == 'rgb' else 'gray'}", *args.set]))
    root = store.store_root(work / "store")
    started = time.perf_counter()
    run = train(cfg, root)
    train_s = time.perf_counter() - started
    ctx = RunContext.create(load_run_config(run), root)
    paths = ctx.dataset.train_paths
    stem = planted_name.split("/")[0] + "/planted"
    copy_ids = np.array([i for i, p in enumerate(paths) if p.startswith(stem)], dtype=np.int64)
    reference = int(copy_ids[0])
    trace = Trace.load(run)
    final_d, final_g = final_parameters(ctx, trace)
    cand = torch.randn(args.candidates, cfg.model.z_dim, generator=torch.Generator().manual_seed(77),
                       dtype=torch.float64)
    with torch.no_grad():
        images = ctx.gan.generate(final_g, cand.to(ctx.dtype))
        feats = features_of(ctx, images).numpy()
        ref_feat = features_of(ctx, ctx.dataset.train.x[reference:reference + 1].to(ctx.dtype)).numpy()[0]
    dist = np.linalg.norm(feats - ref_feat, axis=1)
    nearest = np.argsort(dist, kind="stable")[:args.samples]
    z = cand[nearest].numpy()
    out = {"variant": args.variant, "run_id": run.run_id, "train_seconds": train_s, "copies_in_data": copies,
           "copies_in_training_split": len(copy_ids), "n_train": ctx.dataset.n_train,
           "test": run.read_json("summary.json")["test"], "candidates": args.candidates,
           "sample_distance": dist[nearest].tolist(), "median_candidate_distance": float(np.median(dist)),
           "saturation": _saturation(ctx, final_d, final_g, copy_ids)}
    by_objective = {}
    for objective in [f"reference:#{reference}"] + (["realism"] if args.realism else []):
        e = explain(run, {"z": z.tolist()}, objective)
        copyset = set(copy_ids.tolist())
        precision = []
        for i in range(len(z)):
            top = np.argsort(-np.abs(e.matrix[i]), kind="stable")[:10]
            precision.append(float(np.mean([int(j) in copyset for j in top])))
        by_objective[objective.split(":")[0]] = {
            "name": e.name, "top10_precision": precision, "mean_top10_precision": float(np.mean(precision)),
            **_copy_ranks(e, copy_ids),
            "pass_seconds": e.meta["seconds"], "verdict": e.meta["verdict"],
            "nearcopy": e.nearcopy.drop(columns=["top_ids"]).to_dict(orient="records"),
            "copies_sign": float(np.mean(np.sign(e.matrix[:, copy_ids]) * e.harmful_sign))}
        if objective.startswith("reference"):
            pull = e
    # contrast: random samples' near-copy signals (the flag's calibration)
    far = np.argsort(dist, kind="stable")[len(dist) // 2:][:args.contrast]
    e_far = explain(run, {"z": cand[far].numpy().tolist()}, f"reference:#{reference}")
    out["random_far_samples_nearcopy"] = e_far.nearcopy.drop(columns=["top_ids"]).to_dict(orient="records")
    out["objectives"] = by_objective
    replay = replay_removals(run, pull, [Lane.of(copy_ids)], list(range(len(z))))
    moved = -replay.actual[0]  # the objective is minus the distance: actual < 0 = the sample moved away
    out["removal"] = {"predicted_distance_change": (-replay.predicted[0]).tolist(),
                      "actual_distance_change": moved.tolist(), "share_moved_away": float(np.mean(moved > 0)),
                      "mean_distance_before": float(-pull.values.mean()),
                      "mean_distance_after": float(-(pull.values + replay.actual[0]).mean()),
                      "replay_seconds": replay.seconds}
    k = 10
    rows = [("planted image", [ctx.dataset.train.x[reference].numpy()], None),
            (f"{len(z)} nearest samples", list(replay.generated[0]), None),
            ("same z, copies removed", list(replay.generated[1]), None)]
    for i in range(min(2, len(z))):
        top = np.argsort(-np.abs(pull.matrix[i]), kind="stable")[:k]
        rows.append((f"sample {i}: top-{k} responsible", [ctx.dataset.train.x[j].numpy() for j in top],
                     [int(j) in set(copy_ids.tolist()) for j in top]))
    ASSETS.mkdir(exist_ok=True)
    tags = [str(args.copies) if args.copies else "", f"n{args.n}" if args.n else "",
            f"q{args.quantile:g}" if args.quantile != 0.995 else "", args.tag or ""]
    figure = ASSETS / f"explain-copies-{'-'.join([args.variant, *filter(None, tags)])}.png"
    _grid(rows).save(figure)
    out["figure"] = str(figure)
    p = by_objective["reference"]
    print(f"{args.variant}: {len(copy_ids)} copies in the training split of {ctx.dataset.n_train}; the {len(z)} "
          f"generated samples nearest the planted image (of {args.candidates}): top-10 precision (reference) "
          f"{p['mean_top10_precision']:.2f}; after "
          f"removing the copies {out['removal']['share_moved_away']:.0%} moved away (mean distance "
          f"{out['removal']['mean_distance_before']:.3g} -> {out['removal']['mean_distance_after']:.3g}); figure {figure}")
    return out


# ---------------------------------------------------------------- accuracy (resumable)
def _chosen(run, cfg, seed: int, n: int, candidates: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """(z of the chosen samples, their candidate indices): the n // 2 of lowest clarity among `candidates` seeded z,
    then n - n // 2 random others."""
    ctx = RunContext.create(cfg, run.root)
    _, final_g = final_parameters(ctx, Trace.load(run))
    z = torch.randn(candidates, cfg.model.z_dim, generator=torch.Generator().manual_seed(1000 + seed),
                    dtype=torch.float64)
    with torch.no_grad():
        clarity = class_log_probs(ctx, ctx.gan.generate(final_g, z.to(ctx.dtype))).max(1).values.numpy()
    low = np.argsort(clarity, kind="stable")[: n // 2]
    rest = np.setdiff1d(np.arange(candidates), low)
    picked = np.concatenate([low, np.random.default_rng(seed).choice(rest, n - len(low), replace=False)])
    return z[picked].numpy(), picked


def _chunks(folder: Path, prefix: str, run, e, lanes: list[Lane], size: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(predicted, actual) of every lane, (lanes, rows); each chunk of `size` lanes saved when done and read back."""
    predicted, actual, seconds = [], [], 0.0
    for c in range(0, len(lanes), size):
        path = folder / f"{prefix}-{c // size:03d}.npz"
        if not path.exists():
            r = replay_removals(run, e, lanes[c:c + size])
            buf = io.BytesIO()
            np.savez(buf, predicted=r.predicted, actual=r.actual, seconds=r.seconds)
            path.write_bytes(buf.getvalue())
            print(f"  {prefix}: lanes {c}..{min(c + size, len(lanes)) - 1} replayed in {r.seconds:.0f} s", flush=True)
        saved = np.load(path)
        predicted.append(saved["predicted"])
        actual.append(saved["actual"])
        seconds += float(saved["seconds"])
    return np.concatenate(predicted), np.concatenate(actual), seconds


def cmd_accuracy(args) -> dict:
    root = store.store_root(args.store)
    out_dir = Path(args.out)
    for seed in args.seeds:
        folder = out_dir / f"seed{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        cfg = apply_overrides(preset(args.preset, seed), args.set)
        started = time.perf_counter()
        run = train(cfg, root)
        train_s = time.perf_counter() - started
        if (folder / "z.npy").exists():
            z = np.load(folder / "z.npy")
        else:
            z, picked = _chosen(run, cfg, seed, args.samples)
            np.save(folder / "z.npy", z)
            np.save(folder / "candidates.npy", picked)
        e = explain(run, {"z": z.tolist()}, "clarity", EstimateOptions(last_steps=args.last_steps))
        print(f"seed {seed}: {run.run_id}, pass over {len(z)} samples {e.meta['seconds']:.0f} s ({e.meta['verdict']})",
              flush=True)
        trace = Trace.load(run)
        n_train = e.matrix.shape[1]
        traced = np.flatnonzero(trace.step_of_instance(n_train, trace.steps - e.meta["traced_steps"]) >= 0)
        k = max(1, round(args.fraction * len(traced)))
        lanes = []
        for i in range(len(z)):
            top = e.responsible(i, n_train)
            lanes.append(Lane.of(top[np.isin(top, traced)][:k]))
            lanes.append(Lane.of(np.random.default_rng([seed, i]).choice(traced, k, replace=False)))
        g_pred, g_act, g_s = _chunks(folder, "groups", run, e, lanes, args.chunk)
        rows = np.arange(len(z))
        top_p, top_a = g_pred[0::2][rows, rows], g_act[0::2][rows, rows]
        rnd_a = g_act[1::2][rows, rows]
        rnd_p = g_pred[1::2][rows, rows]
        moved = np.sign(top_p) == np.sign(top_a)
        beats = top_a * e.harmful_sign > rnd_a * e.harmful_sign
        own_p, own_a = np.concatenate([top_p, rnd_p]), np.concatenate([top_a, rnd_a])
        result = {
            "seed": seed, "run_id": run.run_id, "train_seconds": train_s, "pass_seconds": e.meta["seconds"],
            "verdict": e.meta["verdict"], "growth": max(e.meta["growth"]), "samples": len(z), "k": k,
            "traced": len(traced), "clarity": e.values.tolist(),
            "group": {"top_moves_as_predicted": float(moved.mean()), "top_beats_random": float(beats.mean()),
                      "pearson_own": float(stats.pearsonr(own_p, own_a).statistic),
                      "pearson_all": float(stats.pearsonr(g_pred.ravel(), g_act.ravel()).statistic),
                      "top_predicted": top_p.tolist(), "top_actual": top_a.tolist(), "random_actual": rnd_a.tolist(),
                      "replay_seconds": g_s},
            "loo": None,
        }
        g = result["group"]
        line = (f"seed {seed}: top 1% moved as predicted for {g['top_moves_as_predicted']:.0%} of samples, beat random "
                f"1% for {g['top_beats_random']:.0%}; Pearson r {g['pearson_own']:.3f} (own lanes), "
                f"{g['pearson_all']:.3f} (all lanes x samples)")
        if args.loo_n:
            singles = np.random.default_rng([seed, 7]).choice(traced, min(args.loo_n, len(traced)), replace=False)
            l_pred, l_act, l_s = _chunks(folder, "loo", run, e, [Lane.of([j]) for j in singles], args.chunk)
            taus = [float(stats.kendalltau(l_pred[:, i], l_act[:, i]).statistic) for i in range(len(z))]
            loo_samples = [0, len(z) // 2, len(z) // 2 + 1][: args.loo_samples]
            result["loo"] = {"n": len(singles), "samples": loo_samples, "tau": [taus[i] for i in loo_samples],
                             "tau_all_samples": taus, "mean_tau_all": float(np.mean(taus)), "replay_seconds": l_s}
            line += (f"; leave-one-out tau on samples {loo_samples}: " + ", ".join(f"{t:.3f}" for t in result["loo"]["tau"])
                     + f" (mean over all {len(z)}: {result['loo']['mean_tau_all']:.3f})")
        _json(folder / "result.json", result)
        print(line, flush=True)
    # every seed measured under --out so far (a seed may have been run by another invocation, e.g. without LOO)
    done = [json.loads(p.read_text()) for p in sorted(out_dir.glob("seed*/result.json"))]
    summary = {"preset": args.preset, "seeds": [r["seed"] for r in done], "per_seed": [
        {k: r[k] for k in ("seed", "run_id", "k", "pass_seconds", "verdict")}
        | {"moved": r["group"]["top_moves_as_predicted"], "beats_random": r["group"]["top_beats_random"],
           "pearson": r["group"]["pearson_own"], "loo_tau": r["loo"]["tau"] if r["loo"] else None} for r in done]}
    _json(out_dir / "summary.json", summary)
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None, help="also write the numbers to this file")
    sub = ap.add_subparsers(dest="what", required=True)
    t = sub.add_parser("toy")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--points", type=int, default=10)
    t.add_argument("--k", type=int, default=20)
    c = sub.add_parser("cost")
    c.add_argument("--preset", default="tiny")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--objective", default="realism")
    c.add_argument("--counts", type=int, nargs="+", default=[1, 64])
    c.add_argument("--last-steps", type=int, default=None)
    p = sub.add_parser("copies")
    p.add_argument("--variant", choices=["mnist", "rgb"], default="mnist")
    p.add_argument("--work", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samples", type=int, default=10)
    p.add_argument("--copies", type=int, default=None,
                   help="how often the planted image appears (default: the issue's 50 for mnist, 30 for rgb)")
    p.add_argument("--n", type=int, default=None, help="source images (default 10,000 MNIST, 6,000 RGB)")
    p.add_argument("--quantile", type=float, default=0.995,
                   help="the planted image's quantile of nearest-neighbour distance (0.995 an outlier, 0.5 typical)")
    p.add_argument("--candidates", type=int, default=5000)
    p.add_argument("--contrast", type=int, default=5, help="samples far from the planted image, for the copy flag")
    p.add_argument("--realism", action="store_true", help="also explain the nearest samples' realism")
    p.add_argument("--tag", help="appended to the figure's name (assets/explain-copies-...-TAG.png): a run with other "
                                 "--set values must not replace another's figure")
    a = sub.add_parser("accuracy")
    a.add_argument("--preset", default="mnist-adam")
    a.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    a.add_argument("--samples", type=int, default=20)
    a.add_argument("--fraction", type=float, default=0.01)
    a.add_argument("--loo-n", type=int, default=100, help="leave-one-out replays (0: none, the group check only)")
    a.add_argument("--loo-samples", type=int, default=3)
    a.add_argument("--last-steps", type=int, default=None)
    a.add_argument("--chunk", type=int, default=8, help="lanes per saved chunk of replays")
    a.add_argument("--out", required=True)
    for s in (t, c, p, a):
        s.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = {"toy": cmd_toy, "cost": cmd_cost, "copies": cmd_copies, "accuracy": cmd_accuracy}[args.what](args)
    if args.json:
        _json(Path(args.json), out)


if __name__ == "__main__":
    main()
