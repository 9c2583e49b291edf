"""ActivityNet v1.3: the official annotation JSON -> ``Dataset`` (and a writer for that format).

The file looks like::

    {"version": "VERSION 1.3",
     "taxonomy": [{"nodeId": 1, "nodeName": "Root", "parentId": null, "parentName": null}, ...],
     "database": {"<id>": {"subset": "training" | "validation" | "testing", "duration": 117.3,
                           "url": "...", "resolution": "640x360",
                           "annotations": [{"segment": [s, e], "label": "Long jump"}, ...]}}}

Classes are the taxonomy's leaf nodes, sorted by name, when the file has a taxonomy; otherwise the
sorted unique labels.  A video with several labels keeps all of them (unique, first seen first);
testing videos have no labels.  Media is looked up as ``v_<id>.<ext>`` or ``<id>.<ext>`` in the
videos directory; a listed video that is not there gets ``path=None`` (the extractor records it as
a failure).  Anything malformed raises ``AnnotationError`` with one line naming the file and entry.

This module reads and writes the annotation file only; it never opens media.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from .base import AnnotationError, Dataset, VideoRecord, check_video_id, find_video, register

SUBSETS = ("training", "validation", "testing")
VERSION = "VERSION 1.3"


class _Obj(dict):
    """A JSON object that remembers keys it saw twice (``json`` silently keeps the last)."""
    duplicates: tuple[str, ...] = ()


def _object_hook(pairs):
    obj = _Obj()
    dups = []
    for k, v in pairs:
        if k in obj:
            dups.append(k)
        obj[k] = v
    obj.duplicates = tuple(dups)
    return obj


def read_json(path: Path):
    """Parse ``path``; invalid JSON becomes one-line ``AnnotationError``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise AnnotationError(f"{path}: cannot read: {e}") from None
    try:
        return json.loads(text, object_pairs_hook=_object_hook)
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{path}: invalid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None


def taxonomy_leaves(taxonomy, path: Path) -> tuple[str, ...]:
    """Names of the taxonomy's leaf nodes (nodes no other node names as parent), sorted."""
    if not isinstance(taxonomy, list):
        raise AnnotationError(f"{path}: 'taxonomy' is not a list")
    ids, parents, names = [], set(), {}
    for i, node in enumerate(taxonomy):
        if not isinstance(node, dict) or "nodeId" not in node or not isinstance(node.get("nodeName"), str):
            raise AnnotationError(f"{path}: taxonomy[{i}]: needs 'nodeId' and a string 'nodeName'")
        ids.append(node["nodeId"])
        names[node["nodeId"]] = node["nodeName"]
        if node.get("parentId") is not None:
            parents.add(node["parentId"])
    return tuple(sorted({names[i] for i in ids if i not in parents}))


def _labels(entry, vid: str, path: Path) -> tuple[str, ...]:
    where = f"{path}: video {vid!r}"
    anns = entry.get("annotations", [])
    if not isinstance(anns, list):
        raise AnnotationError(f"{where}: 'annotations' is not a list")
    labels: list[str] = []
    for j, ann in enumerate(anns):
        if not isinstance(ann, dict) or not isinstance(ann.get("label"), str) or not ann["label"].strip():
            raise AnnotationError(f"{where}: annotations[{j}] has no string 'label'")
        seg = ann.get("segment")
        if seg is not None:
            ok = (isinstance(seg, list) and len(seg) == 2
                  and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in seg)
                  and seg[0] <= seg[1])
            if not ok:
                raise AnnotationError(f"{where}: annotations[{j}] 'segment' is not [start, end] with start <= end")
        if ann["label"] not in labels:
            labels.append(ann["label"])
    return tuple(labels)


def parse_activitynet(path: Path, videos_dir: Path | None, *, name: str = "activitynet") -> Dataset:
    """The ``Dataset`` an ActivityNet-format JSON describes; media looked up in ``videos_dir``."""
    path = Path(path)
    doc = read_json(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("database"), dict):
        raise AnnotationError(f"{path}: no 'database' object at the top level")
    db = doc["database"]
    if db.duplicates:
        raise AnnotationError(f"{path}: video {db.duplicates[0]!r}: duplicate video id")
    taxonomy = taxonomy_leaves(doc["taxonomy"], path) if doc.get("taxonomy") else None

    records = []
    for vid, entry in db.items():
        check_video_id(vid, path, "database")
        where = f"{path}: video {vid!r}"
        if not isinstance(entry, dict):
            raise AnnotationError(f"{where}: entry is not an object")
        if entry.duplicates:
            raise AnnotationError(f"{where}: duplicate key {entry.duplicates[0]!r}")
        subset = entry.get("subset")
        if subset not in SUBSETS:
            raise AnnotationError(f"{where}: 'subset' is {subset!r}, expected one of {', '.join(SUBSETS)}")
        duration = entry.get("duration")
        if duration is not None:
            if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not duration >= 0:
                raise AnnotationError(f"{where}: 'duration' {duration!r} is not a non-negative number")
            duration = float(duration)
        labels = () if subset == "testing" else _labels(entry, vid, path)
        if taxonomy is not None:
            for lab in labels:
                if lab not in taxonomy:
                    raise AnnotationError(f"{where}: unknown label {lab!r} (not a taxonomy leaf)")
        media = find_video(Path(videos_dir), vid) if videos_dir is not None else None
        records.append(VideoRecord(id=vid, path=media, labels=labels, subset=subset, duration=duration))

    classes = taxonomy if taxonomy is not None else tuple(sorted({l for r in records for l in r.labels}))
    return Dataset(name=name, classes=classes, videos=tuple(records))


@register("activitynet")
def load_activitynet(videos_dir, annotations_path) -> Dataset:
    """``--dataset activitynet``: ``annotations_path`` is the v1.3 JSON (e.g. activity_net.v1-3.min.json)."""
    if annotations_path is None:
        raise AnnotationError("activitynet: an annotation file (activity_net.v1-3.min.json) is required")
    return parse_activitynet(Path(annotations_path), Path(videos_dir))


def write_activitynet_json(
    path: Path,
    records: Iterable[VideoRecord],
    segments: Mapping[str, Sequence[tuple[float, float, str]]],
    *,
    classes: Sequence[str] | None = None,
    resolution: str | None = None,
    url: str = "",
) -> Path:
    """Write ``records`` as an ActivityNet v1.3 file; ``segments[id]`` = [(start, end, label), ...].

    Testing records get no annotations.  ``classes`` (default: the labels used) become the leaf
    nodes of a one-level taxonomy under "Root".
    """
    records = list(records)
    if classes is None:
        classes = sorted({seg[2] for segs in segments.values() for seg in segs})
    taxonomy = [{"nodeId": 0, "nodeName": "Root", "parentId": None, "parentName": None}]
    taxonomy += [{"nodeId": i + 1, "nodeName": c, "parentId": 0, "parentName": "Root"}
                 for i, c in enumerate(classes)]
    database = {}
    for r in records:
        check_video_id(r.id, path, "record")
        if r.id in database:
            raise AnnotationError(f"{path}: video {r.id!r}: duplicate video id")
        anns = [] if r.subset == "testing" else [
            {"segment": [round(float(s), 3), round(float(e), 3)], "label": lab} for s, e, lab in segments.get(r.id, ())]
        entry = {"subset": r.subset, "duration": r.duration, "url": f"{url}{r.id}" if url else "",
                 "annotations": anns}
        if resolution:
            entry["resolution"] = resolution
        database[r.id] = entry
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": VERSION, "taxonomy": taxonomy, "database": database}, indent=1) + "\n",
                    encoding="utf-8")
    return path
