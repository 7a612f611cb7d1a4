"""Removal sets as CSV: written with id, path, label and influence per metric; read by id or by path.

A removal CSV names training instances by an 'id' column, a 'path' column (own images: the
file's path relative to data.root), both (then they must agree), or one id per line.
Lines starting with '#' are comments. Every problem is a ConfigError naming the line.
"""

from __future__ import annotations

import csv
import io

import numpy as np
import pandas as pd

from .errors import ConfigError


def read_removal_csv(text: str, n_train: int | None = None, paths: list[str] | None = None,
                     ambiguous: dict[str, list[str]] | None = None) -> list[int]:
    """Training ids named by the CSV, in file order; `paths` (the run's training paths) resolves a 'path' column;
    `ambiguous`: names several zip members shared -> the unique paths they were given (Dataset.ambiguous_paths)."""
    try:  # newline="": csv itself splits lines, so old Mac '\r' endings are lines, not an error
        rows = [row for row in csv.reader(io.StringIO(text, newline="")) if row and any(c.strip() for c in row)]
    except csv.Error as e:
        raise ConfigError(f"the removal CSV cannot be parsed: {e}") from None
    rows = [row for row in rows if not row[0].lstrip().startswith("#")]
    if not rows:
        raise ConfigError("the removal CSV is empty")
    header = [c.strip().lower() for c in rows[0]]
    id_col = header.index("id") if "id" in header else None
    path_col = header.index("path") if "path" in header else None
    has_header = id_col is not None or path_col is not None
    if not has_header and len(header) > 1:
        raise ConfigError("the removal CSV needs an 'id' or a 'path' column (or one id per line)")
    if path_col is not None and paths is None:
        if id_col is None:
            raise ConfigError("the removal CSV names instances by path, but this run's data has no file paths "
                              "(built-in data): use the 'id' column")
        path_col = None  # ids alone name instances of built-in data
    lookup = {p: i for i, p in enumerate(paths)} if path_col is not None else {}
    body = rows[1:] if has_header else rows
    ids = []
    for line, row in enumerate(body, start=2 if has_header else 1):
        value = _id_cell(row, id_col or 0, line) if id_col is not None or not has_header else None
        if path_col is not None:
            path = row[path_col].strip() if len(row) > path_col else ""
            if path in (ambiguous or {}):
                raise ConfigError(f"removal CSV line {line}: '{path[:80]}' is ambiguous: the zip holds "
                                  f"{len(ambiguous[path])} members of that name, loaded as "
                                  f"{', '.join(ambiguous[path])}; name the one you mean")
            if path not in lookup:
                raise ConfigError(f"removal CSV line {line}: '{path[:80]}' is not a training image of this run "
                                  "(held out for validation/test, unreadable, or not under data.root)")
            if value is not None and value != lookup[path]:
                raise ConfigError(f"removal CSV line {line}: id {value} is '{paths[value] if 0 <= value < len(paths) else '?'}'"
                                  f" in this run, not '{path[:80]}' (ids and paths disagree)")
            value = lookup[path]
        ids.append(value)
    if not ids:
        raise ConfigError("the removal CSV has a header but no ids")
    if n_train is not None:
        for value in ids:  # before numpy sees them: a huge id would overflow int64
            if not 0 <= value < n_train:
                shown = str(value) if abs(value) < 10**12 else str(value)[:15] + "..."
                raise ConfigError(f"removal id {shown} is outside the training set (ids 0..{n_train - 1})")
        from .cleanse import check_removal_ids

        check_removal_ids(ids, n_train)
    return ids


def _id_cell(row: list[str], column: int, line: int) -> int:
    cell = row[column].strip() if len(row) > column else ""
    try:
        return int(cell)
    except ValueError:
        raise ConfigError(f"removal CSV line {line}: '{cell[:40]}' is not an integer id") from None


def removal_frame(ids, dataset, results: dict | None = None, verdicts: dict | None = None) -> pd.DataFrame:
    """id, path (own images), label (-1 = unlabelled), influence_<metric> per result, one row per removed id;
    with `verdicts` (honesty), metric_<metric> says whether the metric is informative for the run."""
    ids = np.asarray(ids, dtype=np.int64)
    frame = pd.DataFrame({"id": ids})
    if dataset.train_paths is not None:
        frame["path"] = [dataset.train_paths[i] for i in ids]
    frame["label"] = dataset.train.y.numpy()[ids] if dataset.train.y is not None else -1
    for metric, r in (results or {}).items():
        frame[f"influence_{metric}"] = r.scores[ids]
        if metric in (verdicts or {}):
            frame[f"metric_{metric}"] = verdicts[metric]["verdict"]
    return frame


def removal_csv(ids, dataset, results: dict | None = None, verdicts: dict | None = None) -> bytes:
    """The removal set as CSV (what `gan-influence cleanse --remove` and `export --removal` read)."""
    return removal_frame(ids, dataset, results, verdicts).to_csv(index=False).encode()
