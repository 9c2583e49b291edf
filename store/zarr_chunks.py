"""Rows of l2l's own Zarr segment arrays, read straight from their chunk files into the caller's
buffer, a few chunks at a time in threads.

Why: zarr's read path decompresses every chunk into a fresh buffer (page faults), then copies it
into the output, under asyncio; on 2 cores that costs about 2.5 times the decompression itself
(frames: 34 against 13 us per moment, ``benchmarks/bench_overhead.py`` and the issue 11 note).

What: the arrays l2l writes (``zarr_store._write_array``) have one layout: a regular grid of
chunks that span every axis but the first, codecs ``bytes`` (little-endian), then ``zstd`` or
nothing, then ``crc32c``, and every chunk file written (the ``l2l_every_chunk_crc32c``
attribute).  For exactly those arrays (``layout``), ``read_rows`` reads each chunk file, checks
its crc32c as zarr does (with ``google_crc32c``, zarr's own dependency) and decompresses it with
numcodecs' zstd (zarr's own codec) straight into the output rows; a chunk only partly wanted goes
through a per-thread scratch buffer.  zstd releases the GIL, so the chunks of one read spread
over ``THREADS`` threads.  Every other array (another layout or codec, written by another tool)
is read by zarr: the stored format is plain Zarr either way, and a test checks that both paths
give the same bytes for every dtype l2l stores, and that a damaged chunk is an error.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import os
import sys
import threading
from pathlib import Path

import numpy as np

from .base import StoreError

THREADS = max(1, min(4, os.cpu_count() or 1))   # chunks decompressed at once, per read
WHOLE = "l2l_every_chunk_crc32c"   # array attribute: every chunk file written, each with a crc32c


@dataclasses.dataclass(frozen=True)
class Layout:
    """What ``read_rows`` needs to know of one array."""
    path: Path                   # the array's folder
    shape: tuple[int, ...]
    dtype: np.dtype
    rows: int                    # rows per chunk
    zstd: bool                   # chunks are zstd frames (else raw bytes)
    keys: object                 # the array's chunk key encoding (zarr's)


def layout(path: Path) -> Layout | None:
    """The layout of the array in folder ``path`` when it is l2l's own (see the module
    docstring), from its ``zarr.json`` (parsed by zarr's metadata class); else None (read it
    with zarr)."""
    from zarr.codecs import BytesCodec, Crc32cCodec, ZstdCodec
    from zarr.core.chunk_grids import RegularChunkGrid
    from zarr.core.metadata.v3 import ArrayV3Metadata
    try:
        m = ArrayV3Metadata.from_dict(json.loads((Path(path) / "zarr.json").read_text()))
        dtype = np.dtype(m.dtype.to_native_dtype())
    except Exception:                          # not zarr 3, or not readable: zarr decides
        return None
    grid, codecs = m.chunk_grid, list(m.codecs)
    if (not m.attributes.get(WHOLE) or sys.byteorder != "little" or len(m.shape) < 1
            or not isinstance(grid, RegularChunkGrid) or tuple(grid.chunk_shape[1:]) != tuple(m.shape[1:])
            or len(codecs) not in (2, 3) or not isinstance(codecs[0], BytesCodec)
            or not isinstance(codecs[-1], Crc32cCodec)
            or (len(codecs) == 3 and not isinstance(codecs[1], ZstdCodec))
            or dtype.byteorder == ">" or dtype.hasobject):
        return None
    return Layout(Path(path), tuple(m.shape), dtype, int(grid.chunk_shape[0]), len(codecs) == 3,
                  m.chunk_key_encoding)


def read_rows(lay: Layout, lo: int, hi: int, out: np.ndarray | None = None) -> np.ndarray:
    """Rows ``lo:hi`` of the array, into ``out`` (C-contiguous, shape and dtype of the rows) or a
    new array.  A missing or damaged chunk file raises ``StoreError`` naming it."""
    if not 0 <= lo <= hi <= lay.shape[0]:
        raise StoreError(f"{lay.path}: rows {lo}:{hi} outside 0:{lay.shape[0]}")
    if out is None:
        out = np.empty((hi - lo, *lay.shape[1:]), lay.dtype)
    elif out.shape != (hi - lo, *lay.shape[1:]) or out.dtype != lay.dtype or not out.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous {(hi - lo, *lay.shape[1:])} {lay.dtype}")
    r = lay.rows
    jobs = [(c, max(lo, c * r), min(hi, (c + 1) * r)) for c in range(lo // r, -(-hi // r))]
    if len(jobs) <= 1 or THREADS == 1:
        for job in jobs:
            _chunk(lay, job, lo, out)
    else:
        pool = _pool()
        for f in [pool.submit(_chunk, lay, job, lo, out) for job in jobs]:
            f.result()
    return out


_LOCAL = threading.local()
KEPT_CHUNKS = 8                   # decoded chunks kept where a read ended inside one
_KEPT: "collections.OrderedDict[tuple[Path, int], tuple]" = collections.OrderedDict()
_KEPT_LOCK = threading.Lock()


def _scratch(nbytes: int) -> np.ndarray:
    """This thread's scratch buffer of at least ``nbytes`` (kept: its pages are touched once)."""
    buf = getattr(_LOCAL, "buf", None)
    if buf is None or buf.nbytes < nbytes:
        buf = _LOCAL.buf = np.empty(nbytes, np.uint8)
    return buf[:nbytes]


