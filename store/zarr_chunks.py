"""l2l's own Zarr arrays, written and read as chunk files directly: rows go from the caller's
buffer into the files and back, a few chunks at a time in threads.

Why: zarr's read path decompresses every chunk into a fresh buffer (page faults), then copies it
into the output, under asyncio; on 2 cores that costs about 2.5 times the decompression itself
(frames: 34 against 13 us per moment).  Its write path costs about 1.5 ms per array created or
written (an event-loop round trip and a copy into a padded chunk buffer), most of a small
parcel's write (``benchmarks/bench_overhead.py``; the issue 11 note).

What: the arrays l2l writes have one layout: a regular grid of chunks that span every axis but
the first, codecs ``bytes`` (little-endian), then ``zstd`` or nothing, then ``crc32c``, and
every chunk file written (the ``l2l_every_chunk_crc32c`` attribute).  ``write_array`` writes
such an array with zarr's own pieces: its metadata document comes from zarr's metadata class,
each chunk is numcodecs' zstd (zarr's codec) and a ``google_crc32c`` (zarr's crc32c), and the
files are byte for byte those zarr writes (a test compares them).  ``read_rows`` reads, for
exactly that layout (``layout``), each chunk file, checks its crc32c as zarr does and
decompresses it straight into the output rows; a chunk only partly wanted goes through a
scratch buffer.  zstd releases the GIL, so the chunks of one read spread over ``THREADS``
threads.  Every other array (another layout or codec, written by another tool) is read by zarr:
the stored format is plain Zarr either way.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import json
import os
import sys
import threading
from pathlib import Path

import numpy as np

from .base import StoreError

THREADS = max(1, min(4, os.cpu_count() or 1))   # chunks decompressed at once, per read,
                                                # unless the store's reader says (read_threads)
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
    docstring), from its ``zarr.json``; else None (read it with zarr)."""
    try:
        doc = json.loads((Path(path) / "zarr.json").read_text())
        shape = [int(n) for n in doc["shape"]]
        grid = doc["chunk_grid"]["configuration"]
        rows = int(grid["chunk_shape"][0])
        # What else the document says, with one row for shape and chunk: it decides the rest,
        # and is parsed by zarr once per process (segments of one field share it).
        rest = json.dumps({**doc, "shape": [1, *shape[1:]], "chunk_grid": {
            **doc["chunk_grid"], "configuration": {**grid, "chunk_shape": [1, *grid["chunk_shape"][1:]]}}},
            sort_keys=True)
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None
    kind = _kind(rest)
    if kind is None or rows < 1 or shape[0] < 0:
        return None
    return Layout(Path(path), tuple(shape), kind[0], rows, kind[1], kind[2])


@functools.lru_cache(maxsize=256)
def _kind(doc: str) -> tuple | None:
    """(dtype, zstd?, chunk key encoding) of a one-row array's metadata document ``doc`` when
    it is l2l's layout (parsed by zarr's metadata class), else None."""
    from zarr.codecs import BytesCodec, Crc32cCodec, ZstdCodec
    from zarr.core.chunk_grids import RegularChunkGrid
    from zarr.core.metadata.v3 import ArrayV3Metadata
    try:
        m = ArrayV3Metadata.from_dict(json.loads(doc))
        dtype = np.dtype(m.dtype.to_native_dtype())
    except Exception:                          # not zarr 3, or not readable: zarr decides
        return None
    grid, codecs = m.chunk_grid, list(m.codecs)
    if (not m.attributes.get(WHOLE) or sys.byteorder != "little" or len(m.shape) < 1
            or not isinstance(grid, RegularChunkGrid) or tuple(grid.chunk_shape) != tuple(m.shape)
            or len(codecs) not in (2, 3) or not isinstance(codecs[0], BytesCodec)
            or not isinstance(codecs[-1], Crc32cCodec)
            or (len(codecs) == 3 and not isinstance(codecs[1], ZstdCodec))
            or dtype.byteorder == ">" or dtype.hasobject):
        return None
    return dtype, len(codecs) == 3, m.chunk_key_encoding


