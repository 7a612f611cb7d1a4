"""The Train page's "Start from a trained GAN": a fine-tune of a run of the store or of uploaded G and D files,
as the train job the CLI's `gan-influence finetune` runs (influence.finetune.configure), its architecture check
and, once trained, the trace-lr probe's table."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pandas as pd

from influence import store
from influence.config import RunConfig
from influence.finetune import weights_report
from influence.tracelr import adopted_sentence, refusal

SOURCES = {"run": "a run of this store", "files": "G and D files (state dicts or safetensors)"}
TRACE_LR = {
    "auto": "measured: the largest rate the probe finds reliable (auto)",
    "schedule": "the recipe's last rate, no probe",
    "check": "my rate (kept; the probe runs beside it and warns when it is far above its pick)",
}
WEIGHT_TYPES = ["pt", "pth", "safetensors"]


def finetunable_runs(runs: list[dict]) -> list[str]:
    """Finished image runs of the store (the 2D toys train in seconds from scratch)."""
    return [r["run_id"] for r in runs if r.get("summary") and r.get("config")
            and r["config"]["data"]["source"] != "normal2d"]


def save_weights(root: Path, name: str, data: bytes) -> Path:
    """An uploaded weights file kept in <store>/_uploads/weights/, named by its content (its sha256 enters the id)."""
    suffix = ".safetensors" if name.lower().endswith(".safetensors") else ".pt"
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).stem)[:60] or "weights"
    path = root / "_uploads" / "weights" / f"{hashlib.sha256(data).hexdigest()[:16]}-{stem}{suffix}"
    if not path.exists():
        store.write_bytes(path, data)
    return path.resolve()


def check_lines(cfg: RunConfig, shown: dict[str, str] | None = None) -> tuple[bool, list[str]]:
    """(the files fit, one line per layer that does not fit or per file that does); shown: the names the user
    knows the files by (the uploads' names), by path."""
    shown = shown or {}
    rows = weights_report(cfg)
    bad = [r for r in rows if r["problem"] is not None]
    if bad:
        return False, [f"{r['player']} layer '{r['layer']}': {r['problem']}" if r["layer"] else
                       f"{r['player']}: {r['problem']}" for r in bad]
    arch = f"{cfg.model.arch} (width {cfg.model.width}, z_dim {cfg.model.z_dim})"
    return True, [f"{r['player']} '{shown.get(r['file'], Path(r['file']).name)}' fits the configured {arch}"
                  for r in rows]


def probe_frame(probe: dict) -> pd.DataFrame:
    """The probe's rungs as a table: the rate, growth over the probed steps, per step, extrapolated, the whole
    epoch's growth where a rung was confirmed on it, its most harmful 5% replayed (actual over predicted), verdict."""
    rows = []
    for r in probe["rungs"]:
        c = r.get("confirmed")
        note = r["diverged"] or ("stopped: grew past the threshold" if r["stopped_early"] else "")
        if c and (c["diverged"] or c["stopped_early"]):
            note = c["diverged"] or f"the epoch's walk stopped after {c['walked']} of {c['steps']} steps"
        rep = r.get("replayed")
        note = refusal(r) or note
        rows.append({"lr_D": r["lr_d"], "lr_G": r["lr_g"], f"growth over {probe['probe_steps']} steps": r["growth"],
                     "per step": r["rate"], f"extrapolated to {probe['traced_steps']} steps": r["extrapolated"],
                     "over the epoch": c["extrapolated"] if c else None,
                     "harmful 5%: actual / predicted": rep["ratio"] if rep else None, "verdict": r["verdict"],
                     "note": note})
    return pd.DataFrame(rows)


def probe_sentence(probe: dict) -> str:
    lr = probe["user_lr"] if probe["mode"] == "check" else probe["chosen"]
    what = "kept (your rate)" if probe["mode"] == "check" else "chosen by the probe"
    adopted = adopted_sentence(probe["influence"]) if probe.get("influence") else ""
    adopted = f" {adopted[:1].upper()}{adopted[1:]}." if adopted else ""
    return (f"Traced at lr_D {lr[0]:.3g}, lr_G {lr[1]:.3g}, {what}: {probe['reason']}. "
            f"{probe['cost']['sentence'][0].upper()}{probe['cost']['sentence'][1:]}." + adopted)
