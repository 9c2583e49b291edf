"""The direct chunk writer and reader (``store/zarr_chunks.py``) against zarr's own: the very
files zarr writes, the same rows for every dtype and row range, errors for missing or damaged
chunks, zarr for other layouts, and no stale rows from the chunk kept decoded."""
from __future__ import annotations

import os
import re

import numpy as np
import pytest
import zarr

from l2l.store import StoreError, zarr_chunks
from l2l.store import zarr_store
from l2l.store.zarr_store import _write_array


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    """Chunks of 64 KiB, so that small arrays span many."""
    monkeypatch.setattr(zarr_store, "CHUNK_BYTES", 64 << 10)


def _array(tmp_path, name, a, blocks=3):
    (tmp_path / "g").mkdir(exist_ok=True)
    _write_array(tmp_path / "g" / name, a.shape, a.dtype, np.array_split(a, blocks))
    return tmp_path / "g" / name, zarr.open_array(str(tmp_path / "g" / name), mode="r")


def _samples():
    rng = np.random.default_rng(0)
    ramp = np.arange(251 * 112 * 112 * 3, dtype=np.int64).reshape(251, 112, 112, 3)
    return {"frames": (ramp // 7 % 251).astype(np.uint8),                  # compresses: zstd
            "logmel": np.round(np.sin(ramp[:301, :101, :40, 0] / 999), 2).astype(np.float16),
            "image": rng.standard_normal((1000, 512)).astype(np.float16),  # raw + crc32c
            "times": np.linspace(0, 99, 30000),
            "ids": rng.integers(-9, 9, (20000, 3), dtype=np.int64)}


@pytest.mark.parametrize("name", list(_samples()))
def test_the_files_written_are_those_zarr_writes(tmp_path, name):
    a = _samples()[name]
    path, z = _array(tmp_path, name, a, blocks=4)
    by_zarr = zarr.open_group(str(tmp_path / "zarr"), mode="w").create_array(
        name, shape=a.shape, dtype=a.dtype, chunks=z.chunks, compressors=z.compressors,
        attributes=dict(z.attrs), config={"write_empty_chunks": True})
    by_zarr[:] = a
    ours = {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()}
    theirs = {p.relative_to(tmp_path / "zarr" / name): p.read_bytes()
              for p in (tmp_path / "zarr" / name).rglob("*") if p.is_file()}
    assert len(ours) == len(theirs) > 3 and ours.keys() == theirs.keys()
    assert all(ours[k] == theirs[k] for k in ours), [str(k) for k in ours if ours[k] != theirs[k]]
    assert np.array_equal(z[:], a)


def test_the_rows_given_must_fill_the_array(tmp_path):
    with pytest.raises(ValueError, match="5 rows given for an array of 6"):
        zarr_chunks.write_array(tmp_path / "a", (6, 2), np.float32, [np.zeros((5, 2), np.float32)],
                                chunk_rows=4, zstd_level=None)


@pytest.mark.parametrize("name", list(_samples()))
def test_every_row_range_reads_as_zarr_reads_it(tmp_path, name):
    a = _samples()[name]
    path, z = _array(tmp_path, name, a)
    lay = zarr_chunks.layout(path)
    assert lay is not None and 3 * lay.rows < len(a), "the sample must span several chunks"
    assert lay.zstd == (name in ("frames", "logmel", "ids"))   # the others hardly compress
    r, n = lay.rows, len(a)
    ranges = [(0, n), (0, 0), (n, n), (0, 1), (n - 1, n), (1, r), (r, 2 * r), (r - 1, r + 1),
              (r // 2, n - r // 3), (3, 3 + r // 2), (3 + r // 2, 2 * r + 5), (2 * r + 5, n)]
    for lo, hi in ranges:
        got = zarr_chunks.read_rows(lay, lo, hi)
        assert got.dtype == a.dtype and np.array_equal(got, z[lo:hi]), (lo, hi)
        into = np.full((hi - lo, *a.shape[1:]), 7, a.dtype)
        zarr_chunks.read_rows(lay, lo, hi, into)
        assert np.array_equal(into, a[lo:hi]), (lo, hi)


def test_one_thread_reads_the_same(tmp_path, monkeypatch):
    a = _samples()["frames"]
    path, _ = _array(tmp_path, "frames", a)
    monkeypatch.setattr(zarr_chunks, "THREADS", 1)
    lay = zarr_chunks.layout(path)
    assert np.array_equal(zarr_chunks.read_rows(lay, 5, len(a) - 5), a[5:-5])


@pytest.mark.parametrize("name", ["logmel", "image"])                 # zstd, raw
def test_a_damaged_short_or_missing_chunk_is_an_error_naming_the_file(tmp_path, name):
    a = _samples()[name]
    path, _ = _array(tmp_path, name, a)
    lay = zarr_chunks.layout(path)
    chunk = zarr_chunks._chunk_path(lay, 1)
    where = re.escape(str(chunk))
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 3] ^= 0x01
    chunk.write_bytes(bytes(raw))
    with pytest.raises(StoreError, match=where + ": damaged chunk"):
        zarr_chunks.read_rows(lay, 0, len(a))
    assert np.array_equal(zarr_chunks.read_rows(lay, 0, lay.rows), a[:lay.rows])   # chunk 0 is sound
    chunk.write_bytes(bytes(raw[:-9]))
    with pytest.raises(StoreError, match=where + ": (damaged chunk|chunk holds)"):
        zarr_chunks.read_rows(lay, lay.rows, 2 * lay.rows)
    chunk.unlink()
    with pytest.raises(StoreError, match=where + ": chunk cannot be read"):
        zarr_chunks.read_rows(lay, lay.rows, lay.rows + 1)
    with pytest.raises(StoreError, match="outside"):
        zarr_chunks.read_rows(lay, 0, len(a) + 1)


def test_arrays_of_another_layout_are_left_to_zarr(tmp_path):
    a = _samples()["image"]
    g = zarr.open_group(str(tmp_path / "g"), mode="w")
    g.create_array("plain", data=a, chunks=(100, 512))                     # zarr's defaults
    g.create_array("gzip", data=a, chunks=(100, 512), compressors=[zarr.codecs.GzipCodec()],
                   attributes={zarr_chunks.WHOLE: True})
    g.create_array("tiled", data=a, chunks=(100, 128), attributes={zarr_chunks.WHOLE: True})
    for name in ("plain", "gzip", "tiled"):
        assert zarr_chunks.layout(tmp_path / "g" / name) is None, name
    assert zarr_chunks.layout(tmp_path / "g" / "missing") is None
    _, z = _array(tmp_path, "ours", a)
    assert zarr_chunks.layout(tmp_path / "g" / "ours") is not None


def test_the_chunk_kept_decoded_is_not_used_once_its_file_changes(tmp_path):
    a = _samples()["logmel"]
    path, _ = _array(tmp_path, "logmel", a)
    lay = zarr_chunks.layout(path)
    r = lay.rows
    assert np.array_equal(zarr_chunks.read_rows(lay, 0, r + 3), a[:r + 3])      # keeps chunk 1
    assert (lay.path, 1) in zarr_chunks._KEPT
    b = -a
    other, _ = _array(tmp_path, "other", b)
    os.replace(other / "c" / "1" / "0" / "0", path / "c" / "1" / "0" / "0")
    assert np.array_equal(zarr_chunks.read_rows(lay, r + 3, 2 * r), b[r + 3:2 * r])


def test_a_raw_chunk_checked_whole_once_is_then_read_in_part(tmp_path, monkeypatch):
    """A streamed batch wants a few rows from each of many chunks: after one whole read whose
    crc32c matched, a raw chunk's rows are read alone, until its file changes."""
    a = _samples()["image"]
    path, _ = _array(tmp_path, "image", a)
    lay = zarr_chunks.layout(path)
    r = lay.rows
    monkeypatch.setattr(zarr_chunks, "KEPT_CHUNKS", 0)    # no decoded chunk kept: not that path
    whole, real = [], zarr_chunks._decode
    monkeypatch.setattr(zarr_chunks, "_decode", lambda *args: (whole.append(args[1]), real(*args)))
    assert np.array_equal(zarr_chunks.read_rows(lay, r + 1, r + 5), a[r + 1:r + 5])
    assert whole == [1]
    for lo, hi in ((r + 7, r + 9), (r, r + 1), (2 * r - 3, 2 * r)):
        assert np.array_equal(zarr_chunks.read_rows(lay, lo, hi), a[lo:hi])
    assert whole == [1]                                   # the same file: its rows alone
    chunk = zarr_chunks._chunk_path(lay, 1)
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    (tmp_path / "damaged").write_bytes(bytes(raw))
    os.replace(tmp_path / "damaged", chunk)               # another file: checked whole again
    with pytest.raises(StoreError, match=re.escape(str(chunk)) + ": damaged chunk"):
        zarr_chunks.read_rows(lay, r + 1, r + 2)
    assert whole == [1, 1]


def test_zarr_is_one_whose_internals_the_direct_reader_uses(tmp_path):
    """Loud, where the reader itself is quiet: ``zarr_chunks`` leaves any array whose metadata
    zarr's internals no longer parse to zarr (correct, but the fast path silently gone).  So:
    the installed zarr is inside setup.cfg's bound, the internals it uses import from where it
    imports them, and every l2l array of every dtype the store writes is recognised as its own."""
    import configparser
    import pathlib
    cfg = configparser.ConfigParser()
    cfg.read(pathlib.Path(__file__).parents[1] / "setup.cfg")
    bound = [r for r in cfg["options"]["install_requires"].split() if r.startswith("zarr")]
    assert bound == ["zarr>=3.1,<3.2"], bound
    version = tuple(int(x) for x in re.findall(r"\d+", zarr.__version__)[:2])
    assert (3, 1) <= version < (3, 2), f"zarr {zarr.__version__} is outside setup.cfg's bound {bound}"
    from zarr.codecs import BytesCodec, Crc32cCodec, ZstdCodec  # noqa: F401
    from zarr.core.buffer import default_buffer_prototype  # noqa: F401
    from zarr.core.chunk_grids import RegularChunkGrid  # noqa: F401
    from zarr.core.metadata.v3 import ArrayV3Metadata
    assert callable(ArrayV3Metadata.from_dict) and hasattr(ArrayV3Metadata, "encode_chunk_key")
    for name, a in _samples().items():
        path, _ = _array(tmp_path, name, a[:200])
        lay = zarr_chunks.layout(path)
        assert lay is not None, (f"zarr {zarr.__version__}: l2l's own {name} array ({a.dtype}) is "
                                 "not recognised by store/zarr_chunks.py (its internals changed)")
        assert np.array_equal(zarr_chunks.read_rows(lay, 0, 200), a[:200])
