"""The feature store: one protocol (``base.Store``), backends registered by name.

``create_store(path, backend=None)`` makes (or opens) a store; ``open_store(path)`` opens one with
the backend it records on disk (never guessed from the path's suffix); ``export_store(src, dst,
backend="hdf5")`` copies every video, with its provenance and the failure table, into a new store
of another backend in compact segments.  Adding a backend: its own module, a class decorated
with ``@register_backend``, and one import line below.
"""
from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from .base import (BACKENDS, SCHEMA_VERSION, ArrayRecord, Batch, Failure, Problem, Put,  # noqa: F401
                   Store, StoreError, StoreWriteError, VideoMeta, library_versions,
                   register_backend)
from . import hdf5_store, zarr_store  # noqa: F401,E402  (registration)
from .hdf5_store import SUFFIXES as HDF5_SUFFIXES


def default_backend(path) -> str:
    """The backend a *new* store at ``path`` gets when none is asked for: HDF5 for ``*.h5``."""
    return "hdf5" if Path(path).suffix in HDF5_SUFFIXES else "zarr"


def recorded_backend(path) -> str | None:
    """The backend the store at ``path`` records, or None when it is not an l2l store."""
    for cls in BACKENDS.values():
        b = cls.recorded_backend(Path(path))
        if b is not None:
            return b
    return None


def create_store(path, backend: str | None = None) -> Store:
    path = Path(path)
    if path.exists():
        if recorded_backend(path) is not None or path.is_file():
            return open_store(path)
    backend = backend or default_backend(path)
    if backend not in BACKENDS:
        raise StoreError(f"unknown store backend {backend!r} (known: {', '.join(sorted(BACKENDS))})")
    return BACKENDS[backend].create(path)


def open_store(path) -> Store:
    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path}: no such store")
    backend = recorded_backend(path)
    if backend is None:
        if path.is_file():
            raise StoreError(f"{path}: is a file but not an l2l feature store (neither an HDF5 "
                             "store nor a Zarr store folder)")
        raise StoreError(f"{path}: not a zarr store (no l2l attributes in zarr.json) nor any "
                         "other l2l store")
    if backend not in BACKENDS:
        raise StoreError(f"{path}: records store backend {backend!r}, which this l2l does not have "
                         f"(known: {', '.join(sorted(BACKENDS))})")
    return BACKENDS[backend].open(path)


def export_store(src: Store, dst_path, backend: str = "hdf5", ids=None, *,
                 progress: bool = False) -> Store:
    """Copy ``src`` (all or ``ids``) into a new store at ``dst_path``, failures included;
    returns the new store.  Only ``dst_path`` is left behind (no staging folder, no lock)."""
    dst_path = Path(dst_path)
    if dst_path.exists():
        raise StoreError(f"{dst_path}: already exists; export writes a new store")
    dst = create_store(dst_path, backend)
    ids = src.ids() if ids is None else list(ids)
    batch: list[Put] = []
    for vid in tqdm(ids, unit="video", desc="export", disable=not progress, dynamic_ncols=True):
        recs = src.records(vid)
        batch.append(Put(src.meta(vid), src.read(vid, list(recs)), recs, True))
        if sum(a.nbytes for p in batch for a in p.arrays.values()) > 256 << 20:
            dst.put_many(batch)
            batch = []
    dst.put_many(batch)
    for f in src.failures():
        dst.record_failure(f)
    dst.commit()
    for key, value in src.info().items():
        if key not in ("schema_version", "backend", "generation"):
            dst.set_info(key, value)
    dst.tidy()
    return dst
