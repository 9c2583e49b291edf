"""The feature-store protocol, shared by every backend.

A store holds, per video, a handful of per-moment arrays (``frames`` (N,112,112,3) uint8,
``logmel`` (N,101,40) float16, ``image``/``audio``/``imageaudio`` (N,512) float16, ...), the
video's metadata (``VideoMeta``) and, for every array, its provenance (``ArrayRecord``).

Writing is two-phase: ``put_many`` stages a shard of videos' arrays atomically (any process may
call it, concurrently with others; ``put`` is one video); ``commit`` (one process at a time, under
a lock) makes what is staged visible to readers.  A video is either fully visible or not at all.

Backends register themselves in ``BACKENDS`` (``@register_backend`` on the class); a store's
backend is read from what it records on disk, never from its path.
"""
from __future__ import annotations

import abc
import dataclasses
import functools
import platform
from pathlib import Path
from typing import Any, ClassVar, Iterable, NamedTuple, Sequence

import numpy as np
from ..core.errors import L2LError
from ..core.registry import Registry

SCHEMA_VERSION = 1


class StoreError(L2LError, RuntimeError):
    """A store that cannot be opened, read or written as asked; the message says why."""


class StoreWriteError(StoreError):
    """The store cannot be written at all (a full disk, a read-only folder): a run stops with
    this one line instead of recording every video as a failure.  Nothing partial is left."""


BACKENDS: Registry = Registry("store backend")


def register_backend(cls: type["Store"]) -> type["Store"]:
    """Class decorator: make a backend available by its ``backend`` name."""
    return BACKENDS.add(cls.backend, cls)


@dataclasses.dataclass(frozen=True)
class Problem:
    """One problem ``verify`` found.  ``video`` is "" for a store-level problem; ``array`` is ""
    for a problem of the whole video.  ``kind``: "incomplete", "missing-segment", "rows",
    "unreadable", "checksum", "mixed-configs" or "staged"."""
    video: str
    array: str
    kind: str
    detail: str

    def __str__(self) -> str:
        where = "(store)" if not self.video else self.video + (f"/{self.array}" if self.array else "")
        return f"{where}: {self.detail}"


class Put(NamedTuple):
    """One video to stage (see ``Store.put``)."""
    meta: "VideoMeta"
    arrays: dict
    records: dict
    replace: bool = False


