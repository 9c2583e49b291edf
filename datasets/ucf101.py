"""UCF-101: the official ``ucfTrainTestlist`` files -> ``Dataset`` (split 1 by default).

Annotations: the ``ucfTrainTestlist`` folder (or any file in it) holding
``classInd.txt`` ("1 ApplyEyeMakeup", indices 1..101), ``trainlist0N.txt``
("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1") and ``testlist0N.txt`` (no label: the class is
the folder).  CRLF line ends and a UTF-8 byte-order mark are tolerated.

Subsets: ``trainlist`` -> "training", ``testlist`` -> "testing".  UCF-101 has no official
validation list, so there is no "validation" subset; as is customary (and as the paper reports
its split-1 numbers), evaluation uses "testing".  Carve a validation set out of "training" by
group (``_gNN_``) if one is needed, so that clips of one group never straddle the two.

Classes are ``classInd.txt``'s names in index order (class index = index - 1).  The record id is
the file stem (``v_ApplyEyeMakeup_g08_c01``).  Media is ``<videos>/<Folder>/<file>`` or, for a flat
copy, ``<videos>/<file>``; folders and files are matched case-insensitively, so the folder
``HandstandPushups`` with files ``v_HandStandPushups_...`` resolves whichever way a copy spells
them.  About half of the clips have no audio track: they are kept (the extractor flags them).

Malformed lists (bad lines, unknown classes, a label that disagrees with the folder, duplicate
clips, path characters) raise ``AnnotationError`` naming the file and line.  Media is never opened.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..core.errors import ConfigError
from .base import VIDEO_EXTENSIONS, AnnotationError, Dataset, VideoRecord, check_video_id, register


def _lines(path: Path):
    """(line number, stripped text) for the non-blank lines of a text list."""
    try:
        text = path.read_text(encoding="utf-8-sig")   # universal newlines: CRLF becomes LF
    except (OSError, UnicodeDecodeError) as e:
        raise AnnotationError(f"{path}: cannot read: {e}") from None
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            yield n, line.strip()


def read_class_ind(path: Path) -> tuple[str, ...]:
    names: dict[int, str] = {}
    for n, line in _lines(path):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise AnnotationError(f"{path}: line {n}: expected '<index> <ClassName>', got {line!r}")
        idx, name = int(parts[0]), parts[1]
        if idx in names or name in names.values():
            raise AnnotationError(f"{path}: line {n}: class {idx} {name!r} listed twice")
        check_video_id(name, path, f"line {n}")
        names[idx] = name
    if not names or sorted(names) != list(range(1, len(names) + 1)):
        raise AnnotationError(f"{path}: class indices must run 1..N without gaps")
    return tuple(names[i] for i in range(1, len(names) + 1))


class _CaseInsensitiveDir:
    """Resolves ``Folder/file`` under a root, ignoring case (exact spelling first), listing each folder once."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._listings: dict[Path, dict[str, list[str]]] = {}

    def _listing(self, d: Path) -> dict[str, list[str]]:
        if d not in self._listings:
            names: dict[str, list[str]] = {}
            try:
                for e in sorted(os.scandir(d), key=lambda e: e.name):
                    names.setdefault(e.name.lower(), []).append(e.name)
            except OSError:
                pass
            self._listings[d] = names
        return self._listings[d]

    @staticmethod
    def _spellings(listing: dict[str, list[str]], name: str) -> list[str]:
        found = listing.get(name.lower(), [])
        return sorted(found, key=lambda n: n != name)   # the exact spelling first

    def find(self, folder: str, name: str) -> Path | None:
        dirs = [self.root / f for f in self._spellings(self._listing(self.root), folder)] + [self.root]
        for d in dirs:
            for hit in self._spellings(self._listing(d), name):
                if (d / hit).is_file():
                    return d / hit
        return None


def _list_dir(annotations_path) -> Path:
    p = Path(annotations_path)
    d = p if p.is_dir() else p.parent
    if not (d / "classInd.txt").is_file():
        raise AnnotationError(f"{d}: no classInd.txt (pass the ucfTrainTestlist folder)")
    return d


@register("ucf101")
def load_ucf101(videos_dir, annotations_path, *, split: int = 1) -> Dataset:
    """``--dataset ucf101``: ``annotations_path`` is the ``ucfTrainTestlist`` folder."""
    if annotations_path is None:
        raise AnnotationError("ucf101: the ucfTrainTestlist folder (classInd.txt, trainlist01.txt, ...) is required")
    if split not in (1, 2, 3):
        raise ConfigError(f"UCF-101 has splits 1, 2 and 3, not {split!r}")
    d = _list_dir(annotations_path)
    classes = read_class_ind(d / "classInd.txt")
    by_folder = {c.lower(): c for c in classes}
    media = _CaseInsensitiveDir(Path(videos_dir))
    records, seen = [], {}
    for kind, subset in (("train", "training"), ("test", "testing")):
        path = d / f"{kind}list{split:02d}.txt"
        if not path.is_file():
            raise AnnotationError(f"{path}: not found")
        for n, line in _lines(path):
            where = f"{path}: line {n}"
            parts = line.split()
            if len(parts) not in (1, 2) or (kind == "train" and len(parts) != 2):
                want = "'<Folder>/<file>.avi <label>'" if kind == "train" else "'<Folder>/<file>.avi'"
                raise AnnotationError(f"{where}: expected {want}, got {line!r}")
            rel = parts[0].replace("\\", "/").split("/")
            if len(rel) != 2:
                raise AnnotationError(f"{where}: {parts[0]!r} is not '<Folder>/<file>'")
            folder, name = (check_video_id(x, path, f"line {n}") for x in rel)
            stem, ext = os.path.splitext(name)
            if ext.lower() not in VIDEO_EXTENSIONS:
                raise AnnotationError(f"{where}: {name!r} is not a video file name")
            label = by_folder.get(folder.lower())
            if label is None:
                raise AnnotationError(f"{where}: unknown class folder {folder!r} (not in classInd.txt)")
            if len(parts) == 2:
                if not parts[1].isdigit() or not 1 <= int(parts[1]) <= len(classes):
                    raise AnnotationError(f"{where}: label {parts[1]!r} is not a class index 1..{len(classes)}")
                if classes[int(parts[1]) - 1] != label:
                    raise AnnotationError(f"{where}: label {parts[1]} ({classes[int(parts[1]) - 1]}) "
                                          f"disagrees with the folder {folder!r}")
            if stem.lower() in seen:
                raise AnnotationError(f"{where}: clip {stem!r} is listed twice (first at {seen[stem.lower()]})")
            seen[stem.lower()] = where
            records.append(VideoRecord(id=stem, path=media.find(folder, name), labels=(label,), subset=subset))
    return Dataset(name="ucf101", classes=classes, videos=tuple(records))
