"""The Zarr 3 backend (the default): a directory that plain ``zarr.open_group`` reads.

Layout (see ``store/packed.py`` for the protocol)::

    STORE/zarr.json                  root group; attributes["l2l"] = {schema_version, backend}
    STORE/index/zarr.json            group whose attributes["l2l_index"] is the index (JSON):
                                     videos -> meta + per-field {seg, arr, start, stop, key, crc}
    STORE/segments/<gen>-<n>-<digest>/<field>
                                     immutable arrays, one per parcel (a shard of videos),
                                     rows of many videos, chunks of ~4 MiB along the moment
                                     axis, zstd where it pays (a sample shrinks by 1.3x), a
                                     crc32c at the end of every chunk file (zarr's codec)
    STORE/staging/<parcel>/          a shard's staged arrays (a zarr group, written once by the
                                     worker that made them) + ``l2l_parcel.json``, its record

Commit checks each staged chunk file's crc32c (raw bytes, no decompression), renames
``staging/<parcel>`` to ``segments/<gen>-<n>-<digest>`` (no array is copied; ``n``: the parcel's
place in the commit), replaces the index, then deletes the record inside the segment.  A segment
that still holds its record and that the index does not use is a parcel whose commit was cut
short: the next commit folds it.
Commits are serialised with ``flock`` on ``STORE/zarr.json`` (never rewritten after creation).

The index document is replaced with an atomic rename of ``index/zarr.json``, fsynced.

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

from . import zarr_chunks
from .base import SCHEMA_VERSION, StoreError, register_backend
from .index import empty_index
from .packed import CHUNK_BYTES, PackedStore


def _atomic_write_json(path: Path, doc: dict) -> str:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    text = json.dumps(doc, separators=(",", ":"))  # (json.dump would encode in pure Python:
    with open(tmp, "w") as f:                      # 10x slower on a 20,000-video index)
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return text


def _digest(raw: bytes) -> str:
    """What tells one index document from another (its length and crc32c, zarr's checksum)."""
    from google_crc32c import value as crc32c
    return f"{len(raw)}-{crc32c(raw):08x}"


def _group_doc(attrs: dict) -> dict:
    return {"zarr_format": 3, "node_type": "group", "attributes": attrs}


RECORD = "l2l_parcel.json"
ZSTD_LEVEL = 1               # measured on frames: the ratio of zarr's default (0, i.e. zstd's 3)
                             # at a third of its encoding time; decoding costs the same


@register_backend
class ZarrStore(PackedStore):
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
        root = zarr.open_group(str(path), mode="w",
                               attributes={"l2l": {"schema_version": SCHEMA_VERSION, "backend": "zarr"}})
        root.create_group("segments")
        root.create_group("staging")
        root.create_group("index")
        _atomic_write_json(path / "index" / "zarr.json", _group_doc({"l2l_index": empty_index("zarr")}))
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

    # ---- index ---------------------------------------------------------------------------
    def _load_index(self) -> dict:
        try:
            raw = (self.path / "index" / "zarr.json").read_bytes()
            index = json.loads(raw)["attributes"]["l2l_index"]
        except (OSError, ValueError, KeyError) as e:
            raise StoreError(f"{self.path}: cannot read the index ({e})") from None
        self._digest = _digest(raw)
        return index

    def _save_index(self, index: dict) -> None:
        text = _atomic_write_json(self.path / "index" / "zarr.json", _group_doc({"l2l_index": index}))
        self._digest = _digest(text.encode())

    def follow(self, other: "PackedStore") -> None:
        """Take ``other``'s index without parsing it (segments are immutable: the arrays this
        object has open stay valid)."""
        with self._reload:
            self._index, self._stamp, self._digest = other._index, other._stamp, other._digest

    def _index_digest(self) -> str | None:
        try:
            return _digest((self.path / "index" / "zarr.json").read_bytes())
        except OSError:
            return None

    def _forget_handles(self) -> None:
        self._arrays = {}

    def _index_stamp(self) -> tuple:
        st = os.stat(self.path / "index" / "zarr.json")
        return (st.st_ino, st.st_mtime_ns, st.st_size)

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
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        (tmp / "zarr.json").write_text(json.dumps(_group_doc({})))
        for arr, (shape, dtype, blocks) in arrays.items():
            _write_array(tmp / arr, shape, dtype, blocks)
        (tmp / RECORD).write_text(json.dumps(attrs, separators=(",", ":")))
        os.replace(tmp, staging / name)          # atomic: the parcel appears whole or not at all

    def _list_parcels(self) -> list[str]:
        d = self.path / "staging"
        out = [p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")]
        used = None
        for p in (self.path / "segments").iterdir():
            if (p / RECORD).exists():
                if used is None:
                    used = {f["seg"] for e in self.index["videos"].values() for f in e["fields"].values()}
                if p.name not in used:
                    out.append("@" + p.name)
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
            [p for p in (self.path / "index").glob(".zarr.json.*.tmp")]

    def _delete_parcel(self, name: str) -> None:
        self._parcel_arrays = {k: v for k, v in self._parcel_arrays.items() if k[0] != name}
        self._parcel_layouts = {k: v for k, v in self._parcel_layouts.items() if k[0] != name}
        self._whole = {k: v for k, v in self._whole.items() if k[0] != name}
        seg = self._moved.pop(name, None)
        if seg is not None or name.startswith("@"):
            (self.path / "segments" / (seg or name[1:]) / RECORD).unlink(missing_ok=True)
        else:
            shutil.rmtree(self.path / "staging" / name, ignore_errors=True)

    def _tidy_records(self, used: set[str]) -> None:
        for seg in used:
            (self.path / "segments" / seg / RECORD).unlink(missing_ok=True)

    # ---- segments ------------------------------------------------------------------------
    def _install(self, segs: dict[str, str], index: dict) -> None:
        for name, seg in segs.items():
            if not name.startswith("@"):
                os.replace(self.path / "staging" / name, self.path / "segments" / seg)
            self._moved[name] = seg
        self._save_index(index)

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
