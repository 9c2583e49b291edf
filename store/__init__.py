"""The feature store: one protocol (``base.Store``), backends registered by name.

``create_store(path, backend="zarr")`` makes (or opens) a store; ``open_store(path)`` picks the
backend from what is on disk; ``export_store(src, dst, backend="hdf5")`` copies every video,
with its provenance, into a new store of another backend in one compact segment.
"""
from __future__ import annotations

from pathlib import Path

from .base import (SCHEMA_VERSION, ArrayRecord, Batch, Failure, Store, StoreError,  # noqa: F401
                   VideoMeta, library_versions)
from .hdf5_store import SUFFIXES as HDF5_SUFFIXES, HDF5Store
from .zarr_store import ZarrStore

BACKENDS: dict[str, type] = {"zarr": ZarrStore, "hdf5": HDF5Store}


def backend_for(path: Path) -> str:
    path = Path(path)
    if path.suffix in HDF5_SUFFIXES:
        return "hdf5"
    return "zarr"


def create_store(path, backend: str | None = None) -> Store:
    backend = backend or backend_for(path)
    if backend not in BACKENDS:
        raise StoreError(f"unknown store backend {backend!r} (known: {', '.join(sorted(BACKENDS))})")
    return BACKENDS[backend].create(Path(path))


def open_store(path) -> Store:
    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path}: no such store")
    return BACKENDS[backend_for(path)].open(path)


def export_store(src: Store, dst_path, backend: str = "hdf5", ids=None) -> Store:
    """Copy ``src`` (all or ``ids``) into a new store at ``dst_path``; returns the new store."""
    dst_path = Path(dst_path)
    if dst_path.exists():
        raise StoreError(f"{dst_path}: already exists; export writes a new store")
    dst = create_store(dst_path, backend)
    for vid in (src.ids() if ids is None else ids):
        recs = src.records(vid)
        arrays = src.read(vid, list(recs))
        dst.put(src.meta(vid), arrays, recs, replace=True)
    dst.commit()
    for key, value in src.info().items():
        if key not in ("schema_version", "backend", "generation"):
            dst.set_info(key, value)
    return dst
