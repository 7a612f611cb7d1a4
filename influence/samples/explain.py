"""Why did the GAN make this? The influence of every training image on chosen generated samples, in one pass.

`explain` builds the sample objective (objectives.samples) on the chosen z, runs the stored, resumable
backward pass over its stacked rows (estimator.stored_pass: one adjoint per row, up to 64 samples) and
stores the samples x instances matrix, named by the objective's identity and the estimator's options:

    explain/<kind>-<identity hash>-<options>/
        matrix.npy        (rows, n_train) float64: influence of each training image on each row
        values.npy        (rows,) the objective at the end of training
        z.npy             (n, z_dim) the chosen latent vectors
        generated.npy     (n, ...) float32: G(z) at the end of training (images in [-1, 1], or 2D points)
        reference.npy     the reference's features (objective reference only)
        nearcopy.csv      near-copy signals per sample (samples.nearcopy)
        matrix.parquet    one row per training image (id, path, label) and one column per objective row
        top.csv           the most responsible images of each sample, both signs
        meta.json         identity, label, sign, options, growth and verdict per row, seconds
        checks/           replays without the responsible images (samples.check)

Both directions read the same matrix: a sample's row(s) rank the training images (`responsible`), a
training image's column ranks the samples it drives (`footprint`).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import datamap, store
from ..context import RunContext, load_run_config
from ..errors import ConfigError, StoreError
from ..estimator import (ESTIMATOR_VERSION, EstimateOptions, check_options, drop_partial, partial_folder, result_name,
                         rows_per_product, stored_pass)
from ..estimator.verdict import growth_of, verdict_for
from ..objectives.samples import (Clarity, ClassShare, Position, Realism, Reference, SampleObjective, build,
                                  features_of)
from ..progress import CancelToken, ProgressFn
from ..train import Trace
from . import nearcopy
from .latents import latents

BASE = "explain"
TOP_CSV = 20  # images per side and sample in top.csv


@dataclass
class Explanation:
    name: str  # folder under explain/
    matrix: np.ndarray  # (rows, n_train)
    values: np.ndarray  # (rows,)
    z: np.ndarray  # (n, z_dim)
    generated: np.ndarray  # (n, ...) G(z) at the end of training
    meta: dict
    nearcopy: pd.DataFrame | None  # one row per sample (per-sample objectives only)

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    @property
    def row_sample(self) -> np.ndarray:
        return np.asarray(self.meta["row_sample"], dtype=np.int64)

    @property
    def n_samples(self) -> int:
        return len(self.z)

    @property
    def harmful_sign(self) -> int:
        return int(self.meta["harmful_sign"])

    @property
    def is_vector(self) -> bool:
        """Several rows per sample (the 2D position): an image's influence is a displacement, not a signed score."""
        return self.kind == "position"

    def sample_rows(self, sample: int) -> np.ndarray:
        return self.matrix[self.row_sample == sample]

    def strength(self, sample: int) -> np.ndarray:
        """Per training image: signed influence times the harmful sign (positive = harmful), or the displacement's
        length for a vector objective."""
        rows = self.sample_rows(sample)
        return np.sqrt((rows**2).sum(0)) if self.is_vector else rows[0] * self.harmful_sign

    def responsible(self, sample: int, k: int, side: str = "harmful") -> np.ndarray:
        """The k training ids that drive the sample most: 'harmful' (removal moves it the way wanted; for a
        vector objective the largest displacement) or 'helpful' (removal moves it the other way)."""
        key = self.strength(sample)
        if side == "helpful":
            if self.is_vector:
                raise ConfigError("a displacement has no helpful side; use the largest")
            key = -key
        elif side != "harmful":
            raise ConfigError("side must be harmful or helpful")
        return np.argsort(-key, kind="stable")[:k]

    def footprint(self, instance: int, k: int | None = None) -> np.ndarray:
        """The samples a training image drives most (largest |influence| first)."""
        col = self.matrix[:, instance]
        per_sample = np.array([np.sqrt((col[self.row_sample == i] ** 2).sum()) for i in range(self.n_samples)])
        return np.argsort(-per_sample, kind="stable")[:k]


def folder(name: str) -> str:
    return f"{BASE}/{name}"


