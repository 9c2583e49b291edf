"""The packed layout shared by both backends: staged parcels that become immutable segments, and
one index.

- ``put_many`` writes a *parcel*: a shard of videos' new arrays, each field's rows of all the
  shard's videos concatenated (one array per field, ~4 MiB chunks, compressed where it pays),
  plus a small record (per video its meta and, per field, rows, key, checksum, provenance).  It is
  written under a temporary name and appears by one atomic rename.  Any number of processes may
  ``put_many`` at once (dask workers on many machines): they never touch the same file, and each
  array is written once, by the process that made it.
- ``commit`` (one process at a time, under a file lock) checks every staged array against its
  checksum, makes each parcel an immutable *segment* (Zarr: renames its folder into
  ``segments/``; HDF5, which takes no concurrent writers, copies it into a new copy of the file),
  then replaces the *index* (a JSON document: video -> meta and, per field, segment, rows, key,
  checksum) in one atomic, fsynced step, and only then deletes the parcel records it consumed.
  A crash at any point leaves either the old index (the parcels, or the segments they became
  with their records still inside, are folded by the next commit) or the new one; a video is
  never half visible and never doubled.
- Reading uses the index only: ``read_many`` reads each segment's rows in one go.

Backends (``zarr_store.py``, ``hdf5_store.py``) supply the I/O primitives below.
"""
from __future__ import annotations

import abc
import contextlib
import fcntl
import json
import os
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .base import (SCHEMA_VERSION, ArrayRecord, Batch, Failure, Problem, Put, Store, StoreError,
                   VideoMeta)
from .index import apply_commit, checksum, pack, parcel_digest, plan_commit, shallow_copy

CHUNK_BYTES = 4 << 20        # target size of one chunk of a segment array
TMP_MAX_AGE = 3600.0         # seconds after which a temporary left by a killed writer is removed


