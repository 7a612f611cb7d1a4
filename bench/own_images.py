"""Own images end to end through the CLI, and the "metric uninformative" check on random images.

Usage: .venv/bin/python bench/own_images.py [--work DIR] [--n 2000] [--epochs 3]

1. Writes a synthetic folder of N 32x32 RGB PNGs (coloured shapes on gradients) in nested
   sub-folders, unlabelled (data.labels=none), plus unreadable files (corrupt PNGs, an empty
   file, a text file). Trains a dcgan on it with autoencoder features, estimates influence
   on FID, cleanses without the 50 most harmful, exports the cleaned training set and checks
   that the export has exactly the expected files (every kept path, byte for byte) and that
   the source folder is unchanged.
2. Writes N random-noise PNGs in two class folders and trains with the classifier features
   (at chance on noise): its metric report must say "metric uninformative".
Prints the numbers and verdicts; exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def shapes_folder(root: Path, n: int, seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32]
    for i in range(n):
        base = rng.uniform(0, 255, 3)
        grad = (yy[..., None] / 31.0) * rng.uniform(-80, 80, 3)
        img = np.clip(base + grad, 0, 255)
        cx, cy, r = rng.uniform(8, 24, 2).tolist() + [rng.uniform(4, 10)]
        mask = ((xx - cx) ** 2 + (yy - cy) ** 2 < r**2) if i % 2 else ((abs(xx - cx) < r) & (abs(yy - cy) < r))
        img[mask] = rng.uniform(0, 255, 3)
        rel = Path(f"set{i % 4}") / f"part{(i // 4) % 5}" / (f"deep{i % 3}" if i % 7 == 0 else "") / f"img_{i:05d}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.astype(np.uint8)).save(root / rel)
    bad = {"set0/broken_1.png": b"\x89PNG\r\n\x1a\n" + b"x" * 50, "set1/part2/broken_2.png": b"not an image",
           "set2/empty.png": b"", "README.txt": b"notes", "set3/part0/truncated.jpg": b"\xff\xd8\xff\xe0" + b"0" * 20}
    for rel, data in bad.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return len(bad)


def noise_folder(root: Path, n: int, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    for i in range(n):
        rel = Path(f"class{i % 2}") / f"noise_{i:05d}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / rel)


def digest_tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def cli(store: Path, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "influence", "--store", str(store), *args, "--json"],
                          cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"gan-influence {' '.join(args)} failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", help="folder for the images, store and export (default: a temp folder)")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="gie-own-")).resolve()
    store, images, noise = work / "store", work / "images", work / "noise"
    failures = []
    if not images.exists():
        shapes_folder(images, args.n)
    before = digest_tree(images)
    common = [f"train.epochs={args.epochs}", f"train.lr_schedule={args.epochs}:0.001:0.001", "data.n_train=none",
              "data.image_size=32", "data.color=rgb", "model.arch=dcgan", "eval.n_valid_z=500", "eval.n_test_z=500"]
    sets = [f"data.root={images}", "data.source=folder", "data.labels=none", "eval.feature=autoencoder", *common]
    train = cli(store, "train", "--preset", "tiny", *[a for s in sets for a in ("--set", s)])
    run_id = train["run_id"]
    print(f"own images: run {run_id}, test {train['test']}")
    report = train["metric_report"]
    print(f"  features {report['features']}; reference {report['reference']}")
    for m, v in report["verdicts"].items():
        print(f"  {m}: {v['verdict']} {v['reasons']}")
    est = cli(store, "estimate", "--run", run_id, "--metric", "fid", "--top", "3")["fid"]
    print(f"  FID estimate: {est['verdict']}, growth {est['growth']:.3g}, most harmful {est['most_harmful']}")
    if not all("path" in t for t in est["most_harmful"]):
        failures.append("estimate --json lacks paths")
    table = __import__("pandas").read_csv(store / run_id / "influence" / "table.csv")
    order = table.sort_values("harmful_rank_fid")
    removal = work / "removal.csv"
    order.head(50)[["path"]].to_csv(removal, index=False)  # named by path only
    clean = cli(store, "cleanse", "--run", run_id, "--remove", str(removal))
    print(f"  cleanse without 50 (by path): FID {clean['before']['fid']:.4g} -> {clean['after']['fid']:.4g}, "
          f"predicted {clean['predicted_change']['fid']:+.3g}; {clean['predicted_scope']}")
    target = work / "export"
    if target.exists():
        import shutil

        shutil.rmtree(target)
    manifest = cli(store, "export", "--run", run_id, "--removal", str(removal), "--to", str(target))
    exported = digest_tree(target)
    kept = sorted(set(table["path"]) - set(order.head(50)["path"]))
    expected = set(kept) | {"manifest.json", "removed.csv"}
    print(f"  export: {manifest['n_exported']} images + manifest.json + removed.csv = {len(exported)} files "
          f"(expected {len(expected)}); training set {len(table)}, removed {manifest['n_removed']}")
    if set(exported) != expected:
        failures.append(f"export files differ: missing {sorted(expected - set(exported))[:3]}, "
                        f"extra {sorted(set(exported) - expected)[:3]}")
    if any(exported[k] != before[k] for k in kept):
        failures.append("an exported file differs from its original")
    if digest_tree(images) != before:
        failures.append("the source folder changed")

    if not noise.exists():
        noise_folder(noise, args.n)
    sets = [f"data.root={noise}", "data.source=folder", "eval.feature=mnist-cnn", *common]
    rnd = cli(store, "train", "--preset", "tiny", *[a for s in sets for a in ("--set", s)])
    report = rnd["metric_report"]
    print(f"random images: run {rnd['run_id']}, test {rnd['test']}; features {report['features']}; "
          f"reference {report['reference']}")
    for m, v in report["verdicts"].items():
        print(f"  {m}: {v['verdict']} {v['reasons']}")
    if report["verdicts"]["fid"]["verdict"] != "metric uninformative":
        failures.append("random images: FID not marked uninformative")
    print(f"work folder {work}")
    for f in failures:
        print(f"FAILED: {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
