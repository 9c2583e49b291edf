"""The packed layout shared by both backends: staged parcels, immutable segments, one index.

- ``put`` writes a *parcel* (one video's new arrays and their provenance) under a fresh name and
  makes it visible by an atomic rename.  Any number of processes may ``put`` at once: they never
  touch the same file.
- ``commit`` (one process at a time, under a file lock) appends every complete parcel to a new,
  immutable *segment* (one array per field, the videos' rows concatenated), then replaces the
  *index* (a JSON document: video -> meta and, per field, segment, rows, key, checksum) in one
  atomic step, and only then deletes the parcels it consumed.  A crash at any point leaves
  either the old index (parcels still there, redone next time) or the new one; a video is never
  half visible and never doubled.
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
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .base import SCHEMA_VERSION, ArrayRecord, Batch, Failure, Store, StoreError, VideoMeta
from .index import apply_commit, checksum

CHUNK_BYTES = 4 << 20        # target size of one chunk of a segment array
TMP_MAX_AGE = 3600.0         # seconds after which a temporary left by a killed writer is removed


class PackedStore(Store):
    """Everything but the backend's I/O; see the module docstring."""

    def __init__(self, path: Path):
        super().__init__(path)
        self._index: dict | None = None
        self._stamp: tuple | None = None

    # ---- backend primitives --------------------------------------------------------------
    @abc.abstractmethod
    def _load_index(self) -> dict: ...

    @abc.abstractmethod
    def _write_parcel(self, name: str, attrs: dict, arrays: dict[str, np.ndarray]) -> None:
        """Write a parcel so that it appears under ``name`` atomically (or not at all)."""

    @abc.abstractmethod
    def _list_parcels(self) -> list[str]: ...

    @abc.abstractmethod
    def _parcel_attrs(self, name: str) -> dict: ...

    @abc.abstractmethod
    def _parcel_array(self, name: str, field: str) -> np.ndarray: ...

    @abc.abstractmethod
    def _delete_parcel(self, name: str) -> None: ...

    @abc.abstractmethod
    def _temporaries(self) -> list[Path]:
        """Half-written files or folders (parcels being staged, HDF5 copies being written)."""

    @abc.abstractmethod
    def _write_segment(self, seg: str, arrays: dict[str, tuple[tuple, str, Iterator[np.ndarray]]],
                       index_fn: Callable[[], dict]) -> None:
        """Write segment ``seg`` (arr name -> (shape, dtype, row blocks in order)), then save
        ``index_fn()`` as the new index: the index is replaced only once the segment is complete."""

    @abc.abstractmethod
    def _save_index(self, index: dict) -> None: ...

    @abc.abstractmethod
    def _read_rows(self, seg: str, arr: str, start: int, stop: int) -> np.ndarray: ...

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

    @contextlib.contextmanager
    def lock(self):
        with open(self._lock_path(), "rb" if self._lock_path().exists() else "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                self.refresh()
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
        arrays = {}
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
            if len(runs) == 1:
                arrays[name] = self._read_rows(*runs[0][:4])
                continue
            out = np.empty((int(offsets[-1]), *fields[0]["shape"][1:]), fields[0]["dtype"])
            for seg, arr, lo, hi, o in runs:
                out[o:o + hi - lo] = self._read_rows(seg, arr, lo, hi)
            arrays[name] = out
        return Batch(ids, offsets, arrays, [VideoMeta.from_dict(e["meta"]) for e in entries])

    def info(self) -> dict:
        idx = self.index
        return {"schema_version": idx["schema_version"], "backend": idx["backend"],
                "generation": idx["generation"], **idx["info"]}

    def failures(self) -> list[Failure]:
        return [Failure(**f) for f in sorted(self.index["failures"].values(), key=lambda f: f["id"])]

    # ---- writing -------------------------------------------------------------------------
    def put(self, meta: VideoMeta, arrays: dict[str, np.ndarray],
            records: dict[str, ArrayRecord], *, replace: bool = False) -> None:
        if set(arrays) != set(records):
            raise StoreError(f"{meta.id}: arrays {sorted(arrays)} and records {sorted(records)} differ")
        recs = {}
        for name, a in arrays.items():
            a = np.ascontiguousarray(a)
            if a.shape[:1] != (meta.num_moments,):
                raise StoreError(f"{meta.id}: array {name!r} has shape {a.shape}; "
                                 f"expected {meta.num_moments} rows (one per moment)")
            arrays[name] = a
            rec = records[name].to_dict()
            rec.update(shape=list(a.shape), dtype=str(a.dtype), checksum=checksum(a))
            recs[name] = rec
        attrs = {"kind": "put", "seq": time.time_ns(), "meta": meta.to_dict(), "records": recs,
                 "replace": bool(replace)}
        self._write_parcel(self._parcel_name(), attrs, arrays)

    def record_failure(self, failure: Failure) -> None:
        f = {**failure.__dict__, "time": failure.time or time.strftime("%Y-%m-%dT%H:%M:%S")}
        f["reason"] = " ".join(str(f["reason"]).split())          # always one line
        self._write_parcel(self._parcel_name(), {"kind": "failure", "seq": time.time_ns(),
                                                 "failure": f}, {})

    def set_info(self, key: str, value: Any) -> None:
        json.dumps(value)                                        # fail early if not JSON
        with self.lock():
            idx = self.index
            idx["info"][key] = value
            self._save_index(idx)
            self._saved(idx)

    def _parcel_name(self) -> str:
        return f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def commit(self) -> dict:
        with self.lock():
            return self._commit_locked()

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
            except Exception:                     # unreadable parcel: a torn write; drop it
                stale.append(name)
        parcels.sort(key=lambda p: (p[1].get("seq", 0), p[0]))
        # A video staged twice (a task retried after its worker died past ``put``): a later
        # replacing put makes the earlier ones moot, so their rows are not written at all.
        last_replace = {a["meta"]["id"]: k for k, (_, a) in enumerate(parcels)
                        if a.get("kind") == "put" and a.get("replace")}
        superseded = {n for k, (n, a) in enumerate(parcels) if a.get("kind") == "put"
                      and k < last_replace.get(a["meta"]["id"], -1)}
        puts = [(n, a) for n, a in parcels if a.get("kind") == "put" and n not in superseded]
        gen = idx["generation"] + 1
        seg = f"{gen:06d}"
        # Plan rows: every (field, dtype, trailing shape) gets its own array in the segment.
        plan: dict[str, dict] = {}               # arr name -> {"shape", "dtype", "rows", "parts"}
        placed: dict[tuple[str, str], tuple[str, int, int]] = {}
        for pname, a in puts:
            for field, rec in a["records"].items():
                sig = (field, rec["dtype"], tuple(rec["shape"][1:]))
                arr = next((k for k, v in plan.items() if v["sig"] == sig), None)
                if arr is None:
                    arr = field if field not in plan else f"{field}.{len(plan)}"
                    plan[arr] = {"sig": sig, "rows": 0, "parts": []}
                p = plan[arr]
                n = rec["shape"][0]
                placed[(pname, field)] = (arr, p["rows"], p["rows"] + n)
                p["parts"].append((pname, field, rec["checksum"]))
                p["rows"] += n
        bad: set[str] = set()

        def blocks(parts):
            for pname, field, crc in parts:
                try:
                    a = self._parcel_array(pname, field)
                except Exception:     # unreadable (e.g. a chunk that no longer decompresses):
                    arr, start, stop = placed[(pname, field)]      # reject it like a bad checksum,
                    _, dtype, trail = plan[arr]["sig"]             # keeping the rows in place
                    a, crc = np.zeros((stop - start, *trail), dtype), None
                if checksum(a) != crc:
                    bad.add(pname)
                yield a

        new = json.loads(json.dumps(idx))
        new["generation"] = gen
        new["consumed"] = [n for n, _ in parcels]
        seg_arrays = {arr: ((p["rows"], *p["sig"][2]), p["sig"][1], blocks(p["parts"]))
                      for arr, p in plan.items()}
        # The index is written by the backend right after the segment, so apply updates lazily:
        # a generator cannot tell us about bad parcels before it ran, hence the callback.
        def finish_index() -> dict:
            apply_commit(new, [p for p in parcels if p[0] not in superseded], placed, seg, bad)
            return new
        if seg_arrays:
            self._write_segment(seg, seg_arrays, finish_index)
        else:
            self._save_index(finish_index())
        self._saved(new)
        for name in stale + [n for n, _ in parcels]:
            self._delete_parcel(name)
        removed = self._gc()
        self._clean_temporaries()
        n_fail = sum(1 for _, a in parcels if a.get("kind") == "failure")
        return {"videos": len(puts) - len(bad), "failures": n_fail, "rejected": len(bad),
                "superseded": len(superseded),
                "segment": seg if seg_arrays else None, "segments_removed": removed}

    def _clean_temporaries(self, max_age: float = TMP_MAX_AGE) -> int:
        """Delete temporaries older than ``max_age`` seconds: left by a killed writer (no writer
        takes an hour to stage one video), never read."""
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
        used = {f["seg"] for e in self.index["videos"].values() for f in e["fields"].values()}
        removed = 0
        for seg in self._segments():
            if seg not in used:
                self._delete_segment(seg)
                removed += 1
        return removed

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
    def verify(self, expected_fields: Sequence[str] | None = None) -> list[str]:
        from .verify import verify_packed
        return verify_packed(self, expected_fields)