def write_array(path: Path, shape: tuple[int, ...], dtype, blocks, *, chunk_rows: int,
                zstd_level: int | None) -> None:
    """Write a new array of l2l's layout in folder ``path`` (which must not exist): its
    ``zarr.json``, then its row ``blocks`` (arrays of ``dtype`` whose rows add up to
    ``shape[0]``) in chunks of ``chunk_rows`` rows, zstd at ``zstd_level`` (None: none), each
    ending with its crc32c; the last chunk is padded with zeros (zarr's fill value) as zarr
    pads it."""
    from google_crc32c import value as crc32c
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.metadata.v3 import ArrayV3Metadata
    dtype = np.dtype(dtype)
    doc = _template(dtype.str, zstd_level)
    doc.update(shape=list(shape), chunk_grid={"name": "regular", "configuration": {
        "chunk_shape": [chunk_rows, *shape[1:]]}})
    meta = ArrayV3Metadata.from_dict(doc)
    path = Path(path)
    path.mkdir()
    (path / "zarr.json").write_bytes(meta.to_buffer_dict(default_buffer_prototype())["zarr.json"].to_bytes())
    chunk = np.zeros((chunk_rows, *shape[1:]), dtype)
    codec = _zstd(zstd_level) if zstd_level is not None else None
    filled, c, written = 0, 0, 0
    for b in blocks:
        b = np.asarray(b, dtype)
        while len(b):
            take = min(len(b), chunk_rows - filled)
            chunk[filled:filled + take] = b[:take]
            filled, b = filled + take, b[take:]
            if filled == chunk_rows:
                _write_chunk(path, meta, c, chunk, codec, crc32c)
                c, filled, written = c + 1, 0, written + chunk_rows
    if filled:
        chunk[filled:] = 0
        _write_chunk(path, meta, c, chunk, codec, crc32c)
        written += filled
    if written != shape[0]:
        raise ValueError(f"{path}: {written} rows given for an array of {shape[0]}")


def _write_chunk(path: Path, meta, c: int, chunk: np.ndarray, codec, crc32c) -> None:
    raw = chunk.reshape(-1).view(np.uint8)
    data = np.frombuffer(codec.encode(raw), np.uint8) if codec is not None else raw
    f = path / meta.encode_chunk_key((c,) + (0,) * (chunk.ndim - 1))
    f.parent.mkdir(parents=True, exist_ok=True)
    with open(f, "wb") as out:
        out.write(data)
        out.write(np.uint32(crc32c(data)).tobytes())


@functools.lru_cache(maxsize=None)
def _template(dtype: str, zstd_level: int | None) -> dict:
    """zarr's metadata document for a (1,) array of ``dtype`` with l2l's codecs and attributes
    (made by zarr, in memory, once per process); ``write_array`` sets the shape and chunks."""
    import zarr
    from zarr.codecs import Crc32cCodec, ZstdCodec
    from zarr.storage import MemoryStore
    compressors = ([ZstdCodec(level=zstd_level)] if zstd_level is not None else []) + [Crc32cCodec()]
    z = zarr.create_array(MemoryStore(), shape=(1,), dtype=np.dtype(dtype), chunks=(1,),
                          compressors=compressors, attributes={WHOLE: True},
                          config={"write_empty_chunks": True})
    return json.loads(json.dumps(z.metadata.to_dict(), default=list))


def read_rows(lay: Layout, lo: int, hi: int, out: np.ndarray | None = None) -> np.ndarray:
    """Rows ``lo:hi`` of the array, into ``out`` (C-contiguous, shape and dtype of the rows) or a
    new array.  A missing or damaged chunk file raises ``StoreError`` naming it."""
    if out is None:
        out = np.empty((max(0, hi - lo), *lay.shape[1:]), lay.dtype)
    read_runs([(lay, lo, hi, out)])
    return out


