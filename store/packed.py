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
  then changes the *index* (video -> meta and, per field, segment, rows, key, checksum) in one
  atomic, fsynced step (Zarr: one SQLite transaction over the rows of the videos folded,
  ``sqlindex.py``; HDF5: a new copy of the file holding the index as JSON), and only then
  deletes the parcel records it consumed.
  A crash at any point leaves either the old index (the parcels, or the segments they became
  with their records still inside, are folded by the next commit) or the new one; a video is
  never half visible and never doubled.
- Reading asks the index about the videos wanted only (``_ix()``: ``sqlindex.SqlIndex``, or
  ``index.DictIndex`` for an index held as one JSON document); ``read_many`` reads each
  segment's rows in one go.

Backends (``zarr_store.py``, ``hdf5_store.py``) supply the I/O primitives below.
"""
from __future__ import annotations

import abc
import contextlib
import fcntl
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .base import (SCHEMA_VERSION, ArrayRecord, Batch, Failure, Problem, Put, Store, StoreError,
                   VideoMeta, check_windows)
from .index import checksum, pack, parcel_digest, plan_commit

CHUNK_BYTES = 4 << 20        # target size of one chunk of a segment array
TMP_MAX_AGE = 3600.0         # seconds after which a temporary left by a killed writer is removed


class PackedStore(Store):
    """Everything but the backend's I/O; see the module docstring."""

    def __init__(self, path: Path):
        super().__init__(path)
        self.read_threads: int | None = None  # threads one read may use (None: the backend's)

    # ---- backend primitives --------------------------------------------------------------
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
    def _read_rows(self, seg: str, arr: str, start: int, stop: int) -> np.ndarray: ...

    def _read_runs(self, runs: list[tuple[str, str, int, int, np.ndarray]]) -> None:
        """Each ``(seg, arr, start, stop, out)``: those rows into ``out`` (a backend may read
        them there without a copy, and many at once)."""
        for seg, arr, start, stop, out in runs:
            out[...] = self._read_rows(seg, arr, start, stop)

    @abc.abstractmethod
    def _segments(self) -> list[str]: ...

    def _segment_exists(self, seg: str) -> bool:
        return seg in self._segments()

    @abc.abstractmethod
    def _delete_segment(self, seg: str) -> None: ...

    @abc.abstractmethod
    def _lock_path(self) -> Path: ...

    # ---- the index -----------------------------------------------------------------------
    @abc.abstractmethod
    def _ix(self):
        """The index as saved now: an object answering ``sqlindex.SqlIndex``'s questions."""

    @abc.abstractmethod
    def _apply_commit(self, parcels, segs: dict[str, str], skip: set, bad: set,
                      gen: int) -> set[str] | None:
        """Make parcel ``name`` segment ``segs[name]`` for each, then replace the index by the
        one folding ``parcels`` in (``index.apply_commit``), in one atomic step once every
        segment is in place.  Returns the segments that lost a reference (None: any may have)."""

    @abc.abstractmethod
    def _update_info(self, values: dict) -> None: ...

    @abc.abstractmethod
    def _remove(self, vids: Sequence[str]) -> set[str] | None:
        """Drop videos from the index; returns the segments they used (None: any)."""

    @property
    def index(self) -> dict:
        """The whole index in ``index.py``'s dict shape: reads every row (for tools and tests;
        the library asks the store's query methods instead)."""
        return self._ix().to_dict()

    def _current(self) -> None:
        """Under the lock, before a change: make sure the index is the one saved now."""

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
        return self._ix().ids(subset)

    def has(self, vid: str) -> bool:
        return self._ix().has(vid)

    def _entry(self, vid: str) -> dict:
        e = self._ix().entry(vid)
        if e is None:
            raise StoreError(f"{self.path}: no video {vid!r} in the store")
        return e

    def _entries(self, ids: list[str]) -> list[dict]:
        got = self._ix().entries(ids)
        missing = [v for v in ids if v not in got]
        if missing:
            raise StoreError(f"{self.path}: no video {missing[0]!r} in the store"
                             + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        return [got[v] for v in ids]

    def meta(self, vid: str) -> VideoMeta:
        return VideoMeta.from_dict(self._entry(vid)["meta"])

    def _records_of(self, entry: dict) -> dict[str, ArrayRecord]:
        ix, out = self._ix(), {}
        for name, f in entry["fields"].items():
            shared = ix.record(f["rec"])
            out[name] = ArrayRecord(stage=shared["stage"], config=shared["config"], key=f["key"],
                                    upstream=f["upstream"], versions=shared["versions"],
                                    shape=tuple(f["shape"]), dtype=f["dtype"], checksum=f["crc"])
        return out

    def records(self, vid: str) -> dict[str, ArrayRecord]:
        return self._records_of(self._entry(vid))

    def stored(self, ids) -> dict[str, tuple[VideoMeta, dict[str, ArrayRecord]]]:
        """See ``Store.stored``: one query for all ``ids``."""
        return {v: (VideoMeta.from_dict(e["meta"]), self._records_of(e))
                for v, e in self._ix().entries(list(ids)).items()}

    def moments(self, ids) -> dict[str, int]:
        return self._ix().moments(list(ids))

    def failure(self, vid: str) -> Failure | None:
        f = self._ix().failure(vid)
        return None if f is None else Failure.from_dict(f)

    def failed(self, ids) -> set[str]:
        return self._ix().failed_ids(list(ids))

    def summary(self) -> dict:
        return self._ix().summary()

    @staticmethod
    def _field_of(entry: dict, vid: str, name: str, path) -> dict:
        fields = entry["fields"]
        if name not in fields:
            raise StoreError(f"{path}: video {vid!r} has no array {name!r} "
                             f"(it has: {', '.join(sorted(fields)) or 'none'})")
        return fields[name]

    def _field(self, vid: str, name: str) -> dict:
        return self._field_of(self._entry(vid), vid, name, self.path)

    def read(self, vid: str, names: Sequence[str]) -> dict[str, np.ndarray]:
        entry, out = self._entry(vid), {}
        for name in names:
            f = self._field_of(entry, vid, name, self.path)
            out[name] = self._read_rows(f["seg"], f["arr"], f["start"], f["stop"])
        return out

    def read_many(self, names: Sequence[str], ids=None) -> Batch:
        """See ``Store.read_many``.  Without ``ids``, videos come in the order they lie on disk
        (``Batch.ids`` says which is which), so that every segment is one contiguous read that
        lands in the output without a per-video copy."""
        ix = self._ix()
        if ids is None:
            got = dict(ix.all_entries())
            ids = list(got)
            if names:
                first = {v: self._field_of(got[v], v, names[0], self.path) for v in ids}
                ids.sort(key=lambda v: (first[v]["seg"], first[v]["arr"], first[v]["start"]))
            entries = [got[v] for v in ids]
        else:
            ids = list(ids)
            entries = self._entries(ids)
        lengths = [e["meta"]["num_moments"] for e in entries]
        offsets = np.zeros(len(ids) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        arrays, reads = {}, []
        for name in names:
            fields = self._fields(ix, ids, entries, name, lengths)
            if not fields:
                arrays[name] = np.zeros((0,))
                continue
            runs = []              # [seg, arr, start, stop, output offset]: one read each
            for i, f in enumerate(fields):
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

    def read_windows(self, names: Sequence[str], ids: Sequence[str], starts, lengths,
                     width: int | None = None) -> dict[str, np.ndarray]:
        """See ``Store.read_windows``: each window read straight into its row of the output."""
        ids = list(ids)
        entries = self._entries(ids)
        moments = [e["meta"]["num_moments"] for e in entries]
        starts, lengths, width = check_windows(self.path, ids, moments, starts, lengths, width)
        ix, arrays, reads = self._ix(), {}, []
        for name in names:
            fields = self._fields(ix, ids, entries, name, moments)
            row = tuple(fields[0]["shape"][1:]) if fields else ()
            out = arrays[name] = np.zeros((len(ids), width, *row), fields[0]["dtype"] if fields else "f4")
            reads += [(f["seg"], f["arr"], f["start"] + a, f["start"] + a + n, out[b, :n])
                      for b, (f, a, n) in enumerate(zip(fields, starts, lengths)) if n]
        self._read_runs(reads)
        return arrays

    def _fields(self, ix, ids, entries, name: str, moments) -> list[dict]:
        """``name``'s field of each video, checked: made with one config, one row a moment."""
        fields = [self._field_of(e, v, name, self.path) for v, e in zip(ids, entries)]
        configs = {json.dumps(ix.record(r)["config"], sort_keys=True) for r in {f["rec"] for f in fields}}
        if len(configs) > 1:
            raise StoreError(f"{self.path}: array {name!r} was made with {len(configs)} different "
                             "configs across videos; re-extract or select videos of one config")
        for v, f, n in zip(ids, fields, moments):
            if f["stop"] - f["start"] != n:
                raise StoreError(f"{self.path}: {v!r}/{name} has {f['stop'] - f['start']} rows, not {n} moments")
        return fields

    def info(self) -> dict:
        ix = self._ix()
        return {"schema_version": SCHEMA_VERSION, "backend": self.backend,
                "generation": ix.generation, **ix.info()}

    def failures(self) -> list[Failure]:
        return [Failure.from_dict(f) for f in self._ix().failures()]

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
        values = self._changed(values)
        if not values:                         # (nothing written: works on a read-only store)
            return
        with self.lock():
            self._update_info(values)

    def _changed(self, values: dict) -> dict:
        """Those of ``values`` that differ from the stored ones (as JSON: tuples are lists)."""
        info = self._ix().info()
        same = lambda k: k in info and json.loads(json.dumps(values[k])) == info[k]  # noqa: E731
        return {k: v for k, v in values.items() if not same(k)}

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
        ix = self._ix()
        consumed_before = set(ix.consumed)
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
        gen = ix.generation + 1
        skip, bad, segs = plan_commit(parcels, gen, self._check, self._segment_of,
                                      _Taken(self._segment_exists))
        freed = self._apply_commit(parcels, segs, skip, bad, gen)
        for name in stale + [n for n, _ in parcels]:
            self._delete_parcel(name)
        removed = self._gc(freed)
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

    def _gc(self, candidates: set[str] | None = None) -> int:
        """Delete the segments no video uses, among ``candidates`` (None: every segment);
        returns how many."""
        ix = self._ix()
        if candidates is None:
            used = ix.used_segments()
            unused = [seg for seg in self._segments() if seg not in used]
        else:
            unused = [seg for seg in sorted(candidates) if not ix.segment_used(seg)
                      and self._segment_exists(seg)]
        for seg in unused:
            self._delete_segment(seg)
        return len(unused)

    def remove(self, vids: Sequence[str]) -> None:
        """Drop videos from the index (their rows become garbage); used by repair."""
        if not vids:
            return
        with self.lock():
            self._gc(self._remove(list(vids)))

    # ---- checking ------------------------------------------------------------------------
    def verify(self, expected_fields: Sequence[str] | None = None, *,
               progress: bool = False) -> list[Problem]:
        from .verify import verify_packed
        return verify_packed(self, expected_fields, progress=progress)


class _Taken:
    """Segment names in use, asked of the backend one by one (a large store has tens of
    thousands: a commit must not list them)."""

    def __init__(self, exists):
        self._exists, self._added = exists, set()

    def __contains__(self, seg: str) -> bool:
        return seg in self._added or self._exists(seg)

    def add(self, seg: str) -> None:
        self._added.add(seg)