def explain(run: store.Run, samples: dict, objective: str, options: EstimateOptions = EstimateOptions(),
            progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> Explanation:
    """Influence of every training image on the objective `objective` ('realism', 'clarity', 'reference:PATH',
    'reference:#ID', 'position', 'class:C[:more|less]') of the samples `samples` (latents.spec); cached."""
    cfg = load_run_config(run)
    trace = Trace.load(run)
    n_params = trace.final.shape[0]
    check_options(options, trace)
    ctx = RunContext.create(cfg, run.root, dtype=options.resolved_dtype(n_params))
    final_d, final_g = final_parameters(ctx, trace)
    obj = build(ctx, final_d, final_g, objective, latents(cfg, samples))
    name = f"{obj.name}-{result_name(options, n_params)}"
    cached = load(run, name, options, n_params)
    if cached is not None:
        return cached
    state, norms, seconds, first, _ = stored_pass(ctx, run, trace, [obj], options, progress, cancel)
    matrix = state.scores.numpy()
    with torch.no_grad():
        generated = obj.generate(ctx, final_g)
    growth = [growth_of(norms[:, r, 2], first)[1] for r in range(obj.rows)]
    verdict, message = verdict_for(max(growth))
    meta = {
        "name": name, "kind": obj.kind, "label": obj.label, "identity": obj.identity(), "objective": objective,
        "samples": samples if "z" not in samples else {"z": "from a file"}, "per_sample": obj.per_sample,
        "higher_is_better": obj.higher_is_better, "harmful_sign": obj.harmful_sign, "sign": obj.sign_sentence(),
        "rows": obj.rows, "row_sample": obj.row_sample.tolist(), "row_labels": obj.row_labels(),
        "options": options.identity(n_params), "estimator_version": ESTIMATOR_VERSION,
        "traced_steps": trace.steps - first, "trace_first_step": trace.first_step, "seconds": seconds,
        "rows_per_product": rows_per_product(ctx.device, ctx.cfg.model.arch) or obj.rows,
        "growth": growth, "verdict": verdict, "verdict_message": message,
    }
    base = folder(name)
    run.write_npy(f"{base}/matrix.npy", matrix)
    run.write_npy(f"{base}/values.npy", np.asarray(state.values, dtype=np.float64))
    run.write_npy(f"{base}/z.npy", obj.z.numpy())
    run.write_npy(f"{base}/generated.npy", generated.float().cpu().numpy())
    if isinstance(obj, Reference):
        run.write_npy(f"{base}/reference.npy", obj.target.numpy())
    near = None
    if obj.per_sample:
        train_features = datamap.training_features(run, ctx)
        with torch.no_grad():
            sample_features = features_of(ctx, generated).float().cpu().numpy()
        typical = nearcopy.typical_distance(train_features)
        near = nearcopy.signals(matrix, obj.row_sample, train_features, sample_features, typical)
        meta["typical_nearest_distance"] = typical
        run.write(f"{base}/nearcopy.csv", near.to_csv(index=False).encode())
    explanation = Explanation(name, matrix, np.asarray(state.values), obj.z.numpy(),
                              generated.float().cpu().numpy(), meta, near)
    run.write(f"{base}/matrix.parquet", _parquet(matrix_table(explanation, ctx.dataset)))
    run.write(f"{base}/top.csv", top_table(explanation, ctx.dataset, TOP_CSV).to_csv(index=False).encode())
    run.write_json(f"{base}/meta.json", meta)  # last: its presence marks a complete result
    drop_partial(run, partial_folder([obj], options, n_params))
    return explanation


def final_parameters(ctx: RunContext, trace: Trace) -> tuple[torch.Tensor, torch.Tensor]:
    """(theta_D, the generator parameters the metrics use) at the end of training, on ctx's device and dtype."""
    theta_d, theta_g = trace.final_eval()
    return (torch.from_numpy(np.array(theta_d)).to(ctx.device, ctx.dtype),
            torch.from_numpy(np.array(theta_g)).to(ctx.device, ctx.dtype))


def load(run: store.Run, name: str, options: EstimateOptions | None = None, n_params: int | None = None
         ) -> Explanation | None:
    """The stored explanation `name` if complete and intact (and computed with `options`), else None."""
    base = folder(name)
    if not run.exists(f"{base}/meta.json"):
        return None
    try:
        meta = run.read_json(f"{base}/meta.json")
        if meta.get("estimator_version") != ESTIMATOR_VERSION:
            return None
        if options is not None and meta["options"] != options.identity(n_params):
            return None
        near = pd.read_csv(run.verify(f"{base}/nearcopy.csv")) if run.exists(f"{base}/nearcopy.csv") else None
        return Explanation(name, run.read_npy(f"{base}/matrix.npy"), run.read_npy(f"{base}/values.npy"),
                           run.read_npy(f"{base}/z.npy"), run.read_npy(f"{base}/generated.npy"), meta, near)
    except (StoreError, KeyError):
        return None  # damaged or incomplete: computed again


def stored(run: store.Run) -> list[dict]:
    """meta.json of every stored explanation, oldest first."""
    base = run.path(BASE)
    out = []
    for d in sorted(base.iterdir(), key=lambda p: p.stat().st_mtime) if base.is_dir() else []:
        if not d.name.startswith("_") and (d / "meta.json").exists():
            try:
                out.append(run.read_json(f"{BASE}/{d.name}/meta.json"))
            except StoreError:
                continue
    return out


def find(run: store.Run, kind: str, z: np.ndarray, identity: dict | None = None) -> Explanation | None:
    """The newest stored explanation of objective `kind` on exactly these z whose identity holds `identity`'s
    items (e.g. the reference), if any (the app's lookup after a job)."""
    digest = hashlib.sha256(np.ascontiguousarray(np.asarray(z, dtype=np.float64)).tobytes()).hexdigest()
    for meta in reversed(stored(run)):
        ident = meta["identity"]
        if (meta["kind"] == kind and ident["z_sha256"] == digest
                and all(ident.get(k) == v for k, v in (identity or {}).items())):
            return load(run, meta["name"])
    return None


def restore_objective(run: store.Run, explanation: Explanation, ctx: RunContext, trace: Trace) -> SampleObjective:
    """The explanation's objective rebuilt from what it stored (for replays: its fixed class, reference and D)."""
    z = torch.from_numpy(explanation.z)
    params = explanation.meta["identity"]
    kind = explanation.kind
    if kind == "realism":
        obj: SampleObjective = Realism(z, final_parameters(ctx, trace)[0])
    elif kind == "clarity":
        obj = Clarity(z, params["classes"])
    elif kind == "reference":
        obj = Reference(z, torch.from_numpy(run.read_npy(f"{folder(explanation.name)}/reference.npy")),
                        params["reference"])
    elif kind == "position":
        obj = Position(z)
    else:
        obj = ClassShare(z, params["class"], params["want"])
    if obj.identity() != params:
        raise StoreError(f"explanation {explanation.name}: its stored parts do not rebuild its objective")
    return obj


# ---------------------------------------------------------------- tables
def matrix_table(explanation: Explanation, dataset) -> pd.DataFrame:
    """One row per training image (id, path or source_index, label) and one column per objective row."""
    ids = np.arange(explanation.matrix.shape[1])
    table = pd.DataFrame({"id": ids, **dataset.origin_columns(ids)})
    y = dataset.train.y
    table["label"] = y.numpy() if y is not None else -1
    for label, row in zip(explanation.meta["row_labels"], explanation.matrix):
        table[label] = row
    table.attrs["sign"] = explanation.meta["sign"]
    return table


def top_table(explanation: Explanation, dataset, k: int) -> pd.DataFrame:
    """The k most responsible training images of each sample on each side (a vector objective: the k largest
    displacements), with the influence of each of the sample's rows."""
    y = dataset.train.y
    sides = ("largest",) if explanation.is_vector else ("harmful", "helpful")
    rows = []
    for i in range(explanation.n_samples if explanation.meta["per_sample"] else 1):
        labels = [lab for lab, s in zip(explanation.meta["row_labels"], explanation.row_sample) if s == i]
        values = explanation.sample_rows(i)
        for side in sides:
            ids = explanation.responsible(i, k, "harmful" if side == "largest" else side)
            for rank, j in enumerate(ids, 1):
                row = {"sample": i, "side": side, "rank": rank, "id": int(j),
                       **{key: v[0] for key, v in dataset.origin_columns([j]).items()}}
                row["label"] = int(y[j]) if y is not None else -1
                row.update({f"influence {lab}" if len(labels) > 1 else "influence": float(v[j])
                            for lab, v in zip(labels, values)})
                rows.append(row)
    return pd.DataFrame(rows)


def _parquet(table: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    table.attrs = {}
    table.to_parquet(buf, index=False)
    return buf.getvalue()


def export_paths(run: store.Run, explanation: Explanation) -> dict[str, Path]:
    base = folder(explanation.name)
    return {"matrix": run.path(f"{base}/matrix.parquet"), "top": run.path(f"{base}/top.csv"),
            "nearcopy": run.path(f"{base}/nearcopy.csv")}