def read_runs(runs, threads: int | None = None) -> None:
    """Each ``(layout, lo, hi, out)`` of ``runs``: rows ``lo:hi`` into ``out``; the chunks of all
    runs are decompressed together, ``threads`` (default ``THREADS``) at a time."""
    threads = max(1, threads or THREADS)
    jobs = []
    for lay, lo, hi, out in runs:
        if not 0 <= lo <= hi <= lay.shape[0]:
            raise StoreError(f"{lay.path}: rows {lo}:{hi} outside 0:{lay.shape[0]}")
        if out.shape != (hi - lo, *lay.shape[1:]) or out.dtype != lay.dtype or not out.flags.c_contiguous:
            raise ValueError(f"out must be C-contiguous {(hi - lo, *lay.shape[1:])} {lay.dtype}")
        r = lay.rows
        jobs += [(lay, (c, max(lo, c * r), min(hi, (c + 1) * r)), lo, out)
                 for c in range(lo // r, -(-hi // r))]
    if len(jobs) <= 1 or threads == 1:
        for job in jobs:
            _chunk(*job)
        return
    pool = _pool(threads)
    futures = [pool.submit(_chunk, *job) for job in jobs]
    errors = [f.exception() for f in futures]        # (all finished: none writes into out later)
    for e in errors:
        if e is not None:
            raise e


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
    if not lay.zstd and _read_verified(lay, c, a, b, out[a - lo:b - lo]):
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


# Raw chunk files whose whole bytes matched their crc32c in this process, by (array, chunk) ->
# the file's stamp then.  A read of a few rows of such a file (the same file: same inode, size
# and mtime, checked on the open descriptor) reads just those rows: a streamed training batch
# reads one video's rows from each of hundreds of 4 MB chunks, which read and checked whole
# cost about 20 times the rows wanted (issue 20).  Compressed chunks are always read whole.
VERIFIED_MAX = 1 << 20
_VERIFIED: dict[tuple[Path, int], tuple] = {}


def _read_verified(lay: Layout, c: int, a: int, b: int, dst: np.ndarray) -> bool:
    """Rows ``a:b`` (inside raw chunk ``c``) into ``dst`` by one positioned read, if this
    process has checked that file whole before; False (nothing read) otherwise."""
    stamp = _VERIFIED.get((lay.path, c))
    if stamp is None:
        return False
    row = int(np.prod(lay.shape[1:], dtype=np.int64)) * lay.dtype.itemsize
    view = dst.reshape(-1).view(np.uint8)
    try:
        fd = os.open(_chunk_path(lay, c), os.O_RDONLY)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if (st.st_ino, st.st_size, st.st_mtime_ns) != stamp:
            return False
        return os.preadv(fd, [view], (a - c * lay.rows) * row) == len(view)
    except OSError:
        return False
    finally:
        os.close(fd)


def _chunk_path(lay: Layout, c: int) -> Path:
    return lay.path / lay.keys.encode_chunk_key((c,) + (0,) * (len(lay.shape) - 1))


def _stamp(lay: Layout, c: int) -> tuple | None:
    """Which file chunk ``c`` is (a kept chunk is used only while it is the same file)."""
    try:
        st = os.stat(_chunk_path(lay, c))
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def chunk_sound(lay: Layout, c: int) -> bool:
    """Whether chunk file ``c`` is there and its bytes match the crc32c at its end (no
    decompression: commit's check of a staged parcel)."""
    from google_crc32c import value as crc32c
    try:
        data = np.frombuffer(_chunk_path(lay, c).read_bytes(), np.uint8)
    except OSError:
        return False
    return len(data) > 4 and crc32c(data[:-4]) == int.from_bytes(data[-4:].tobytes(), "little")


def _decode(lay: Layout, c: int, dst: np.ndarray) -> None:
    """Chunk ``c`` into ``dst`` (its bytes), after checking its crc32c (a raw chunk that
    passes is noted in ``_VERIFIED``)."""
    from google_crc32c import value as crc32c
    path = _chunk_path(lay, c)
    try:
        if not lay.zstd:                     # raw bytes: read straight into place
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                n = f.readinto(dst)
                tail = f.read(5)
            if n != len(dst) or len(tail) != 4:
                raise StoreError(f"{path}: chunk holds {n + len(tail) - 4} bytes, not {len(dst)}")
            if crc32c(dst) != int.from_bytes(tail, "little"):
                raise StoreError(f"{path}: damaged chunk (its crc32c does not match its bytes)")
            if len(_VERIFIED) >= VERIFIED_MAX:
                _VERIFIED.clear()
            _VERIFIED[(lay.path, c)] = (st.st_ino, st.st_size, st.st_mtime_ns)
            return
        data = np.frombuffer(path.read_bytes(), np.uint8)
    except OSError as e:
        raise StoreError(f"{path}: chunk cannot be read ({e.strerror or e})") from None
    if len(data) < 4 or crc32c(data[:-4]) != int.from_bytes(data[-4:].tobytes(), "little"):
        raise StoreError(f"{path}: damaged chunk (its crc32c does not match its bytes)")
    try:
        _zstd().decode(data[:-4], out=dst)
    except (RuntimeError, ValueError) as e:
        raise StoreError(f"{path}: damaged chunk ({e})") from None


_CODECS: dict = {}
_POOL: dict = {}                  # "pid", and threads -> executor: a forked process makes its own
_POOL_LOCK = threading.Lock()


def _zstd(level: int = 0):
    """numcodecs' zstd codec at ``level`` (stateless: one serves every thread; decoding does
    not depend on the level)."""
    if level not in _CODECS:
        from numcodecs import Zstd
        _CODECS[level] = Zstd(level=level)
    return _CODECS[level]


def _pool(threads: int):
    """This process's pool of ``threads`` chunk threads (one per size asked: a pool in use is
    never shut down under another reader)."""
    from concurrent.futures import ThreadPoolExecutor
    with _POOL_LOCK:
        if _POOL.get("pid") != os.getpid():
            _POOL.clear()
            _POOL["pid"] = os.getpid()
        if threads not in _POOL:
            _POOL[threads] = ThreadPoolExecutor(threads, thread_name_prefix="l2l-chunks")
        return _POOL[threads]
