"""The HDF5 backend: one ``.h5`` file that plain h5py reads; also the export format.

Layout: ``/segments/<gen>/<field>`` datasets (rows of many videos, chunked, gzip) and
``/l2l_index``, a uint8 dataset holding the index JSON (``json.loads(f["l2l_index"][()].tobytes())``),
plus root attributes ``l2l_schema_version`` and ``l2l_backend``.

HDF5 cannot take concurrent writers and is not crash-safe while open for writing, so: parcels are
staged as separate small ``.h5`` files in ``<file>.staging/``, and ``commit`` writes a new copy of
the whole file next to the old one and renames it over it.  A commit therefore costs O(store) for
this backend; Zarr is the better working store for long extractions, HDF5 for exchange.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from .base import SCHEMA_VERSION, StoreError
from .index import empty_index
from .packed import CHUNK_BYTES, PackedStore

SUFFIXES = (".h5", ".hdf5")


def _index_bytes(index: dict) -> np.ndarray:
    return np.frombuffer(json.dumps(index, separators=(",", ":")).encode(), np.uint8)


class HDF5Store(PackedStore):
    backend = "hdf5"

    @classmethod
    def create(cls, path: Path) -> "HDF5Store":
        import h5py
        path = Path(path)
        if path.exists():
            return cls.open(path)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        with h5py.File(tmp, "w") as f:
            cls._init_file(f, empty_index("hdf5"))
        os.replace(tmp, path)
        return cls(path)

    @staticmethod
    def _init_file(f, index: dict) -> None:
        f.attrs["l2l_schema_version"] = SCHEMA_VERSION
        f.attrs["l2l_backend"] = "hdf5"
        f.create_group("segments")
        f.create_dataset("l2l_index", data=_index_bytes(index))

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
        self._close()
        return json.loads(self._h5()["l2l_index"][()].tobytes())

    def _index_stamp(self) -> tuple:
        st = os.stat(self.path)
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    # ---- parcels -------------------------------------------------------------------------
    def _write_parcel(self, name, attrs, arrays) -> None:
        import h5py
        tmp = self.staging / f".tmp-{name}.h5"
        with h5py.File(tmp, "w") as f:
            f.create_dataset("attrs", data=_index_bytes(attrs))
            for field, a in arrays.items():
                f.create_dataset(field, data=a)
        os.replace(tmp, self.staging / f"{name}.h5")

    def _list_parcels(self) -> list[str]:
        return [p.stem for p in self.staging.glob("*.h5") if not p.name.startswith(".")]

    def _parcel_attrs(self, name) -> dict:
        import h5py
        with h5py.File(self.staging / f"{name}.h5", "r") as f:
            return json.loads(f["attrs"][()].tobytes())

    def _parcel_array(self, name, field) -> np.ndarray:
        import h5py
        with h5py.File(self.staging / f"{name}.h5", "r") as f:
            return f[field][()]

    def _temporaries(self) -> list[Path]:
        return list(self.staging.glob(".tmp-*")) + list(self.path.parent.glob(f".{self.path.name}.*.tmp"))

    def _delete_parcel(self, name) -> None:
        (self.staging / f"{name}.h5").unlink(missing_ok=True)

    # ---- segments (copy-on-write of the whole file) --------------------------------------
    def _write_segment(self, seg, arrays, index_fn) -> None:
        import h5py
        self._close()
        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.tmp")
        shutil.copyfile(self.path, tmp)
        try:
            with h5py.File(tmp, "r+") as f:
                g = f["segments"].create_group(seg)
                for arr, (shape, dtype, blocks) in arrays.items():
                    row = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize
                    rows = max(1, min(max(shape[0], 1), CHUNK_BYTES // max(row, 1)))
                    d = g.create_dataset(arr, shape=shape, dtype=dtype, chunks=(rows, *shape[1:]),
                                         compression="gzip", compression_opts=1)
                    pos = 0
                    for b in blocks:
                        d[pos:pos + len(b)] = b
                        pos += len(b)
                del f["l2l_index"]
                f.create_dataset("l2l_index", data=_index_bytes(index_fn()))
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
            os.replace(tmp, self.path)
        finally:
            if tmp.exists():
                tmp.unlink()

    def _read_rows(self, seg, arr, start, stop) -> np.ndarray:
        try:
            return self._h5()["segments"][seg][arr][start:stop]
        except KeyError:
            raise StoreError(f"{self.path}: segment {seg}/{arr} is missing") from None

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
            os.replace(tmp, self.path)
        finally:
            if tmp.exists():
                tmp.unlink()
