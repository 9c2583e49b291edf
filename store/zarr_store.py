"""The Zarr 3 backend (the default): a directory that plain ``zarr.open_group`` reads.

Layout (see ``store/packed.py`` for the protocol)::

    STORE/zarr.json                  root group; attributes["l2l"] = {schema_version, backend}
    STORE/index/zarr.json            group whose attributes["l2l_index_file"] names the index
    STORE/index/index.sqlite         the index, an SQLite database (``sqlindex.py``): videos ->
                                     meta + per-field {seg, arr, start, stop, key, crc}
    STORE/index/log/<seq>.json       every change of the index, written before it is made
                                     (``indexlog.py``): ``l2l store repair`` rebuilds a damaged
                                     index from it
    STORE/index/installing.json      the segments the last commit installed (a commit cut
                                     short after its renames is found from it, not by listing)
    STORE/segments/<gen>-<n>-<digest>/<field>
                                     immutable arrays, one per parcel (a shard of videos),
                                     rows of many videos, chunks of ~4 MiB along the moment
                                     axis, zstd where it pays (a sample shrinks by 1.3x), a
                                     crc32c at the end of every chunk file (zarr's codec)
    STORE/staging/<parcel>/          a shard's staged arrays (a zarr group, written once by the
                                     worker that made them) + ``l2l_parcel.json``, its record

Commit checks each staged chunk file's crc32c (raw bytes, no decompression), names the
segments it is about to install in ``installing.json``, renames ``staging/<parcel>`` to
``segments/<gen>-<n>-<digest>`` (no array is copied; ``n``: the parcel's place in the commit),
folds the parcels into the index in one SQLite transaction, then deletes the record inside each
segment.  A segment named in ``installing.json`` that still holds its record and that the index
does not use is a parcel whose commit was cut short: the next commit folds it.
Commits are serialised with ``flock`` on ``STORE/zarr.json`` (never rewritten after creation).

A store made before the SQLite index (the index as one JSON attribute ``l2l_index`` of
``index/zarr.json``) is read as it is and migrated by its first commit, or by
``l2l store migrate``.  A new store is built in a temporary folder beside it and renamed into
place, so that two processes creating it at once both end with the same one.

Segment and parcel arrays are written, and read back, as chunk files by ``zarr_chunks.py``: the
very files zarr writes (a test compares them), without zarr's per-call cost.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from . import indexlog, zarr_chunks
from .base import SCHEMA_VERSION, StoreError, StoreWriteError, register_backend
from .packed import CHUNK_BYTES, PackedStore
from .sqlindex import SqlIndex
from .zarr_index import (DB, INDEX_ATTRS, INSTALLING, LOG, RECORD, ZarrIndex, _atomic_write_json,
                         _group_doc)


ZSTD_LEVEL = 1               # measured on frames: the ratio of zarr's default (0, i.e. zstd's 3)
                             # at a third of its encoding time; decoding costs the same


@register_backend
class ZarrStore(ZarrIndex, PackedStore):
    backend = "zarr"

    @classmethod
    def create(cls, path: Path) -> "ZarrStore":
        import zarr
        path = Path(path)
        if (path / "zarr.json").exists():
            return cls.open(path)
        if path.exists() and not path.is_dir():
            raise StoreError(f"{path}: is a file, not a zarr store (a zarr store is a folder)")
        if path.exists() and any(path.iterdir()):
            raise StoreError(f"{path}: exists and is not an l2l store (not empty)")
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            root = zarr.open_group(str(tmp), mode="w",
                                   attributes={"l2l": {"schema_version": SCHEMA_VERSION,
                                                       "backend": "zarr"}})
            root.create_group("segments")
            root.create_group("staging")
            root.create_group("index")
            _atomic_write_json(tmp / "index" / "zarr.json", _group_doc(INDEX_ATTRS))
            SqlIndex.create(tmp / "index" / DB, "zarr")
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise StoreWriteError(f"{path}: cannot create the store ({e.strerror or e})") from None
        try:
            os.rename(tmp, path)             # atomic; onto an empty folder too, not a full one
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if (path / "zarr.json").exists():    # another process created it first: ours
                return cls.open(path)
            raise StoreError(f"{path}: exists and is not an l2l store (not empty)") from None
        return cls(path)

    @staticmethod
    def recorded_backend(path: Path) -> str | None:
        """The backend a Zarr store records (root attributes ``l2l.backend``), or None when
        ``path`` is not a Zarr group."""
        try:
            root = json.loads((Path(path) / "zarr.json").read_text())
            return root.get("attributes", {}).get("l2l", {}).get("backend")
        except (OSError, ValueError, AttributeError):
            return None

    @classmethod
    def open(cls, path: Path) -> "ZarrStore":
        path = Path(path)
        try:
            root = json.loads((path / "zarr.json").read_text())
        except (OSError, ValueError) as e:
            raise StoreError(f"{path}: not a zarr store ({e.__class__.__name__})") from None
        if "l2l" not in root.get("attributes", {}):
            raise StoreError(f"{path}: a zarr group, but not an l2l store (no 'l2l' attribute)")
        return cls(path)

    def __init__(self, path: Path):
        super().__init__(path)
        self._arrays: dict[tuple[str, str], object] = {}
        self._moved: dict[str, str] = {}         # parcel -> the segment it became
        self._parcel_arrays: dict[tuple[str, str], object] = {}   # open while a commit checks
        self._parcel_layouts: dict[tuple[str, str], object] = {}  # their zarr_chunks layouts
        self._whole: dict[tuple[str, str, int], bool] = {}        # (parcel, arr, chunk) checked
        self._sql: SqlIndex | None = None
        self._legacy: tuple | None = None        # (stamp, DictIndex) of a JSON index

    # ---- index: ``zarr_index.ZarrIndex`` (SQLite, its log, migration) ----------------
    def _apply_commit(self, parcels, segs, skip, bad, gen):
        ix = self._sql_index()
        self._tidy_installed(ix)
        try:
            _atomic_write_json(self.path / "index" / INSTALLING,    # (a crash, not a power cut:
                               {"segments": sorted(segs.values())}, sync=False)   # no fsync)
            for name, seg in segs.items():
                if not name.startswith("@"):
                    os.replace(self.path / "staging" / name, self.path / "segments" / seg)
                self._moved[name] = seg
            seq = ix.seq + 1
            indexlog.write(self.path / "index" / LOG, seq,
                           indexlog.commit_entry(parcels, segs, skip, bad, gen))
        except OSError as e:
            raise StoreWriteError(f"{self.path}: cannot commit ({e.strerror or e})") from None
        return ix.apply_commit(parcels, segs, skip, bad, gen, seq)

    def _lock_path(self) -> Path:
        return self.path / "zarr.json"

    # ---- parcels -------------------------------------------------------------------------
    def _parcel_dir(self, name: str) -> Path:
        if name.startswith("@"):                 # a segment whose commit was cut short
            return self.path / "segments" / name[1:]
        return self.path / "staging" / name

    def _write_parcel(self, name: str, attrs: dict, arrays) -> None:
        staging = self.path / "staging"
        tmp = staging / f".tmp-{name}"
        try:
            tmp.mkdir()
            (tmp / "zarr.json").write_text(json.dumps(_group_doc({})))
            for arr, (shape, dtype, blocks) in arrays.items():
                _write_array(tmp / arr, shape, dtype, blocks)
            (tmp / RECORD).write_text(json.dumps(attrs, separators=(",", ":")))
            os.replace(tmp, staging / name)      # atomic: the parcel appears whole or not at all
        except OSError as e:                     # a full disk, a read-only store: nothing left
            shutil.rmtree(tmp, ignore_errors=True)
            raise StoreWriteError(f"{self.path}: cannot stage {_what(attrs)} ({e.strerror or e})") from None

    def _list_parcels(self) -> list[str]:
        d = self.path / "staging"
        out = [p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")]
        for seg in self._installing():
            if (self.path / "segments" / seg / RECORD).exists() and not self._ix().segment_used(seg):
                out.append("@" + seg)
        return out

    def _segment_of(self, parcel: str) -> str | None:
        return parcel[1:] if parcel.startswith("@") else None

    def _parcel_attrs(self, name: str) -> dict:
        return json.loads((self._parcel_dir(name) / RECORD).read_text())

    def _parcel_array(self, name: str, arr: str):
        """Parcel array ``arr`` (by zarr: an older parcel read back), opened once per commit."""
        import zarr
        key = (name, arr)
        if self._parcel_arrays.get(key) is None:
            self._parcel_arrays[key] = zarr.open_array(str(self._parcel_dir(name) / arr), mode="r")
        return self._parcel_arrays[key]

    def _parcel_rows(self, name: str, arr: str, start: int, stop: int) -> np.ndarray:
        return self._parcel_array(name, arr)[start:stop]

    def _check(self, pname: str, v: dict) -> bool:
        """Commit's check of video ``v`` of parcel ``pname``: every chunk file that holds its
        rows is there and whole (the crc32c zarr appended to it matches its bytes), read as
        raw bytes: no decompression (``verify`` decompresses and compares the checksums of the
        data).  Parcels written before chunks carried a crc32c are read back as before."""
        for rec in v["records"].values():
            ok = self._chunks_whole(pname, rec["arr"], rec["start"], rec["stop"])
            if ok is None:
                return super()._check(pname, v)
            if not ok:
                return False
        return True

    def _chunks_whole(self, pname: str, arr: str, start: int, stop: int) -> bool | None:
        """Whether the chunk files holding rows ``start:stop`` of parcel array ``arr`` are there
        and match their crc32c; None when the array is not of l2l's layout with a crc32c in
        every chunk file (an older parcel: read it back instead)."""
        key = (pname, arr)
        if key not in self._parcel_layouts:
            folder = self._parcel_dir(pname) / arr
            self._parcel_layouts[key] = (zarr_chunks.layout(folder) if (folder / "zarr.json").is_file()
                                         else False)
        lay = self._parcel_layouts[key]
        if not lay:
            return None if lay is None else False
        for c in range(start // lay.rows, -(-stop // lay.rows)):
            ck = (pname, arr, c)
            if ck not in self._whole:
                self._whole[ck] = zarr_chunks.chunk_sound(lay, c)
            if not self._whole[ck]:
                return False
        return True

    def _temporaries(self) -> list[Path]:
        return [p for p in (self.path / "staging").glob(".tmp-*")] + \
            [p for p in (self.path / "index").glob(".*.tmp")] + \
            [p for p in (self.path / "index" / LOG).glob(".*.tmp")]

    def _delete_parcel(self, name: str) -> None:
        self._parcel_arrays = {k: v for k, v in self._parcel_arrays.items() if k[0] != name}
        self._parcel_layouts = {k: v for k, v in self._parcel_layouts.items() if k[0] != name}
        self._whole = {k: v for k, v in self._whole.items() if k[0] != name}
        seg = self._moved.pop(name, None)
        if seg is not None or name.startswith("@"):
            (self.path / "segments" / (seg or name[1:]) / RECORD).unlink(missing_ok=True)
        else:
            shutil.rmtree(self.path / "staging" / name, ignore_errors=True)

    # ---- segments ------------------------------------------------------------------------
    def _segment_exists(self, seg: str) -> bool:
        return (self.path / "segments" / seg).is_dir()

    def _segment_array(self, seg: str, arr: str):
        """Segment array ``arr``, opened once per store object: its ``zarr_chunks.Layout``
        (read without zarr's read path), or, for another layout, the zarr array."""
        import zarr
        key = (seg, arr)
        got = self._arrays.get(key)
        if got is None:
            path = self.path / "segments" / seg / arr
            got = zarr_chunks.layout(path)
            if got is None:
                try:
                    got = zarr.open_array(str(path), mode="r")
                except Exception as e:
                    raise StoreError(f"{self.path}: segment {seg}/{arr} cannot be opened ({e})") from None
            self._arrays[key] = got
        return got

    def _read_rows(self, seg: str, arr: str, start: int, stop: int) -> np.ndarray:
        a = self._segment_array(seg, arr)
        if isinstance(a, zarr_chunks.Layout):
            return zarr_chunks.read_rows(a, start, stop)
        return a[start:stop]

    def _read_runs(self, runs) -> None:
        ours = []
        for seg, arr, start, stop, out in runs:
            a = self._segment_array(seg, arr)
            if isinstance(a, zarr_chunks.Layout) and out.flags.c_contiguous:
                ours.append((a, start, stop, out))
            else:
                out[...] = a[start:stop]
        zarr_chunks.read_runs(ours, self.read_threads)

    def _segments(self) -> list[str]:
        d = self.path / "segments"
        return sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))

    def _delete_segment(self, seg: str) -> None:
        self._arrays = {k: v for k, v in self._arrays.items() if k[0] != seg}
        shutil.rmtree(self.path / "segments" / seg, ignore_errors=True)


