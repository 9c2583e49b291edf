"""The HDF5 backend: one ``.h5`` file that plain h5py reads; also the export format.

Layout: ``/segments/<gen>/<field>`` datasets (rows of many videos, chunked, gzip) and
``/l2l_index``, a uint8 dataset holding the index JSON (``json.loads(f["l2l_index"][()].tobytes())``),
plus root attributes ``l2l_schema_version`` and ``l2l_backend``.

HDF5 cannot take concurrent writers and is not crash-safe while open for writing, so: parcels are
staged as separate ``.h5`` files in ``<file>.staging/``, and ``commit`` writes a new copy of the
whole file next to the old one (the parcels' rows copied in), fsyncs it and renames it over it.
A commit therefore costs O(store) for this backend and the committing process copies every array;
Zarr is the better working store for long extractions, HDF5 for exchange.  The staging folder and
the lock file are removed when they are empty (after a clean commit: ``<file>`` stands alone).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import uuid
from pathlib import Path

import numpy as np

from .base import SCHEMA_VERSION, StoreError, StoreWriteError, register_backend
from .index import DictIndex, apply_commit, empty_index, shallow_copy
from .packed import CHUNK_BYTES, PackedStore

SUFFIXES = (".h5", ".hdf5")


def _index_bytes(index: dict) -> np.ndarray:
    return np.frombuffer(json.dumps(index, separators=(",", ":")).encode(), np.uint8)


def _fsync(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


@register_backend
class HDF5Store(PackedStore):
    backend = "hdf5"

    @classmethod
    def create(cls, path: Path) -> "HDF5Store":
        import h5py
        path = Path(path)
        if path.exists():
            return cls.open(path)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with h5py.File(tmp, "w") as f:
                cls._init_file(f, empty_index("hdf5"))
            os.link(tmp, path)                   # never over a store another process created
        except FileExistsError:
            return cls.open(path)
        except OSError as e:
            raise StoreWriteError(f"{path}: cannot create the store ({' '.join(str(e).split())})") from None
        finally:
            tmp.unlink(missing_ok=True)
        return cls(path)

    @staticmethod
    def _init_file(f, index: dict) -> None:
        f.attrs["l2l_schema_version"] = SCHEMA_VERSION
        f.attrs["l2l_backend"] = "hdf5"
        f.create_group("segments")
        f.create_dataset("l2l_index", data=_index_bytes(index))

    @staticmethod
    def recorded_backend(path: Path) -> str | None:
        """The backend an HDF5 file records (root attribute ``l2l_backend``), or None when
        ``path`` is not an HDF5 file."""
        path = Path(path)
        try:
            with open(path, "rb") as f:
                if f.read(8) != b"\x89HDF\r\n\x1a\n":
                    return None
            import h5py                              # (only for an HDF5 file: a slow import)
            with h5py.File(path, "r") as f:
                return str(f.attrs.get("l2l_backend", "")) or None
        except OSError:
            return None

    @classmethod
    def open(cls, path: Path) -> "HDF5Store":
        import h5py
        path = Path(path)
        try:
            with h5py.File(path, "r") as f:
                ok = "l2l_index" in f
        except OSError as e:
            raise StoreError(f"{path}: not an HDF5 file ({' '.join(str(e).split())})") from None
        if not ok:
            raise StoreError(f"{path}: an HDF5 file, but not an l2l store (no l2l_index)")
        return cls(path)

    def __init__(self, path: Path):
        super().__init__(path)
        self._file = None
        self._dix: DictIndex | None = None
        self._stamp: tuple | None = None
        self._reload = threading.Lock()      # one thread reloads a replaced index at a time

    # ---- the index: one JSON document, parsed again only when the file was replaced ------
    def _ix(self) -> DictIndex:
        with self._reload:
            stamp = self._index_stamp()
            if self._dix is None or stamp != self._stamp:
                try:
                    ix = DictIndex(self._load_index())
                except (OSError, ValueError, KeyError) as e:
                    raise StoreError(f"{self.path}: cannot read the index ({e})") from None
                try:
                    ix.check()
                except StoreError as e:
                    raise StoreError(f"{self.path}: {e}") from None
                self._dix, self._stamp = ix, stamp
            return self._dix

    def _current(self) -> None:
        with self._reload:
            self._dix = None

    def _saved(self, index: dict) -> None:
        self._dix, self._stamp = DictIndex(index), self._index_stamp()

    def _apply_commit(self, parcels, segs, skip, bad, gen):
        new = shallow_copy(self._ix().d)
        new["generation"] = gen
        new["consumed"] = [n for n, _ in parcels]
        apply_commit(new, parcels, segs, skip, bad)
        self._install(segs, new)
        self._saved(new)
        return None

    def _update_info(self, values: dict) -> None:
        new = shallow_copy(self._ix().d)
        new["info"].update(values)
        self._save_index(new)
        self._saved(new)

    def _remove(self, vids):
        new = shallow_copy(self._ix().d)
        for v in vids:
            new["videos"].pop(v, None)
        self._save_index(new)
        self._saved(new)
        return None

    @property
    def staging(self) -> Path:
        d = self.path.with_name(self.path.name + ".staging")
        d.mkdir(exist_ok=True)
        return d

    def _h5(self):
        import h5py
        if self._file is None:
            self._file = h5py.File(self.path, "r")
        return self._file

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _load_index(self) -> dict:
        """The index from a fresh handle on the (replaced) file.  The old handle is not closed
        here: another thread may be reading rows through it; it closes when dropped."""
        import h5py
        self._file = h5py.File(self.path, "r")
        return json.loads(self._file["l2l_index"][()].tobytes())

    def _index_stamp(self) -> tuple:
        st = os.stat(self.path)
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    # ---- parcels -------------------------------------------------------------------------
    def _write_parcel(self, name, attrs, arrays) -> None:
        import h5py
        tmp = self.staging / f".tmp-{name}.h5"
        try:
            with h5py.File(tmp, "w") as f:
                f.create_dataset("attrs", data=_index_bytes(attrs))
                for arr, (shape, dtype, blocks) in arrays.items():
                    d = f.create_dataset(arr, shape=shape, dtype=dtype)
                    pos = 0
                    for blk in blocks:
                        d[pos:pos + len(blk)] = blk
                        pos += len(blk)
            os.replace(tmp, self.staging / f"{name}.h5")
        except OSError as e:                     # a full disk, a read-only folder: nothing left
            tmp.unlink(missing_ok=True)
            raise StoreWriteError(f"{self.path}: cannot stage a parcel ({' '.join(str(e).split())})") from None

    def _staging_dir(self) -> Path:
        return self.path.with_name(self.path.name + ".staging")

    def _list_parcels(self) -> list[str]:
        d = self._staging_dir()
        if not d.is_dir():
            return []
        return [p.stem for p in d.glob("*.h5") if not p.name.startswith(".")]

    def _parcel_attrs(self, name) -> dict:
        import h5py
        with h5py.File(self.staging / f"{name}.h5", "r") as f:
            return json.loads(f["attrs"][()].tobytes())

    def _parcel_rows(self, name, arr, start, stop) -> np.ndarray:
        import h5py
        with h5py.File(self.staging / f"{name}.h5", "r") as f:
            return f[arr][start:stop]

    def _temporaries(self) -> list[Path]:
        d = self._staging_dir()
        return (list(d.glob(".tmp-*")) if d.is_dir() else []) + \
            list(self.path.parent.glob(f".{self.path.name}.*.tmp"))

    def _delete_parcel(self, name) -> None:
        (self._staging_dir() / f"{name}.h5").unlink(missing_ok=True)

    def tidy(self) -> None:
        """Remove the staging folder and the lock file when nothing is left in them."""
        d = self._staging_dir()
        with contextlib.suppress(OSError):
            d.rmdir()                                # only if empty
        if not d.exists():
            self._lock_path().unlink(missing_ok=True)

    # ---- segments (copy-on-write of the whole file) --------------------------------------
    def _install(self, segs, index) -> None:
        import h5py
        self._close()
        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.tmp")
        shutil.copyfile(self.path, tmp)
        try:
            with h5py.File(tmp, "r+") as f:
                for name, seg in segs.items():
                    g = f["segments"].create_group(seg)
                    with h5py.File(self.staging / f"{name}.h5", "r") as src:
                        for arr in src:
                            if arr == "attrs":
                                continue
                            _copy_rows(src[arr], g, arr)
                del f["l2l_index"]
                f.create_dataset("l2l_index", data=_index_bytes(index))
            _fsync(tmp)
            os.replace(tmp, self.path)
        finally:
            if tmp.exists():
                tmp.unlink()

    def _save_index(self, index: dict) -> None:
        import h5py
        self._close()
        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.tmp")
        shutil.copyfile(self.path, tmp)
        try:
            with h5py.File(tmp, "r+") as f:
                del f["l2l_index"]
                f.create_dataset("l2l_index", data=_index_bytes(index))
            _fsync(tmp)
            os.replace(tmp, self.path)
        finally:
            if tmp.exists():
                tmp.unlink()

    def _dataset(self, seg, arr):
        try:
            return self._h5()["segments"][seg][arr]
        except KeyError:
            raise StoreError(f"{self.path}: segment {seg}/{arr} is missing") from None

    def _read_rows(self, seg, arr, start, stop) -> np.ndarray:
        return self._dataset(seg, arr)[start:stop]

    def _read_runs(self, runs) -> None:
        for seg, arr, start, stop, out in runs:       # straight into place (no copy)
            if stop > start:
                self._dataset(seg, arr).read_direct(out, np.s_[start:stop])

    def _segments(self) -> list[str]:
        return sorted(self._h5()["segments"].keys())

    def _delete_segment(self, seg) -> None:
        import h5py
        self._close()
        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:                                       # copy-on-write, as every change here
            with h5py.File(self.path, "r") as src, h5py.File(tmp, "w") as dst:
                for k, v in src.attrs.items():
                    dst.attrs[k] = v
                src.copy(src["l2l_index"], dst, "l2l_index")
                g = dst.create_group("segments")
                for s in src["segments"]:
                    if s != seg:
                        src.copy(src["segments"][s], g, s)
            _fsync(tmp)
            os.replace(tmp, self.path)
        finally:
            if tmp.exists():
                tmp.unlink()


def _copy_rows(src, g, arr: str, block_bytes: int = 64 << 20) -> None:
    """Copy dataset ``src`` into group ``g`` as a chunked (~4 MiB), gzip-compressed dataset,
    in row blocks of about ``block_bytes`` (memory stays bounded)."""
    shape, dtype = src.shape, src.dtype
    row = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize
    rows = max(1, min(max(shape[0], 1), CHUNK_BYTES // max(row, 1)))
    d = g.create_dataset(arr, shape=shape, dtype=dtype, chunks=(rows, *shape[1:]),
                         compression="gzip", compression_opts=1)
    step = max(rows, (block_bytes // max(row, 1)) // rows * rows)
    for lo in range(0, shape[0], step):
        d[lo:lo + step] = src[lo:lo + step]