class PackedStore(Store):
    """Everything but the backend's I/O; see the module docstring."""

    def __init__(self, path: Path):
        super().__init__(path)
        self._index: dict | None = None
        self._stamp: tuple | None = None
        self._reload = threading.Lock()      # one thread reloads a replaced index at a time
        self.read_threads: int | None = None  # threads one read may use (None: the backend's)
        self._digest: str | None = None        # the held index's (``_index_digest``), if known
        self._held: str | None = None          # the run for which the index is held (``hold``)

    # ---- backend primitives --------------------------------------------------------------
    @abc.abstractmethod
    def _load_index(self) -> dict: ...

    @abc.abstractmethod
    def _write_parcel(self, name: str, attrs: dict,
                      arrays: dict[str, tuple[tuple, str, list[np.ndarray]]]) -> None:
        """Write a parcel (arr name -> (shape, dtype, row blocks in order)) so that it appears
        under ``name`` atomically (or not at all)."""

    @abc.abstractmethod
    def _list_parcels(self) -> list[str]:
        """Names of the complete parcels not yet folded into the index."""

    @abc.abstractmethod
    def _parcel_attrs(self, name: str) -> dict: ...

    @abc.abstractmethod
    def _parcel_rows(self, name: str, arr: str, start: int, stop: int) -> np.ndarray: ...

    @abc.abstractmethod
    def _delete_parcel(self, name: str) -> None:
        """Remove what is left of a parcel once the index no longer needs it (for a parcel that
        became a segment: only its record)."""

    @abc.abstractmethod
    def _temporaries(self) -> list[Path]:
        """Half-written files or folders (parcels being staged, HDF5 copies being written)."""

    def _segment_of(self, parcel: str) -> str | None:
        """The segment a parcel already is (one whose commit was cut short), else None."""
        return None

    @abc.abstractmethod
    def _install(self, segs: dict[str, str], index: dict) -> None:
        """Make parcel ``name`` segment ``segs[name]`` for each, then save ``index``: the index
        is replaced only once every segment is in place."""

    @abc.abstractmethod
    def _save_index(self, index: dict) -> None: ...

    @abc.abstractmethod
    def _read_rows(self, seg: str, arr: str, start: int, stop: int) -> np.ndarray: ...

    def _read_runs(self, runs: list[tuple[str, str, int, int, np.ndarray]]) -> None:
        """Each ``(seg, arr, start, stop, out)``: those rows into ``out`` (a backend may read
        them there without a copy, and many at once)."""
        for seg, arr, start, stop, out in runs:
            out[...] = self._read_rows(seg, arr, start, stop)

    @abc.abstractmethod
    def _segments(self) -> list[str]: ...

    @abc.abstractmethod
    def _delete_segment(self, seg: str) -> None: ...

    @abc.abstractmethod
    def _lock_path(self) -> Path: ...

    # ---- the index -----------------------------------------------------------------------
    @abc.abstractmethod
    def _index_stamp(self) -> tuple:
        """Identity of the index as saved now (inode, mtime, size): it changes with every save."""

    @property
    def index(self) -> dict:
        """The index, parsed once and again only when it was replaced since (a 20,000-video
        index is tens of MB of JSON: a long-lived store object must not parse it per video)."""
        with self._reload:                   # (the extraction's threads share one store object)
            if self._held is not None and self._index is not None:
                return self._index
            stamp = self._index_stamp()
            if self._index is None or stamp != self._stamp:
                self._forget_handles()
                self._index, self._stamp = self._load_index(), stamp
                if self._index.get("schema_version") != SCHEMA_VERSION:
                    raise StoreError(f"{self.path}: schema version {self._index.get('schema_version')}"
                                     f" is not {SCHEMA_VERSION}, which this l2l reads")
            return self._index

    def _forget_handles(self) -> None:
        """Drop open segment handles (the store on disk may have been replaced); optional."""
    def _saved(self, index: dict) -> None:
        """Remember ``index`` as the one just saved (no re-parse of our own write)."""
        self._index, self._stamp = index, self._index_stamp()

    def refresh(self) -> None:
        self._index = None

    def hold(self, run: str | None) -> None:
        """During run ``run`` (None: none), keep the index as first read: a dask worker's videos
        are never touched by other shards' commits, so it need not parse each new index (0.6 s
        at 20,000 videos).  A new run reads it again."""
        with self._reload:
            if run != self._held:
                self._held, self._index = run, None

    def follow(self, other: "PackedStore") -> None:
        """Hold the index ``other`` (another object of this store, here) just committed, as if
        loaded; here: parse it when next asked (readers holding file handles need that)."""
        self.refresh()

    def _index_digest(self) -> str | None:
        """A digest of the index as saved now (compared with ``_digest``, taken when this object
        loaded or saved it: cheaper than parsing); None: the backend cannot tell."""
        return None

    def _current(self) -> None:
        """Make sure the index held is the one saved now (under the lock, before a change)."""
        with self._reload:
            if self._index is not None and self._stamp == self._index_stamp():
                digest = self._index_digest()
                if digest is not None and digest == self._digest:
                    return
            self._index = None

    @contextlib.contextmanager
    def lock(self):
        with open(self._lock_path(), "rb" if self._lock_path().exists() else "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                self._current()
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # ---- reading -------------------------------------------------------------------------
    def ids(self, subset: str | None = None) -> list[str]:
        vids = self.index["videos"]
        return sorted(v for v, e in vids.items() if subset is None or e["meta"]["subset"] == subset)

    def _entry(self, vid: str) -> dict:
        try:
            return self.index["videos"][vid]
        except KeyError:
            raise StoreError(f"{self.path}: no video {vid!r} in the store") from None

    def meta(self, vid: str) -> VideoMeta:
        return VideoMeta.from_dict(self._entry(vid)["meta"])

    def records(self, vid: str) -> dict[str, ArrayRecord]:
        out = {}
        for name, f in self._entry(vid)["fields"].items():
            shared = self.index["records"][f["rec"]]
            out[name] = ArrayRecord(stage=shared["stage"], config=shared["config"], key=f["key"],
                                    upstream=f["upstream"], versions=shared["versions"],
                                    shape=tuple(f["shape"]), dtype=f["dtype"], checksum=f["crc"])
        return out

    def _field(self, vid: str, name: str) -> dict:
        fields = self._entry(vid)["fields"]
        if name not in fields:
            raise StoreError(f"{self.path}: video {vid!r} has no array {name!r} "
                             f"(it has: {', '.join(sorted(fields)) or 'none'})")
        return fields[name]

    def read(self, vid: str, names: Sequence[str]) -> dict[str, np.ndarray]:
        out = {}
        for name in names:
            f = self._field(vid, name)
            out[name] = self._read_rows(f["seg"], f["arr"], f["start"], f["stop"])
        return out

    def read_many(self, names: Sequence[str], ids=None) -> Batch:
        """See ``Store.read_many``.  Without ``ids``, videos come in the order they lie on disk
        (``Batch.ids`` says which is which), so that every segment is one contiguous read that
        lands in the output without a per-video copy."""
        if ids is None:
            ids = self.ids()
            if names:
                first = {v: self._field(v, names[0]) for v in ids}
                ids.sort(key=lambda v: (first[v]["seg"], first[v]["arr"], first[v]["start"]))
        ids = list(ids)
        entries = [self._entry(v) for v in ids]
        lengths = [e["meta"]["num_moments"] for e in entries]
        offsets = np.zeros(len(ids) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        arrays, reads = {}, []
        for name in names:
            fields = [self._field(v, name) for v in ids]
            configs = {json.dumps(self.index["records"][r]["config"], sort_keys=True)
                       for r in {f["rec"] for f in fields}}
            if len(configs) > 1:
                raise StoreError(f"{self.path}: array {name!r} was made with {len(configs)} different "
                                 "configs across videos; re-extract or select videos of one config")
            if not fields:
                arrays[name] = np.zeros((0,))
                continue
            runs = []              # [seg, arr, start, stop, output offset]: one read each
            for i, f in enumerate(fields):
                if f["stop"] - f["start"] != lengths[i]:
                    raise StoreError(f"{self.path}: {ids[i]!r}/{name} has {f['stop'] - f['start']}"
                                     f" rows, not {lengths[i]} moments")
                r = runs[-1] if runs else None
                if r and (r[0], r[1], r[3]) == (f["seg"], f["arr"], f["start"]):
                    r[3] = f["stop"]
                else:
                    runs.append([f["seg"], f["arr"], f["start"], f["stop"], int(offsets[i])])
            out = arrays[name] = np.empty((int(offsets[-1]), *fields[0]["shape"][1:]),
                                          fields[0]["dtype"])
            reads += [(seg, arr, lo, hi, out[o:o + hi - lo]) for seg, arr, lo, hi, o in runs]
        self._read_runs(reads)                    # every array's runs, at once
        return Batch(ids, offsets, arrays, [VideoMeta.from_dict(e["meta"]) for e in entries])

    def info(self) -> dict:
        idx = self.index
        return {"schema_version": idx["schema_version"], "backend": idx["backend"],
                "generation": idx["generation"], **idx["info"]}

    def failures(self) -> list[Failure]:
        return [Failure.from_dict(f) for f in sorted(self.index["failures"].values(), key=lambda f: f["id"])]

    # ---- writing -------------------------------------------------------------------------
    def put_many(self, items: Sequence[Put]) -> None:
        """See ``Store.put_many``: one parcel; per (field, dtype, row shape) one array holding
        the rows of every video of the shard, in order."""
        if not items:
            return
        videos, plan = pack(items)
        attrs = {"kind": "put", "seq": time.time_ns(), "digest": parcel_digest(videos),
                 "videos": videos}
        self._write_parcel(self._parcel_name(), attrs,
                           {arr: ((p["rows"], *p["sig"][2]), p["sig"][1], p["blocks"])
                            for arr, p in plan.items()})

    def staged(self) -> list[tuple[str, str]]:
        """(parcel, video id) of every video staged and not yet committed."""
        out = []
        for name in self._list_parcels():
            with contextlib.suppress(Exception):
                a = self._parcel_attrs(name)
                out += [(name, v["meta"]["id"]) for v in a.get("videos", [])]
        return out

    def record_failure(self, failure: Failure) -> None:
        f = {**failure.__dict__, "time": failure.time or time.strftime("%Y-%m-%dT%H:%M:%S"),
             "labels": list(failure.labels)}
        f["reason"] = " ".join(str(f["reason"]).split())          # always one line
        self._write_parcel(self._parcel_name(), {"kind": "failure", "seq": time.time_ns(),
                                                 "failure": f}, {})

    def update_info(self, values: dict[str, Any]) -> None:
        json.dumps(values)                                       # fail early if not JSON
        if not values:
            return
        with self.lock():
            idx = self.index
            idx["info"].update(values)
            self._save_index(idx)
            self._saved(idx)

    def _parcel_name(self) -> str:
        return f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def commit(self) -> dict:
        with self.lock():
            return self._commit_locked()

    def _check(self, pname: str, v: dict) -> bool:
        """Whether every array of video ``v`` of parcel ``pname`` reads back with its checksum."""
        for rec in v["records"].values():
            try:
                a = self._parcel_rows(pname, rec["arr"], rec["start"], rec["stop"])
            except Exception:          # unreadable (a chunk that no longer decompresses)
                return False
            if checksum(a) != rec["checksum"]:
                return False
        return True

    def _commit_locked(self) -> dict:
        idx = self.index
        consumed_before = set(idx.get("consumed", []))
        parcels, stale = [], []
        for name in sorted(self._list_parcels()):
            if name in consumed_before:
                stale.append(name)                # committed, but a crash kept it: just delete
                continue
            try:
                parcels.append((name, self._parcel_attrs(name)))
            except Exception:                     # unreadable record: a torn write; drop it
                stale.append(name)
        if not parcels and not stale:             # nothing to fold: the index stays as it is
            self._clean_temporaries()
            return {"videos": 0, "failures": 0, "rejected": 0, "superseded": 0, "segments": [],
                    "segments_removed": 0}
        parcels.sort(key=lambda p: (p[1].get("seq", 0), p[0]))
        gen = idx["generation"] + 1
        skip, bad, segs = plan_commit(parcels, gen, self._check, self._segment_of,
                                      set(self._segments()))
        new = shallow_copy(idx)
        new["generation"] = gen
        new["consumed"] = [n for n, _ in parcels]
        apply_commit(new, parcels, segs, skip, bad)
        self._install(segs, new)
        self._saved(new)
        for name in stale + [n for n, _ in parcels]:
            self._delete_parcel(name)
        removed = self._gc()
        self._clean_temporaries()
        n_fail = sum(1 for _, a in parcels if a.get("kind") == "failure")
        live = sum(len(a.get("videos", [])) for _, a in parcels) - len(skip) - len(bad)
        return {"videos": live, "failures": n_fail, "rejected": len(bad),
                "superseded": len(skip), "segments": sorted(segs.values()),
                "segments_removed": removed}

    def _clean_temporaries(self, max_age: float = TMP_MAX_AGE) -> int:
        """Delete temporaries (never read) a killed writer left over ``max_age`` seconds ago."""
        n = 0
        for p in self._temporaries():
            try:
                if time.time() - p.stat().st_mtime > max_age:
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
                    n += 1
            except FileNotFoundError:
                pass
        return n

    def _gc(self) -> int:
        """Delete the segments no video uses; returns how many."""
        used = {f["seg"] for e in self.index["videos"].values() for f in e["fields"].values()}
        unused = [seg for seg in self._segments() if seg not in used]
        for seg in unused:
            self._delete_segment(seg)
        self._tidy_records(used)
        return len(unused)

    def _tidy_records(self, used: set[str]) -> None:
        """Remove parcel records left inside segments the index uses (a cut-short commit)."""

    def remove(self, vids: Sequence[str]) -> None:
        """Drop videos from the index (their rows become garbage); used by repair."""
        with self.lock():
            idx = self.index
            for v in vids:
                idx["videos"].pop(v, None)
            self._save_index(idx)
            self._saved(idx)
            self._gc()

    # ---- checking ------------------------------------------------------------------------
    def verify(self, expected_fields: Sequence[str] | None = None, *,
               progress: bool = False) -> list[Problem]:
        from .verify import verify_packed
        return verify_packed(self, expected_fields, progress=progress)