def _what(attrs: dict) -> str:
    """What a parcel holds, for a message: its videos (the first few by id) or its failure."""
    if attrs.get("kind") == "failure":
        return f"the failure of {attrs['failure']['id']!r}"
    ids = [v["meta"]["id"] for v in attrs.get("videos", [])]
    return f"{len(ids)} video(s) ({', '.join(ids[:3])}{', ...' if len(ids) > 3 else ''})"


def _compresses(a: np.ndarray, sample_bytes: int = 256 << 10, min_ratio: float = 1.3) -> bool:
    """Whether zstd is worth it for an array like ``a``: a sample of its bytes shrinks by at
    least ``min_ratio``.  Embeddings (float16) hardly compress (about 1.15x), and decompressing
    them costs several times a raw read; frames and spectrograms usually do compress."""
    raw = np.ascontiguousarray(a).view(np.uint8).reshape(-1)[:sample_bytes]
    return len(raw) == 0 or len(raw) / max(1, len(zarr_chunks._zstd(ZSTD_LEVEL).encode(raw))) >= min_ratio


def _chunks(shape, dtype) -> tuple[int, ...]:
    row = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize
    rows = max(1, min(max(shape[0], 1), CHUNK_BYTES // max(row, 1)))
    return (rows, *shape[1:])


def _write_array(folder: Path, shape, dtype, blocks) -> None:
    """Write array ``folder`` from its row blocks, in chunks of about ``CHUNK_BYTES``: zstd where
    it pays, and every chunk file written (even one of zeros) ending with a crc32c of its bytes,
    so that a damaged chunk fails to read instead of reading as numbers, and commit checks a
    parcel from its files' bytes alone (``ZarrStore._check``).  ``zarr_chunks.write_array``
    writes the files zarr would."""
    blocks = list(blocks)
    level = ZSTD_LEVEL if not blocks or _compresses(blocks[0]) else None
    zarr_chunks.write_array(folder, tuple(shape), dtype, blocks, chunk_rows=_chunks(shape, dtype)[0],
                            zstd_level=level)
