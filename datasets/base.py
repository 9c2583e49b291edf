"""What a data set is to l2l: a list of videos, each with an id, a path, labels and a subset.

Adapters (one module each: ``activitynet``, ``kinetics_sounds``, ``ucf101``, ``mini_sports1m``,
``synthetic``) turn an official annotation format into ``VideoRecord``s and register themselves
under their ``--dataset`` name.  They never decode media.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Iterable

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi")


class AnnotationError(ValueError):
    """A malformed annotation file; the message names the file and the entry."""


@dataclasses.dataclass(frozen=True)
class VideoRecord:
    id: str                      # data-set video id, e.g. ActivityNet's "--0edUL8zmA"
    path: Path | None            # local media file; None when it was listed but not found
    labels: tuple[str, ...]      # class names; empty for unlabelled (test) videos
    subset: str                  # "training", "validation" or "testing"
    duration: float | None = None  # seconds, as the annotation states (None if unknown)


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str
    classes: tuple[str, ...]     # the taxonomy, in a fixed order (class index = position)
    videos: tuple[VideoRecord, ...]

    def subset(self, subset: str | None) -> "Dataset":
        if subset is None:
            return self
        return dataclasses.replace(self, videos=tuple(v for v in self.videos if v.subset == subset))


# name -> loader(videos_dir, annotations_path, **options) -> Dataset
ADAPTERS: dict[str, Callable[..., Dataset]] = {}


def register(name: str):
    def deco(fn):
        ADAPTERS[name] = fn
        return fn
    return deco


def find_video(videos_dir: Path, video_id: str, prefixes: Iterable[str] = ("v_", "")) -> Path | None:
    """``v_<id>.<ext>`` or ``<id>.<ext>`` for the usual extensions, or None."""
    for prefix in prefixes:
        for ext in VIDEO_EXTENSIONS:
            p = Path(videos_dir) / f"{prefix}{video_id}{ext}"
            if p.is_file():
                return p
    return None
