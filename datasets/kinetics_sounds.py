"""Kinetics-Sounds: the 31 sounding Kinetics classes, from the official Kinetics CSV lists.

Annotations: one Kinetics CSV (``train.csv``, ``validate.csv``, ``test.csv``) or a directory whose
``*.csv`` files are all read.  Header ``label,youtube_id,time_start,time_end,split[,is_cc]``;
multi-word labels are quoted (``"playing bass guitar"``); ``split`` is ``train``/``val``/``test``
(or ``validate``, or the long subset names) and becomes "training"/"validation"/"testing".

Only the 31 classes of the paper's supplementary (section B) are kept; note that "dribbling
basketball", "blowing out candles", "mowing lawn" and "stomping grapes" are the Kinetics names of
those sounds.  Rows of other classes are ignored and counted in ``Dataset.skipped`` (and logged).

Media: ``<youtube_id>_<start:06d>_<end:06d>.<ext>`` inside a per-class folder named after the
label with spaces or with underscores, either directly in the videos directory or under a split
folder (``train/``, ``val/``, ...); a flat layout (no class folders) is found too.  The record id
is the clip name; a listed clip that is not there gets ``path=None``.

Malformed input (bad header, short rows, non-integer times, unknown split, duplicate clips, ids
with path characters) raises ``AnnotationError`` naming the file and line.  Media is never opened.
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path

from .base import AnnotationError, Dataset, VideoRecord, check_video_id, find_video, register

log = logging.getLogger(__name__)

KINETICS_SOUNDS_CLASSES = (
    "blowing nose", "blowing out candles", "bowling", "chopping wood", "dribbling basketball",
    "laughing", "mowing lawn", "playing accordion", "playing bagpipes", "playing bass guitar",
    "playing clarinet", "playing drums", "playing guitar", "playing harmonica", "playing keyboard",
    "playing organ", "playing piano", "playing saxophone", "playing trombone", "playing trumpet",
    "playing violin", "playing xylophone", "ripping paper", "shoveling snow", "shuffling cards",
    "singing", "stomping grapes", "tap dancing", "tapping guitar", "tapping pen", "tickling",
)
REQUIRED = ("label", "youtube_id", "time_start", "time_end", "split")
SPLITS = {"train": "training", "training": "training", "val": "validation", "validate": "validation",
          "validation": "validation", "test": "testing", "testing": "testing"}


def clip_id(youtube_id: str, start: int, end: int) -> str:
    return f"{youtube_id}_{start:06d}_{end:06d}"


def _csv_files(annotations_path) -> list[Path]:
    p = Path(annotations_path)
    if p.is_dir():
        files = sorted(p.glob("*.csv"))
        if not files:
            raise AnnotationError(f"{p}: no Kinetics *.csv list in this directory")
        return files
    if not p.is_file():
        raise AnnotationError(f"{p}: Kinetics CSV list not found")
    return [p]


def _seconds(value: str, where: str, field: str) -> int:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise AnnotationError(f"{where}: {field} {value!r} is not a number") from None
    if x != int(x) or x < 0:
        raise AnnotationError(f"{where}: {field} {value!r} is not a whole number of seconds")
    return int(x)


def _rows(path: Path):
    """(line number, row dict) for each data row; header and row shape checked."""
    try:
        f = path.open(newline="", encoding="utf-8-sig")
    except OSError as e:
        raise AnnotationError(f"{path}: cannot read: {e}") from None
    with f:
        reader = csv.reader(f, strict=True)
        try:
            header = [h.strip() for h in next(reader, [])]
            missing = [c for c in REQUIRED if c not in header]
            if missing:
                raise AnnotationError(f"{path}: line 1: header lacks {', '.join(missing)} "
                                      f"(expected {','.join(REQUIRED)}[,is_cc])")
            for row in reader:
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != len(header):
                    raise AnnotationError(f"{path}: line {reader.line_num}: {len(row)} fields, "
                                          f"the header has {len(header)} (unquoted comma in a label?)")
                yield reader.line_num, dict(zip(header, (c.strip() for c in row)))
        except csv.Error as e:
            raise AnnotationError(f"{path}: line {reader.line_num}: invalid CSV: {e}") from None


class _ClipFinder:
    """Looks clips up in class folders (spaces or underscores), optionally under a split folder."""

    def __init__(self, videos_dir: Path):
        self.root = Path(videos_dir)

    def find(self, cid: str, label: str, split: str) -> Path | None:
        folders = dict.fromkeys([label, label.replace(" ", "_")])
        parents = [self.root] + [self.root / s for s in dict.fromkeys([split, SPLITS[split]])]
        for parent in parents:
            for folder in folders:
                d = parent / folder
                if d.is_dir():
                    hit = find_video(d, cid, prefixes=("",))
                    if hit is not None:
                        return hit
        return find_video(self.root, cid, prefixes=("",))


@register("kinetics-sounds")
def load_kinetics_sounds(videos_dir, annotations_path) -> Dataset:
    """``--dataset kinetics-sounds``: ``annotations_path`` is a Kinetics CSV or a folder of them."""
    if annotations_path is None:
        raise AnnotationError("kinetics-sounds: the Kinetics CSV lists (train.csv, validate.csv, ...) are required")
    keep = {c: c for c in KINETICS_SOUNDS_CLASSES}
    keep.update({c.replace(" ", "_"): c for c in KINETICS_SOUNDS_CLASSES})
    finder = _ClipFinder(Path(videos_dir))
    records, seen, skipped = [], {}, 0
    for path in _csv_files(annotations_path):
        for line, row in _rows(path):
            where = f"{path}: line {line}"
            label = row["label"]
            split = row["split"].lower()
            if split not in SPLITS:
                raise AnnotationError(f"{where}: split {row['split']!r} is not one of train, val, test")
            if label not in keep:
                if not label:
                    raise AnnotationError(f"{where}: empty label")
                skipped += 1
                continue
            yid = check_video_id(row["youtube_id"], path, f"line {line}")
            start = _seconds(row["time_start"], where, "time_start")
            end = _seconds(row["time_end"], where, "time_end")
            if end <= start:
                raise AnnotationError(f"{where}: time_end {end} is not after time_start {start}")
            cid = clip_id(yid, start, end)
            if cid in seen:
                raise AnnotationError(f"{where}: clip {cid!r} is listed twice (first at {seen[cid]})")
            seen[cid] = where
            label = keep[label]
            records.append(VideoRecord(id=cid, path=finder.find(cid, label, split), labels=(label,),
                                       subset=SPLITS[split], duration=float(end - start)))
    if skipped:
        log.info("kinetics-sounds: ignored %d rows of classes outside the 31 Kinetics-Sounds classes", skipped)
    return Dataset(name="kinetics-sounds", classes=KINETICS_SOUNDS_CLASSES, videos=tuple(records), skipped=skipped)
