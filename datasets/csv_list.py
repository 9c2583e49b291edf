"""One's own list of videos: a CSV file (``--dataset csv --annotations FILE.csv``).

Columns (a header row names them, in any order; extra columns are ignored):
- ``path``: the media file, relative to ``--videos DIR`` (or absolute); spaces and non-ASCII
  names are fine (quote a field holding a comma, as CSV does);
- ``label``: the class name (empty for an unlabelled video; several labels: ``a;b``);
- ``subset``: ``train``/``training``, ``val``/``validation``/``validate``, ``test``/``testing``;
- optional ``id``: the record id (default: ``path`` without its extension, folders joined by
  ``__``, as ``--dataset folder``);
- optional ``start``, ``end``: seconds, to use only that part of the file (the moment grid starts
  at ``start``; nothing after ``end`` is used).  Either may be empty.

Classes are the labels sorted by name (class index = position).
A malformed row (a missing column, a bad subset, a time that is not a number or ``end <=
start``, a duplicate id, an id with path characters) raises ``AnnotationError`` in one line
naming the file and the row's line.  A listed file that is not there gets ``path=None`` (the
extractor records it as missing).  Media is never opened here.
"""
from __future__ import annotations

import csv
from pathlib import Path

from .base import AnnotationError, Dataset, VideoRecord, check_video_id, register
from .folder import path_id

REQUIRED = ("path", "label", "subset")
SUBSETS = {"train": "training", "training": "training", "val": "validation",
           "validate": "validation", "validation": "validation", "test": "testing",
           "testing": "testing"}


def _seconds(value: str | None, where: str, field: str) -> float | None:
    if value is None or not value.strip():
        return None
    try:
        t = float(value)
    except ValueError:
        raise AnnotationError(f"{where}: {field} {value!r} is not a number of seconds") from None
    if not t >= 0.0 or t == float("inf"):
        raise AnnotationError(f"{where}: {field} {value!r} must be a finite number >= 0")
    return t


@register("csv")
def load_csv(videos_dir, annotations_path, **_unused) -> Dataset:
    """``--dataset csv --annotations FILE.csv``: the rows of one CSV list (module docstring)."""
    if _unused:
        raise TypeError(f"unexpected option(s) {', '.join(sorted(_unused))} (the csv adapter takes none)")
    path = Path(annotations_path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise AnnotationError(f"{path}: cannot read: {' '.join(str(e).split())}") from None
    reader = csv.reader(text.splitlines())
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise AnnotationError(f"{path}: empty file (expected a header row: path,label,subset)") from None
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise AnnotationError(f"{path}: line 1: header {','.join(header)!r} lacks column(s) "
                              f"{', '.join(missing)} (need path,label,subset[,id,start,end])")
    col = {name: header.index(name) for name in header if name}
    root = Path(videos_dir) if videos_dir is not None else path.parent
    records, seen, labels = [], {}, set()
    for row in reader:
        line = reader.line_num
        if not any(c.strip() for c in row):
            continue
        where = f"{path}: line {line}"
        if len(row) < len(header):
            raise AnnotationError(f"{where}: {len(row)} fields, the header has {len(header)}")
        get = {name: row[i].strip() for name, i in col.items()}
        if not get["path"]:
            raise AnnotationError(f"{where}: empty path")
        subset = SUBSETS.get(get["subset"].lower())
        if subset is None:
            raise AnnotationError(f"{where}: subset {get['subset']!r} is not one of "
                                  f"{', '.join(sorted(set(SUBSETS)))}")
        vid = get.get("id") or path_id(get["path"])
        check_video_id(vid, path, f"line {line}")
        if vid in seen:
            raise AnnotationError(f"{where}: id {vid!r} is listed twice (first at line {seen[vid]})")
        seen[vid] = line
        start, end = _seconds(get.get("start"), where, "start"), _seconds(get.get("end"), where, "end")
        if start is not None and end is not None and end <= start:
            raise AnnotationError(f"{where}: end {end:g} s is not after start {start:g} s")
        names = tuple(x.strip() for x in get["label"].split(";") if x.strip())
        labels.update(names)
        media = Path(get["path"]) if Path(get["path"]).is_absolute() else root / get["path"]
        records.append(VideoRecord(id=vid, path=media if media.is_file() else None, labels=names,
                                   subset=subset, start=start, end=end,
                                   duration=(end - (start or 0.0)) if end is not None else None))
    if not records:
        raise AnnotationError(f"{path}: no rows after the header")
    return Dataset(name="csv", classes=tuple(sorted(labels)), videos=tuple(records))
