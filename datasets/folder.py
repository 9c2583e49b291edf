"""One's own videos: a folder with one sub-folder per class (``--dataset folder --videos DIR``),
as torchvision's ``ImageFolder`` lays out pictures.  No annotation file.

Layout: ``DIR/<class>/<file>`` (files in deeper folders belong to their top-level class folder);
the class is the folder's name; classes are sorted by name (class index = position).  Any file
whose extension is one FFmpeg commonly reads (``MEDIA_EXTENSIONS``; ``extensions=mp4,mov`` to
choose) is a video; hidden files and folders are skipped.  Names may hold spaces and non-ASCII
characters.  The record id is the path below DIR without its extension, folders joined by
``__`` (``Dog barking/take 1.mp4`` -> ``Dog barking__take 1``).

Subsets ("training", "validation"):
- ``train_list=FILE val_list=FILE`` (``--dataset-option``): text files of paths relative to DIR,
  one per line (``#`` comments and blank lines skipped); a video in neither list is left out and
  counted in ``Dataset.skipped``; a listed path that is not a video under DIR, or is in both
  lists, is refused in one line naming the list and line;
- otherwise a seeded split: within each class, ``round(val_fraction * n)`` of its videos (sorted,
  then shuffled by ``seed``) go to "validation", the rest to "training".  The split is recorded
  (``Dataset.split``: kind, seed, val_fraction), and the store keeps it with the class list.

Media is never opened here.  Not here: CSV lists of files (``datasets/csv_list.py``).
"""
from __future__ import annotations

import os
import random
from pathlib import Path

from .base import AnnotationError, Dataset, VideoRecord, register

MEDIA_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv",
                    ".wmv", ".3gp", ".ts", ".mts", ".m2ts", ".ogv", ".vob", ".mxf")


def path_id(rel: str) -> str:
    """The record id of a video at ``rel`` (a path relative to the videos folder, ``/`` or
    ``\\`` separated): without its extension, folders joined by ``__``."""
    parts = [p for p in rel.replace("\\", "/").split("/") if p]
    parts[-1] = os.path.splitext(parts[-1])[0]
    return "__".join(parts)


def _extensions(extensions) -> tuple[str, ...]:
    if extensions is None:
        return MEDIA_EXTENSIONS
    if isinstance(extensions, str):
        extensions = extensions.split(",")
    return tuple("." + e.strip().lower().lstrip(".") for e in extensions if e.strip())


def _scan(root: Path, exts: tuple[str, ...]) -> dict[str, list[str]]:
    """class -> sorted relative paths ("<class>/<...>/<file>") of its videos."""
    out: dict[str, list[str]] = {}
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        files = []
        for d, dirs, names in os.walk(entry.path):
            dirs[:] = sorted(x for x in dirs if not x.startswith("."))
            for name in sorted(names):
                if not name.startswith(".") and os.path.splitext(name)[1].lower() in exts:
                    files.append(Path(os.path.relpath(os.path.join(d, name), root)).as_posix())
        out[entry.name] = files
    return out


def _read_list(path, root: Path, known: dict[str, str]) -> list[str]:
    """The relative paths listed in ``path`` (each must be a known video under ``root``)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise AnnotationError(f"{p}: cannot read the list: {' '.join(str(e).split())}") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        rel = s.replace("\\", "/")
        if Path(rel).is_absolute() and Path(rel).is_relative_to(root):
            rel = Path(rel).relative_to(root).as_posix()
        while rel.startswith("./"):
            rel = rel[2:]
        if rel not in known:
            raise AnnotationError(f"{p}: line {n}: {s!r} is not a video in a class folder of {root}")
        out.append(rel)
    return out


@register("folder")
def load_folder(videos_dir, annotations_path=None, *, train_list=None, val_list=None,
                val_fraction: float = 0.2, seed: int = 0, extensions=None) -> Dataset:
    """``--dataset folder --videos DIR``: one sub-folder per class (module docstring)."""
    root = Path(videos_dir)
    if not root.is_dir():
        raise AnnotationError(f"{root}: videos folder not found")
    if not 0.0 <= float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), not {val_fraction!r}")
    by_class = _scan(root, _extensions(extensions))
    classes = tuple(c for c, files in by_class.items() if files)
    if not classes:
        raise AnnotationError(f"{root}: no class sub-folder holds a video "
                              f"({', '.join(_extensions(extensions))})")
    label_of = {rel: c for c, files in by_class.items() for rel in files}
    ids: dict[str, str] = {}
    for rel in label_of:
        other = ids.setdefault(path_id(rel), rel)
        if other != rel:
            raise AnnotationError(f"{root}: {other!r} and {rel!r} have the same id "
                                  f"{path_id(rel)!r} (rename one)")
    subset: dict[str, str] = {}
    if train_list is not None or val_list is not None:
        for lst, name in ((train_list, "training"), (val_list, "validation")):
            if lst is None:
                continue
            for rel in _read_list(lst, root, label_of):
                if subset.get(rel, name) != name:
                    raise AnnotationError(f"{lst}: {rel!r} is also in the {subset[rel]} list")
                subset[rel] = name
        split = {"kind": "lists", "train_list": str(train_list), "val_list": str(val_list)}
    else:
        rng = random.Random(int(seed))
        for c in classes:
            files = list(by_class[c])
            rng.shuffle(files)
            n_val = int(round(float(val_fraction) * len(files)))
            for i, rel in enumerate(files):
                subset[rel] = "validation" if i < n_val else "training"
        split = {"kind": "seeded", "seed": int(seed), "val_fraction": float(val_fraction)}
    records = tuple(VideoRecord(id=path_id(rel), path=root / rel, labels=(label_of[rel],),
                                subset=subset[rel]) for rel in label_of if rel in subset)
    return Dataset(name="folder", classes=classes, videos=records,
                   skipped=len(label_of) - len(records), split=split)