def _chunk(lay: Layout, job: tuple[int, int, int], lo: int, out: np.ndarray) -> None:
    c, a, b = job
    r = lay.rows
    whole = a == c * r and b - a == r
    if whole:
        _decode(lay, c, out[a - lo:b - lo].reshape(-1).view(np.uint8))
        return
    key = (lay.path, c)
    with _KEPT_LOCK:
        kept = _KEPT.get(key)
    rows = None
    if kept is not None:
        stamp = _stamp(lay, c)
        rows = kept[1] if stamp is not None and kept[0] == stamp else None
    if rows is None:
        nbytes = r * int(np.prod(lay.shape[1:], dtype=np.int64)) * lay.dtype.itemsize
        # The chunk a read ends inside is where the next read of this array usually begins
        # (groups of videos are read in their stored order): keep it decoded.
        keep = b < min((c + 1) * r, lay.shape[0])
        buf = np.empty(nbytes, np.uint8) if keep else _scratch(nbytes)
        _decode(lay, c, buf)
        rows = buf.view(lay.dtype).reshape((r, *lay.shape[1:]))
        if keep:
            with _KEPT_LOCK:
                _KEPT[key] = (_stamp(lay, c), rows)
                while len(_KEPT) > KEPT_CHUNKS:
                    _KEPT.popitem(last=False)
    out[a - lo:b - lo] = rows[a - c * r:b - c * r]


def _chunk_path(lay: Layout, c: int) -> Path:
    return lay.path / lay.keys.encode_chunk_key((c,) + (0,) * (len(lay.shape) - 1))


def _stamp(lay: Layout, c: int) -> tuple | None:
    """Which file chunk ``c`` is (a kept chunk is used only while it is the same file)."""
    try:
        st = os.stat(_chunk_path(lay, c))
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _decode(lay: Layout, c: int, dst: np.ndarray) -> None:
    """Chunk ``c`` into ``dst`` (its bytes), after checking its crc32c."""
    from google_crc32c import value as crc32c
    path = _chunk_path(lay, c)
    try:
        data = np.frombuffer(path.read_bytes(), np.uint8)
    except OSError as e:
        raise StoreError(f"{path}: chunk cannot be read ({e.strerror or e})") from None
    if len(data) < 4 or crc32c(data[:-4]) != int.from_bytes(data[-4:].tobytes(), "little"):
        raise StoreError(f"{path}: damaged chunk (its crc32c does not match its bytes)")
    if lay.zstd:
        try:
            _zstd().decode(data[:-4], out=dst)
        except (RuntimeError, ValueError) as e:
            raise StoreError(f"{path}: damaged chunk ({e})") from None
    elif len(data) - 4 == len(dst):
        dst[:] = data[:-4]
    else:
        raise StoreError(f"{path}: chunk holds {len(data) - 4} bytes, not {len(dst)}")


_CODEC: list = []
_POOL: list = []                  # [(pid, executor)]: a forked process makes its own
_POOL_LOCK = threading.Lock()


def _zstd():
    """numcodecs' zstd codec (stateless: one serves every thread)."""
    if not _CODEC:
        from numcodecs import Zstd
        _CODEC.append(Zstd())
    return _CODEC[0]


def _pool():
    from concurrent.futures import ThreadPoolExecutor
    with _POOL_LOCK:
        if not _POOL or _POOL[0][0] != os.getpid():
            _POOL[:] = [(os.getpid(), ThreadPoolExecutor(THREADS, thread_name_prefix="l2l-chunks"))]
        return _POOL[0][1]
