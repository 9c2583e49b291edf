"""What a data set is to l2l: a list of videos, each with an id, a path, labels and a subset.

Adapters (one module each: ``activitynet``, ``kinetics_sounds``, ``ucf101``, ``mini_sports1m``,
``synthetic``, and for one's own videos ``folder`` and ``csv_list``) turn an official annotation format into ``VideoRecord``s and register themselves
under their ``--dataset`` name with ``@register``; ``ADAPTER_MODULES`` below is the one line per
adapter that says which module to import for a name (``get_adapter(name)`` imports it on first
use).  They read annotation files only; ``mini_sports1m`` alone opens containers, for their
duration.
"""
from __future__ import annotations

import dataclasses
import importlib
import unicodedata
from pathlib import Path
from typing import Callable, Iterable

from ..core.errors import L2LError, UnknownName
from ..core.registry import Registry

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi")
MAX_ID_BYTES = 200           # a video id's length (UTF-8): file names hold 255 bytes, and the
                             # id gets a prefix and an extension (``v_<id>.webm``)


class AnnotationError(L2LError, ValueError):
    """A malformed annotation file; the message names the file and the entry."""


@dataclasses.dataclass(frozen=True)
class VideoRecord:
    id: str                      # data-set video id, e.g. ActivityNet's "--0edUL8zmA"
    path: Path | None            # local media file; None when it was listed but not found
    labels: tuple[str, ...]      # class names; empty for unlabelled (test) videos
    subset: str                  # "training", "validation" or "testing"
    duration: float | None = None  # seconds, as the annotation states (None if unknown)
    start: float | None = None   # seconds: use the file from here (None: its beginning)
    end: float | None = None     # seconds: and up to here (None: its end)


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str
    classes: tuple[str, ...]     # the taxonomy, in a fixed order (class index = position)
    videos: tuple[VideoRecord, ...]
    skipped: int = 0             # annotation entries the adapter ignored on purpose (e.g. other classes)
    split: dict | None = None    # how the subsets were made, when the adapter chose (kept in the store)

    def subset(self, subset: str | None) -> "Dataset":
        if subset is None:
            return self
        return dataclasses.replace(self, videos=tuple(v for v in self.videos if v.subset == subset))


# name -> loader(videos_dir, annotations_path, **options) -> Dataset
ADAPTERS: Registry = Registry("data set")


def register(name: str):
    """Decorator: make ``fn(videos_dir, annotations_path, **options) -> Dataset`` the loader of
    ``--dataset name`` (``name`` must also be a key of ``ADAPTER_MODULES``)."""
    def deco(fn):
        return ADAPTERS.add(name, fn)
    return deco


# --dataset name -> module of this package that registers it (imported on first use).
# Adding a data set = its own module + one line here.
ADAPTER_MODULES = {
    "activitynet": "activitynet",
    "kinetics-sounds": "kinetics_sounds",
    "ucf101": "ucf101",
    "mini-sports1m": "mini_sports1m",
    "synthetic": "synthetic",
    "folder": "folder",
    "csv": "csv_list",
}

# adapters that read no annotation file (``--annotations`` is optional for them)
NO_ANNOTATIONS = ("folder",)


def get_adapter(name: str) -> Callable[..., Dataset]:
    """The loader registered as ``name``, importing its module first if needed."""
    if name not in ADAPTERS and name in ADAPTER_MODULES:
        importlib.import_module(f"{__package__}.{ADAPTER_MODULES[name]}")
    if name in ADAPTERS:
        return ADAPTERS[name]
    if name in ADAPTER_MODULES:
        raise KeyError(f"module {ADAPTER_MODULES[name]!r} does not @register({name!r})")
    raise UnknownName(f"unknown data set {name!r}; known: {', '.join(sorted(ADAPTER_MODULES))}")


def load_dataset(name: str, videos_dir, annotations_path, **options) -> Dataset:
    """``get_adapter(name)(videos_dir, annotations_path, **options)``."""
    return get_adapter(name)(videos_dir, annotations_path, **options)


def check_video_id(video_id, source, entry: str | None = None) -> str:
    """``video_id`` if it is a plain file-name stem, else an ``AnnotationError`` naming the entry.

    Rejects non-strings, empty ids, ``.``/``..``, and anything with ``/``, ``\\`` or NUL, so that
    no id can resolve to a path outside the videos directory; ids longer than ``MAX_ID_BYTES``
    (UTF-8), which no file name can hold once a prefix and an extension are added; and ids
    with control characters (a newline would break the one-line messages and logs).
    """
    where = f"{source}: {entry}" if entry else f"{source}"
    if not isinstance(video_id, str) or not video_id.strip():
        raise AnnotationError(f"{where}: video id {video_id!r} is not a non-empty string")
    if video_id in (".", "..") or any(c in video_id for c in ("/", "\\", "\0")) or video_id.startswith(".."):
        raise AnnotationError(f"{where}: video id {video_id!r} contains path characters")
    if any(unicodedata.category(c) == "Cc" for c in video_id):
        raise AnnotationError(f"{where}: video id {video_id!r} contains control characters")
    size = len(video_id.encode("utf-8", "surrogatepass"))
    if size > MAX_ID_BYTES:
        raise AnnotationError(f"{where}: video id {video_id[:40]!r}... is {size} bytes long; at most "
                              f"{MAX_ID_BYTES} fit in a file name (with its prefix and extension)")
    return video_id


def find_video(videos_dir: Path, video_id: str, prefixes: Iterable[str] = ("v_", "")) -> Path | None:
    """``v_<id>.<ext>`` or ``<id>.<ext>`` for the usual extensions, or None.

    Ids with path characters raise ``AnnotationError`` (see ``check_video_id``).
    """
    check_video_id(video_id, videos_dir)
    for prefix in prefixes:
        for ext in VIDEO_EXTENSIONS:
            p = Path(videos_dir) / f"{prefix}{video_id}{ext}"
            if p.is_file():
                return p
    return None
