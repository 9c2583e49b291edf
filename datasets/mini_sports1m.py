"""Mini-Sports1M: 30 training + 10 test videos per class, 2-5 minutes long, from Sports-1M's lists.

Annotations: the Sports-1M folder (a ``sports-1m-dataset`` checkout, or any file in it) holding
``labels.txt`` (one name a line; line k is label k) and either the text partitions
``original/train_partition.txt`` / ``original/test_partition.txt`` (or the same names without
``original/``), whose lines are ``URL label[,label...]`` (``https://www.youtube.com/watch?v=<id>``
or a bare id), or the JSON lists ``sports1m_train.json`` / ``sports1m_test.json``: a list of
``{"id": <id or URL>, "label487": [labels]}`` (``"labels"`` also accepted).

Selection, per class, with ``numpy.random.default_rng((seed, label, 0 | 1))``: the listed videos
present locally (``<videos>/<id>.<ext>``) whose first label is the class are shuffled and taken
in that order, keeping those whose container duration (PyAV ``container.duration``, no decoding)
is within ``[min_duration, max_duration]`` seconds, until ``train_per_class`` (30) training and
``test_per_class`` (10) test videos are found.  A video keeps only its first label (top-1
accuracy needs one).  Classes with no chosen training video are left out; short classes keep what
they have (logged).  Subsets: "training" and "testing".

The chosen list is written to ``split_file`` (default ``<annotations>/mini-sports1m-seed<seed>.json``)
and, when that file exists, read back instead of sampling again (it must name the same seed and
sizes), so the split is reproducible even after more videos are downloaded.  Malformed lists
raise ``AnnotationError`` naming the file and line.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np

from .activitynet import read_json
from .base import AnnotationError, Dataset, VideoRecord, check_video_id, find_video, register

log = logging.getLogger(__name__)
SUBSETS = (("train", "training"), ("test", "testing"))


def youtube_id(ref: str, where: str) -> str:
    """The video id of a YouTube URL (``watch?v=``, ``youtu.be/``) or a bare id."""
    ref = ref.strip()
    if "://" in ref:
        u = urlparse(ref)
        vid = parse_qs(u.query).get("v", [None])[0] if "youtube" in u.netloc else None
        if vid is None and u.netloc.endswith("youtu.be"):
            vid = u.path.lstrip("/")
        if not vid:
            raise AnnotationError(f"{where}: no YouTube video id in {ref!r}")
        ref = vid
    return check_video_id(ref, where)


def _labels(values, n_labels: int, where: str) -> tuple[int, ...]:
    try:
        labels = tuple(int(v) for v in values)
    except (TypeError, ValueError):
        raise AnnotationError(f"{where}: labels {values!r} are not integers") from None
    if not labels or any(not 0 <= lab < n_labels for lab in labels):
        raise AnnotationError(f"{where}: labels {values!r} not in 0..{n_labels - 1} (labels.txt)")
    return labels


def _read_list(path: Path, n_labels: int) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {}

    def add(vid, labels, where):
        if vid in out:
            raise AnnotationError(f"{where}: video {vid!r} listed twice")
        out[vid] = labels

    if path.suffix == ".json":
        doc = read_json(path)
        if not isinstance(doc, list):
            raise AnnotationError(f"{path}: expected a JSON list of {{'id': ..., 'label487': [...]}}")
        for i, item in enumerate(doc):
            where = f"{path}: item {i}"
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                raise AnnotationError(f"{where}: no string 'id'")
            labels = item.get("label487", item.get("labels"))
            if not isinstance(labels, list):
                raise AnnotationError(f"{where}: no 'label487' list")
            add(youtube_id(item["id"], where), _labels(labels, n_labels, where), where)
        return out
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise AnnotationError(f"{path}: cannot read: {e}") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}: line {n}"
        parts = line.split()
        if len(parts) != 2:
            raise AnnotationError(f"{where}: expected 'URL label[,label...]', got {line.strip()!r}")
        add(youtube_id(parts[0], where), _labels(parts[1].split(","), n_labels, where), where)
    return out


def _find_lists(d: Path) -> dict[str, Path]:
    for names in (("original/train_partition.txt", "original/test_partition.txt"),
                  ("train_partition.txt", "test_partition.txt"),
                  ("sports1m_train.json", "sports1m_test.json")):
        paths = [d / n for n in names]
        if all(p.is_file() for p in paths):
            return dict(zip(("train", "test"), paths))
    raise AnnotationError(f"{d}: no Sports-1M lists (original/train_partition.txt + test_partition.txt, "
                          f"or sports1m_train.json + sports1m_test.json)")


def container_duration(path: Path) -> float | None:
    """Seconds, from the container header (no decoding); None if unreadable."""
    from ..core.media import container_duration as header_duration
    return header_duration(path)


def _read_split_file(path: Path, params: dict, classes_all: tuple[str, ...], videos_dir: Path) -> Dataset:
    doc = read_json(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("videos"), list):
        raise AnnotationError(f"{path}: not a Mini-Sports1M split file (no 'videos' list)")
    for k, v in params.items():
        if doc.get(k) != v:
            raise AnnotationError(f"{path}: was made with {k}={doc.get(k)!r}, not {v!r}; "
                                  f"delete it or pass the same settings")
    records, seen = [], set()
    for i, item in enumerate(doc["videos"]):
        where = f"{path}: videos[{i}]"
        if not isinstance(item, dict) or {"id", "label", "subset"} - set(item):
            raise AnnotationError(f"{where}: needs 'id', 'label' and 'subset'")
        vid = check_video_id(item["id"], path, f"videos[{i}]")
        if vid in seen:
            raise AnnotationError(f"{where}: video {vid!r} listed twice")
        seen.add(vid)
        if item["label"] not in classes_all:
            raise AnnotationError(f"{where}: unknown label {item['label']!r} (not in labels.txt)")
        if item["subset"] not in ("training", "testing"):
            raise AnnotationError(f"{where}: subset {item['subset']!r} is not training or testing")
        records.append(VideoRecord(id=vid, path=find_video(videos_dir, vid), labels=(item["label"],),
                                   subset=item["subset"], duration=item.get("duration")))
    used = {r.labels[0] for r in records}
    return Dataset(name="mini-sports1m", classes=tuple(c for c in classes_all if c in used), videos=tuple(records))


@register("mini-sports1m")
def load_mini_sports1m(videos_dir, annotations_path, *, seed: int = 0, train_per_class: int = 30,
                       test_per_class: int = 10, min_duration: float = 120.0, max_duration: float = 300.0,
                       split_file: str | Path | None = None) -> Dataset:
    """``--dataset mini-sports1m``: ``annotations_path`` is the Sports-1M folder (labels.txt + lists)."""
    if annotations_path is None:
        raise AnnotationError("mini-sports1m: the Sports-1M folder (labels.txt and the partition lists) is required")
    p = Path(annotations_path)
    d = p if p.is_dir() else p.parent
    videos_dir = Path(videos_dir)
    label_file = d / "labels.txt"
    try:
        classes_all = tuple(line.strip() for line in label_file.read_text(encoding="utf-8-sig").splitlines()
                            if line.strip())
    except (OSError, UnicodeDecodeError) as e:
        raise AnnotationError(f"{label_file}: cannot read: {e}") from None
    if len(set(classes_all)) != len(classes_all) or not classes_all:
        raise AnnotationError(f"{label_file}: empty, or a label name appears twice")
    params = {"seed": seed, "train_per_class": train_per_class, "test_per_class": test_per_class,
              "min_duration": min_duration, "max_duration": max_duration}
    split_file = Path(split_file) if split_file is not None else d / f"mini-sports1m-seed{seed}.json"
    if split_file.is_file():
        return _read_split_file(split_file, params, classes_all, videos_dir)

    lists = {k: _read_list(path, len(classes_all)) for k, path in _find_lists(d).items()}
    both = set(lists["train"]) & set(lists["test"])
    if both:
        raise AnnotationError(f"{d}: video {sorted(both)[0]!r} is in both the training and the test list")
    chosen, short = [], []
    for kind, subset in SUBSETS:
        want = train_per_class if kind == "train" else test_per_class
        per_class: dict[int, list[str]] = {}
        for vid, labels in lists[kind].items():
            per_class.setdefault(labels[0], []).append(vid)
        for label in sorted(per_class):
            if kind == "test" and label not in {c for c, _, _, _ in chosen}:
                continue  # a class needs training videos to be evaluated
            cands = sorted(per_class[label])
            order = np.random.default_rng((seed, label, 0 if kind == "train" else 1)).permutation(len(cands))
            got = 0
            for i in order:
                path = find_video(videos_dir, cands[i])
                dur = container_duration(path) if path is not None else None
                if dur is not None and min_duration <= dur <= max_duration:
                    chosen.append((label, cands[i], subset, round(dur, 3)))
                    got += 1
                    if got == want:
                        break
            if 0 < got < want or (kind == "test" and got == 0):
                short.append(f"{classes_all[label]} ({subset}: {got})")
    if short:
        log.warning("mini-sports1m: %d classes have fewer videos than asked: %s", len(short), ", ".join(short[:10]))
    doc = dict(params, videos=[{"id": v, "label": classes_all[c], "subset": s, "duration": t} for c, v, s, t in chosen])
    split_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = split_file.with_name(split_file.name + ".part")
    tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    tmp.replace(split_file)
    log.info("mini-sports1m: wrote the chosen split to %s", split_file)
    return _read_split_file(split_file, params, classes_all, videos_dir)