@dataclasses.dataclass(frozen=True)
class VideoMeta:
    id: str
    labels: tuple[str, ...]
    subset: str
    duration: float          # seconds, from the container (or the last moment) when known
    fps: float               # average frame rate of the video stream
    num_moments: int         # N: one moment every 16 decoded frames
    has_audio: bool
    source: str = ""         # the media file it was extracted from

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["labels"] = list(self.labels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "VideoMeta":
        d = dict(d)
        d["labels"] = tuple(d.get("labels", ()))
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


@dataclasses.dataclass(frozen=True)
class ArrayRecord:
    """Provenance of one array of one video."""
    stage: str               # the stage that made it
    config: dict             # that stage's config (``Stage.config_dict()``)
    key: str                 # hash of stage + config + upstream keys: the cache key
    upstream: dict           # input name -> its key (the source file's fingerprint for decode)
    versions: dict           # library versions at extraction time
    shape: tuple[int, ...] = ()
    dtype: str = ""
    checksum: str = ""       # crc32 of the array's bytes, hex; filled in by the store

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["shape"] = list(self.shape)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ArrayRecord":
        d = dict(d)
        d["shape"] = tuple(d.get("shape", ()))
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


@dataclasses.dataclass(frozen=True)
class Failure:
    id: str
    stage: str
    reason: str              # one line
    source: str = ""
    time: str = ""
    key: str = ""            # decode failures: the decode key (source fingerprint + config), so
                             # that a rerun skips the same bytes failing the same way
    subset: str = ""         # the video's subset and labels as listed, so that evaluation
    labels: tuple[str, ...] = ()  # counts a failed video as a miss ("" / (): not known)

    @classmethod
    def from_dict(cls, d: dict) -> "Failure":
        d = {f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d}
        d["labels"] = tuple(d.get("labels", ()))
        return cls(**d)


@dataclasses.dataclass
class Batch:
    """Many videos' arrays, concatenated: video i is ``arrays[name][offsets[i]:offsets[i+1]]``."""
    ids: list[str]
    offsets: np.ndarray                  # (V+1,) int64
    arrays: dict[str, np.ndarray]
    metas: list[VideoMeta]

    def video(self, i: int, name: str) -> np.ndarray:
        return self.arrays[name][self.offsets[i]:self.offsets[i + 1]]


@functools.lru_cache(maxsize=1)
def _versions() -> tuple:
    import importlib.metadata as md
    out = {"python": platform.python_version()}
    for pkg in ("l2l", "torch", "torchvision", "torchaudio", "av", "numpy", "zarr", "h5py"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return tuple(out.items())


def library_versions() -> dict:
    """Library versions of this process (looked up once: importlib.metadata is slow)."""
    return dict(_versions())


class Store(abc.ABC):
    """One feature store on disk.  Open with ``l2l.store.open_store``; create with ``create_store``."""

    backend: ClassVar[str]

    def __init__(self, path: Path):
        self.path = Path(path)

    # ---- reading -------------------------------------------------------------------------
    @abc.abstractmethod
    def ids(self, subset: str | None = None) -> list[str]:
        """Ids of the complete (committed) videos, sorted; optionally one subset only."""

    @abc.abstractmethod
    def meta(self, vid: str) -> VideoMeta: ...

    @abc.abstractmethod
    def records(self, vid: str) -> dict[str, ArrayRecord]:
        """name -> provenance, for every array the video has."""

    @abc.abstractmethod
    def read(self, vid: str, names: Sequence[str]) -> dict[str, np.ndarray]: ...

    def read_many(self, names: Sequence[str], ids: Iterable[str] | None = None) -> Batch:
        """All (or the given) videos' arrays, concatenated.  Raises ``StoreError`` if a video
        lacks one of ``names`` or if the videos' arrays of one name were made with different
        configs (never silently mixed)."""
        ids = list(self.ids() if ids is None else ids)
        parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
        offsets = [0]
        for vid in ids:
            got = self.read(vid, names)
            for n in names:
                parts[n].append(got[n])
            offsets.append(offsets[-1] + len(got[names[0]]) if names else offsets[-1])
        arrays = {n: (np.concatenate(p) if p else np.zeros((0,))) for n, p in parts.items()}
        return Batch(ids, np.asarray(offsets, np.int64), arrays, [self.meta(v) for v in ids])

    def read_windows(self, names: Sequence[str], ids: Sequence[str], starts, lengths,
                     width: int | None = None) -> dict[str, np.ndarray]:
        """Moments ``[starts[b], starts[b] + lengths[b])`` of video ``ids[b]``, for each array
        of ``names``: ``(len(ids), width, ...)`` arrays, each window at the start of its row
        and zeros after it (``width``: default the longest window).  A batch of crops for
        training, read without the rest of each video."""
        ids = list(ids)
        starts, lengths, width = check_windows(self.path, ids, list(self.moments(ids).get(v, 0) for v in ids),
                                               starts, lengths, width)
        arrays: dict[str, np.ndarray] = {}
        for b, (vid, a, n) in enumerate(zip(ids, starts, lengths)):
            got = self.read(vid, names)
            for name in names:
                out = arrays.get(name)
                if out is None:
                    out = arrays[name] = np.zeros((len(ids), width, *got[name].shape[1:]), got[name].dtype)
                out[b, :n] = got[name][a:a + n]
        return arrays

    @abc.abstractmethod
    def info(self) -> dict:
        """Store-level attributes: schema version, backend, classes, costs, ..."""

    @abc.abstractmethod
    def failures(self) -> list[Failure]: ...

    # ---- questions about some videos (a backend answers them without reading the rest) ----
    def has(self, vid: str) -> bool:
        """Whether video ``vid`` is committed."""
        return vid in set(self.ids())

    def stored(self, ids: Iterable[str]) -> dict[str, tuple[VideoMeta, dict[str, ArrayRecord]]]:
        """For those of ``ids`` committed: (meta, name -> provenance of every array it has)."""
        return {v: (self.meta(v), self.records(v)) for v in ids if self.has(v)}

    def moments(self, ids: Iterable[str]) -> dict[str, int]:
        """Moments of those of ``ids`` committed."""
        return {v: m.num_moments for v, (m, _) in self.stored(ids).items()}

    def failure(self, vid: str) -> Failure | None:
        """The failure recorded for ``vid`` (None: none)."""
        return next((f for f in self.failures() if f.id == vid), None)

    def failed(self, ids: Iterable[str]) -> set[str]:
        """Those of ``ids`` with a recorded failure."""
        ids = set(ids)
        return {f.id for f in self.failures() if f.id in ids}

    def summary(self) -> dict:
        """Counts for ``l2l store info``: ``{"subsets": {subset: {"videos", "moments",
        "no_audio"}}, "arrays": {name: {"videos", "parts": [{"record": {stage, config,
        versions}, "dtype", "shape" (without the moment axis), "videos"}]}}, "failures": n}``."""
        subsets: dict[str, dict] = {}
        arrays: dict[str, dict] = {}
        for v in self.ids():
            m, recs = self.meta(v), self.records(v)
            s = subsets.setdefault(m.subset, {"videos": 0, "moments": 0, "no_audio": 0})
            s["videos"] += 1
            s["moments"] += m.num_moments
            s["no_audio"] += not m.has_audio
            for name, r in recs.items():
                a = arrays.setdefault(name, {"videos": 0, "parts": []})
                a["videos"] += 1
                part = {"record": {"stage": r.stage, "config": r.config, "versions": r.versions},
                        "dtype": r.dtype, "shape": list(r.shape[1:]), "videos": 1}
                same = next((p for p in a["parts"] if {**p, "videos": 1} == part), None)
                if same is None:
                    a["parts"].append(part)
                else:
                    same["videos"] += 1
        return {"subsets": subsets, "arrays": arrays, "failures": len(self.failures())}

    def repair_index(self) -> str | None:
        """Restore an index that cannot be read, from what the backend keeps of its earlier
        generations; returns what was done, or None when the index is sound (or the backend
        keeps nothing to restore it from)."""
        return None

    def migrate(self) -> bool:
        """Bring the store to this version's layout; True when something was changed."""
        return False

    def close(self) -> None:
        """Release what this object holds open (files, database connections)."""

    def tidy(self) -> None:
        """Remove what writing left that nothing needs any more (an HDF5 store's empty staging
        folder and lock file); nothing for a backend that leaves nothing."""

    # ---- writing -------------------------------------------------------------------------
    def put(self, meta: VideoMeta, arrays: dict[str, np.ndarray],
            records: dict[str, ArrayRecord], *, replace: bool = False) -> None:
        """Stage one video's arrays atomically.  ``replace``: the video's previous arrays are
        all dropped at commit (a new decode); otherwise the given arrays are added to or replace
        those of the same name."""
        self.put_many([Put(meta, arrays, records, replace)])

    @abc.abstractmethod
    def put_many(self, items: Sequence[Put]) -> None:
        """Stage many videos (a shard) at once, atomically: one write of their arrays."""

    @abc.abstractmethod
    def commit(self) -> dict:
        """Fold staged puts into the readable layout.  Returns counts."""

    @abc.abstractmethod
    def record_failure(self, failure: Failure) -> None: ...

    def set_info(self, key: str, value: Any) -> None:
        """Set one store-level attribute (JSON-serialisable)."""
        self.update_info({key: value})

    @abc.abstractmethod
    def update_info(self, values: dict[str, Any]) -> None:
        """Set several store-level attributes (JSON-serialisable) in one write of the index."""

    @abc.abstractmethod
    def verify(self, expected_fields: Sequence[str] | None = None, *,
               progress: bool = False) -> list[Problem]:
        """Problems found (empty when the store is sound): incomplete or inconsistent videos,
        checksum mismatches, naming the video and array."""


def check_windows(path, ids: Sequence[str], moments: Sequence[int], starts, lengths,
                  width: int | None) -> tuple[list[int], list[int], int]:
    """``read_windows``' arguments as lists, checked against each video's moments."""
    starts = [int(a) for a in starts]
    lengths = [int(n) for n in lengths]
    if not len(starts) == len(lengths) == len(ids):
        raise ValueError(f"{len(ids)} videos, {len(starts)} starts, {len(lengths)} lengths")
    for vid, a, n, m in zip(ids, starts, lengths, moments):
        if a < 0 or n < 0 or a + n > m:
            raise StoreError(f"{path}: window [{a}, {a + n}) outside video {vid!r}'s {m} moments")
    longest = max(lengths, default=0)
    width = longest if width is None else int(width)
    if width < longest:
        raise ValueError(f"width {width} is shorter than the longest window ({longest})")
    return starts, lengths, width
