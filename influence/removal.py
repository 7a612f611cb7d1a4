"""Removal sets as CSV: written with id, what leads it back (path, MNIST's source_index or the 2D point), label and
influence per metric; read by id or by path.

A removal CSV names training instances by an 'id' column, a 'path' column (own images: the
file's path relative to data.root), both (then they must agree), or one id per line.
Lines starting with '#' are comments. Every problem is a ConfigError naming the line.
"""

from __future__ import annotations

import csv
import itertools
import re
from collections.abc import Iterator

import numpy as np
import pandas as pd

from .errors import ConfigError


MAX_REMOVAL_BYTES = 64 * 2**20  # a removal file or upload larger than this is refused unread (CLI and app)


def read_removal_csv(text: str, n_train: int | None = None, paths: list[str] | None = None,
                     ambiguous: dict[str, list[str]] | None = None) -> list[int]:
    """Training ids named by the CSV, in file order; `paths` (the run's training paths) resolves a 'path' column;
    `ambiguous`: names several zip members shared -> the unique paths they were given (Dataset.ambiguous_paths).

    Streamed, in memory bounded by the training set, not by the file: rows are parsed one at a time and every
    id is checked as it comes (range, duplicate, all instances), so a huge file stops at its first bad line
    or after n_train ids (before: all rows as lists of strings, about 140x the file's size)."""
    rows = _rows(text)
    try:
        first = next(rows, None)
    except csv.Error as e:
        raise ConfigError(f"the removal CSV cannot be parsed: {e}") from None
    if first is None:
        raise ConfigError("the removal CSV is empty")
    header = [c.strip().lower() for c in first[1]]
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
    seen = bytearray(n_train) if n_train is not None else None  # one byte per instance: duplicates
    ids: list[int] = []
    try:
        for line, row in rows if has_header else itertools.chain([first], rows):
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
                    raise ConfigError(f"removal CSV line {line}: id {value} is "
                                      f"'{paths[value] if 0 <= value < len(paths) else '?'}' in this run, not "
                                      f"'{path[:80]}' (ids and paths disagree)")
                value = lookup[path]
            if seen is not None:
                _check_id(value, n_train, seen)
            ids.append(value)
            if n_train is not None and len(ids) >= n_train:  # all distinct and in range: every instance
                raise ConfigError("the removal set would remove every training instance")
    except csv.Error as e:
        raise ConfigError(f"the removal CSV cannot be parsed: {e}") from None
    if not ids:
        raise ConfigError("the removal CSV has a header but no ids")
    return ids


def _rows(text: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) of the rows that are not blank or comments, one at a time. csv reads the lines
    with their endings, so old Mac '\r' endings are lines, not an error."""
    lines = (m.group() for m in _LINE.finditer(text) if m.group())
    reader = csv.reader(lines)
    for row in reader:
        if row and any(c.strip() for c in row) and not row[0].lstrip().startswith("#"):
            yield reader.line_num, row


_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n|$)")


def _check_id(value: int, n_train: int, seen: bytearray) -> None:
    if not 0 <= value < n_train:  # before numpy sees it: a huge id would overflow int64
        shown = str(value) if abs(value) < 10**12 else str(value)[:15] + "..."
        raise ConfigError(f"removal id {shown} is outside the training set (ids 0..{n_train - 1})")
    if seen[value]:
        raise ConfigError(f"removal id {value} is listed more than once")
    seen[value] = 1


def _id_cell(row: list[str], column: int, line: int) -> int:
    cell = row[column].strip() if len(row) > column else ""
    try:
        return int(cell)
    except ValueError:
        raise ConfigError(f"removal CSV line {line}: '{cell[:40]}' is not an integer id") from None


def removal_frame(ids, dataset, results: dict | None = None, verdicts: dict | None = None) -> pd.DataFrame:
    """id, path (own images), source_index (MNIST) or x1, x2 (the 2D toy), label (-1 = unlabelled), influence_<metric>
    per result, one row per removed id;
    with `verdicts` (honesty), metric_<metric> says whether the metric is informative for the run."""
    ids = np.asarray(ids, dtype=np.int64)
    frame = pd.DataFrame({"id": ids, **dataset.origin_columns(ids)})
    frame["label"] = dataset.train.y.numpy()[ids] if dataset.train.y is not None else -1
    for metric, r in (results or {}).items():
        frame[f"influence_{metric}"] = r.scores[ids]
        if metric in (verdicts or {}):
            frame[f"metric_{metric}"] = verdicts[metric]["verdict"]
    return frame


def removal_csv(ids, dataset, results: dict | None = None, verdicts: dict | None = None) -> bytes:
    """The removal set as CSV (what `gan-influence cleanse --remove` and `export --removal` read)."""
    return removal_frame(ids, dataset, results, verdicts).to_csv(index=False).encode()
