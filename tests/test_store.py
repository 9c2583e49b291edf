"""The feature store: round trips, provenance, atomic commits, both backends, plain readers; a shard
staged at once becomes one segment by a rename (no array copied at commit); the backend is the one
the store records; verify returns structured problems; export writes only its file."""
from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest

from l2l.store import (ArrayRecord, Failure, Put, StoreError, VideoMeta, create_store, export_store,
                       open_store)


def _meta(vid, n, subset="training"):
    return VideoMeta(id=vid, labels=("a",), subset=subset, duration=n / 2, fps=30.0,
                     num_moments=n, has_audio=True, source=f"/x/{vid}.mp4")


def _rec(config=None):
    return ArrayRecord(stage="s", config=config or {"type": "s", "k": 1}, key="key1",
                       upstream={"source": "fp"}, versions={"numpy": np.__version__})


def _fill(store, n_videos=4, seed=0):
    rng = np.random.default_rng(seed)
    data = {}
    for i in range(n_videos):
        n = 3 + 2 * i
        arrays = {"logmel": rng.standard_normal((n, 101, 40)).astype(np.float16),
                  "frames": rng.integers(0, 255, (n, 112, 112, 3), dtype=np.uint8)}
        store.put(_meta(f"v{i}", n), dict(arrays), {k: _rec() for k in arrays})
        data[f"v{i}"] = arrays
    store.commit()
    return data


@pytest.mark.parametrize("name", ["s.zarr", "s.h5"])
def test_round_trip_and_read_many(tmp_path, name):
    st = create_store(tmp_path / name)
    data = _fill(st)
    st = open_store(tmp_path / name)
    assert st.ids() == sorted(data)
    for vid, arrays in data.items():
        got = st.read(vid, ["logmel", "frames"])
        assert all(np.array_equal(got[k], arrays[k]) for k in arrays)
        assert st.records(vid)["logmel"].key == "key1"
        assert st.records(vid)["logmel"].versions["numpy"] == np.__version__
    b = st.read_many(["logmel"])
    for i, vid in enumerate(b.ids):
        assert np.array_equal(b.video(i, "logmel"), data[vid]["logmel"])
    assert st.verify() == []


def test_staged_puts_are_invisible_until_commit_and_never_doubled(tmp_path):
    st = create_store(tmp_path / "s")
    _fill(st, 2)
    st.put(_meta("v9", 4), {"logmel": np.zeros((4, 101, 40), np.float16)}, {"logmel": _rec()})
    assert "v9" not in open_store(tmp_path / "s").ids()
    st.commit()
    st.commit()                                             # idempotent
    st2 = open_store(tmp_path / "s")
    assert st2.ids() == ["v0", "v1", "v9"]
    # a second put of the same video replaces, never duplicates
    st2.put(_meta("v9", 4), {"logmel": np.ones((4, 101, 40), np.float16)}, {"logmel": _rec()})
    st2.commit()
    st3 = open_store(tmp_path / "s")
    assert st3.ids() == ["v0", "v1", "v9"]
    assert np.all(st3.read("v9", ["logmel"])["logmel"] == 1)
    assert st3.verify() == []


def test_mixed_configs_are_never_silently_mixed(tmp_path):
    st = create_store(tmp_path / "s")
    _fill(st, 2)
    st.put(_meta("v0", 3), {"logmel": np.zeros((3, 101, 40), np.float16)},
           {"logmel": _rec({"type": "s", "k": 2})})
    st.commit()
    with pytest.raises(StoreError, match="different configs"):
        st.read_many(["logmel"])
    assert any("mixes 2 configs" in str(p) for p in st.verify())


def test_failures_are_recorded_and_cleared_by_success(tmp_path):
    st = create_store(tmp_path / "s")
    st.record_failure(Failure(id="v0", stage="decode", reason="x.mp4: truncated\nmore"))
    st.commit()
    (f,) = st.failures()
    assert f.id == "v0" and f.reason == "x.mp4: truncated more"
    _fill(st, 1)
    assert st.failures() == []


def test_verify_names_the_video_with_a_corrupted_chunk(tmp_path):
    st = create_store(tmp_path / "s")
    _fill(st, 3)
    entry = st.index["videos"]["v2"]["fields"]["logmel"]
    chunk_dir = tmp_path / "s" / "segments" / entry["seg"] / entry["arr"] / "c"
    chunks = sorted(p for p in chunk_dir.rglob("*") if p.is_file())
    raw = bytearray(chunks[-1].read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    chunks[-1].write_bytes(bytes(raw))
    problems = open_store(tmp_path / "s").verify()
    assert problems and any(str(p).startswith("v2/logmel") for p in problems)


def test_the_readme_recipe_reads_the_store_without_l2l(tmp_path):
    """The README's "Reading it with plain zarr" block, run as written (paths, id and field
    substituted) in a process that never imports l2l."""
    import re
    from pathlib import Path
    st = create_store(tmp_path / "s")
    data = _fill(st, 2)
    export_store(st, tmp_path / "e.h5")
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"Reading it with plain zarr.*?```python\n(.*?)```", readme, re.S).group(1)
    code = (block.replace("anet.zarr", str(tmp_path / "s")).replace("anet.h5", str(tmp_path / "e.h5"))
            .replace("VIDEO_ID", "v1").replace('"image"', '"logmel"')) + """
import sys, numpy as np
np.save(sys.argv[1], x); np.save(sys.argv[2], y); np.save(sys.argv[3], lazy.compute())
assert not any(m == "l2l" or m.startswith("l2l.") for m in sys.modules), "l2l imported"
print(g.attrs["l2l"]["schema_version"])
"""
    outs = [tmp_path / f"{k}.npy" for k in "xyz"]
    out = subprocess.run([sys.executable, "-c", code, *map(str, outs)], capture_output=True,
                         text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"
    for o in outs:
        assert np.array_equal(np.load(o), data["v1"]["logmel"])


def test_hdf5_export_opens_with_plain_h5py_and_holds_the_same_numbers(tmp_path):
    st = create_store(tmp_path / "s")
    data = _fill(st, 3)
    st.set_info("classes", ["a", "b"])
    export_store(st, tmp_path / "e.h5")
    with h5py.File(tmp_path / "e.h5", "r") as f:
        index = json.loads(f["l2l_index"][()].tobytes())
        assert index["info"]["classes"] == ["a", "b"]
        for vid, arrays in data.items():
            for name, a in arrays.items():
                e = index["videos"][vid]["fields"][name]
                assert np.array_equal(f["segments"][e["seg"]][e["arr"]][e["start"]:e["stop"]], a)
    assert open_store(tmp_path / "e.h5").verify() == []


def test_not_a_store_is_one_clear_error(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(StoreError, match="not a zarr store"):
        open_store(tmp_path / "x")
    with pytest.raises(StoreError, match="no such store"):
        open_store(tmp_path / "nope")


def test_temporaries_of_a_killed_writer_are_cleaned_after_an_hour(tmp_path):
    import os
    import time
    st = create_store(tmp_path / "s")
    _fill(st, 1)
    old = tmp_path / "s" / "staging" / ".tmp-123-4-abc"
    new = tmp_path / "s" / "staging" / ".tmp-999-4-def"
    for d in (old, new):
        d.mkdir()
        (d / "zarr.json").write_text("{}")
    hour_ago = time.time() - 3700
    os.utime(old, (hour_ago, hour_ago))
    st.commit()
    assert not old.exists() and new.exists()        # a recent one may still be being written
    assert open_store(tmp_path / "s").ids() == ["v0"]


def test_the_hdf5_index_is_parsed_again_only_after_another_writer_committed(tmp_path):
    writer = create_store(tmp_path / "s.h5")
    _fill(writer, 1)
    reader = open_store(tmp_path / "s.h5")
    loads = []
    real = reader._load_index
    reader._load_index = lambda: loads.append(1) or real()
    for _ in range(20):                        # one parse, however many videos are looked up
        assert reader.ids() == ["v0"] and reader.meta("v0").num_moments == 3
    assert len(loads) == 1
    writer.put(_meta("v7", 2), {"logmel": np.zeros((2, 101, 40), np.float16)}, {"logmel": _rec()})
    writer.commit()                            # replaces the index: the reader sees it
    assert reader.ids() == ["v0", "v7"] and len(loads) == 2
    assert np.all(reader.read("v7", ["logmel"])["logmel"] == 0)


def test_a_zarr_reader_sees_each_commit_and_reads_only_the_videos_it_asks_for(tmp_path, monkeypatch):
    """A shard's questions (has, stored, moments, failure, read) touch only its videos' rows:
    nothing reads the whole index (no process holds it)."""
    from l2l.store import sqlindex
    writer = create_store(tmp_path / "s")
    _fill(writer, 3)
    writer.record_failure(Failure(id="bad", stage="decode", reason="bad.mp4: not a video"))
    writer.commit()
    reader = open_store(tmp_path / "s")

    def whole(*a, **k):
        raise AssertionError("the whole index was read")
    for name in ("all_entries", "to_dict", "used_segments", "failures", "ids"):
        monkeypatch.setattr(sqlindex.SqlIndex, name, whole)
    assert reader.has("v1") and not reader.has("v7")
    (meta, recs), = reader.stored(["v1", "v7"]).values()
    assert meta.num_moments == 5 and recs["logmel"].key == "key1"
    assert reader.moments(["v0", "v2", "nope"]) == {"v0": 3, "v2": 7}
    assert reader.failure("bad").stage == "decode" and reader.failure("v1") is None
    assert reader.failed(["bad", "v1"]) == {"bad"}
    writer.put(_meta("v7", 2), {"logmel": np.ones((2, 101, 40), np.float16)}, {"logmel": _rec()})
    writer.commit()                            # another writer's commit: seen at once
    assert reader.has("v7") and np.all(reader.read("v7", ["logmel"])["logmel"] == 1)
    assert reader.read_many(["logmel"], ["v7", "v0"]).ids == ["v7", "v0"]


def test_store_info_counts_come_from_the_summary(tmp_path):
    st = create_store(tmp_path / "s")
    _fill(st, 3)
    st.put(_meta("w", 4, "validation"), {"logmel": np.zeros((4, 101, 40), np.float16)},
           {"logmel": _rec({"type": "s", "k": 2})})
    st.commit()
    s = st.summary()
    assert s["subsets"] == {"training": {"videos": 3, "moments": 15, "no_audio": 0},
                            "validation": {"videos": 1, "moments": 4, "no_audio": 0}}
    assert s["arrays"]["frames"]["videos"] == 3 and s["arrays"]["logmel"]["videos"] == 4
    assert sorted(p["videos"] for p in s["arrays"]["logmel"]["parts"]) == [1, 3]
    assert {tuple(p["shape"]) for p in s["arrays"]["logmel"]["parts"]} == {(101, 40)}
    def norm(s):
        for a in s["arrays"].values():
            a["parts"].sort(key=lambda p: json.dumps(p, sort_keys=True))
        return s
    assert norm(s) == norm(export_store(st, tmp_path / "e.h5").summary())   # from the dict index
    # the counts follow replacements and removals (kept by each change, not recounted)
    st.put(_meta("v2", 2, "validation"), {"logmel": np.zeros((2, 101, 40), np.float16)},
           {"logmel": _rec()}, replace=True)
    st.put(_meta("v0", 3), {"frames": np.zeros((3, 112, 112, 3), np.uint8)}, {"frames": _rec({"k": 3})})
    st.commit()
    st.remove(["v1"])
    s = st.summary()
    assert s["subsets"]["training"] == {"videos": 1, "moments": 3, "no_audio": 0}
    assert s["arrays"]["frames"]["videos"] == 1
    assert norm(s) == norm(export_store(st, tmp_path / "e2.h5").summary())


@pytest.mark.parametrize("name", ["s.zarr", "s.h5"])
def test_a_shard_is_staged_once_and_becomes_one_segment(tmp_path, name):
    st = create_store(tmp_path / name)
    rng = np.random.default_rng(5)
    data = {f"v{i}": rng.integers(0, 255, (2 + i, 112, 112, 3), dtype=np.uint8) for i in range(3)}
    st.put_many([Put(_meta(v, len(a)), {"frames": a}, {"frames": _rec()}, True) for v, a in data.items()])
    assert sorted(v for _, v in st.staged()) == sorted(data) and len(st._list_parcels()) == 1
    if st.backend == "zarr":            # commit renames the parcel: the chunk files stay the same
        (parcel,) = st._list_parcels()
        inode = {p.relative_to(tmp_path / name / "staging" / parcel): p.stat().st_ino
                 for p in (tmp_path / name / "staging" / parcel / "frames").rglob("*") if p.is_file()}
    counts = st.commit()
    assert counts["videos"] == 3 and len(counts["segments"]) == 1
    st = open_store(tmp_path / name)
    assert {st.index["videos"][v]["fields"]["frames"]["seg"] for v in data} == set(counts["segments"])
    b = st.read_many(["frames"])
    for i, vid in enumerate(b.ids):
        assert np.array_equal(b.video(i, "frames"), data[vid])
    assert st.verify() == [] and st._list_parcels() == []
    if st.backend == "zarr":
        seg = tmp_path / name / "segments" / counts["segments"][0]
        assert {p.relative_to(seg): p.stat().st_ino for p in (seg / "frames").rglob("*")
                if p.is_file()} == inode
        assert sorted(p.name for p in seg.iterdir()) == ["frames", "zarr.json"]  # no record left


def test_the_backend_is_the_one_the_store_records_not_the_suffix(tmp_path):
    st = create_store(tmp_path / "x.h5", "zarr")
    _fill(st, 2)
    assert (tmp_path / "x.h5").is_dir()
    again = open_store(tmp_path / "x.h5")
    assert again.backend == "zarr" and again.ids() == ["v0", "v1"]
    assert create_store(tmp_path / "x.h5").backend == "zarr"
    h = create_store(tmp_path / "y.zarr", "hdf5")
    _fill(h, 1)
    assert open_store(tmp_path / "y.zarr").backend == "hdf5"


def test_a_file_that_is_not_a_store_is_one_line(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("hello")
    for fn in (open_store, create_store):
        with pytest.raises(StoreError) as e:
            fn(f)
        assert str(f) in str(e.value) and "not an l2l feature store" in str(e.value)
        assert "\n" not in str(e.value)


def test_verify_returns_structured_problems(tmp_path):
    st = create_store(tmp_path / "s")
    _fill(st, 2)
    import sqlite3
    with sqlite3.connect(tmp_path / "s" / "index" / "index.sqlite") as db:    # a wrong checksum
        db.execute("UPDATE fields SET crc='00000000' WHERE video='v1' AND name='frames'")
    (p,) = st.verify()
    assert (p.video, p.array, p.kind) == ("v1", "frames", "checksum")
    assert str(p).startswith("v1/frames: checksum mismatch")


def test_export_writes_only_its_file_with_the_failures(tmp_path):
    st = create_store(tmp_path / "s")
    _fill(st, 2)
    st.record_failure(Failure(id="bad", stage="decode", reason="x.mp4: not a video"))
    st.commit()
    out = tmp_path / "out" / "e.h5"
    out.parent.mkdir()
    export_store(st, out)
    assert [p.name for p in out.parent.iterdir()] == ["e.h5"]
    e = open_store(out)
    assert e.ids() == ["v0", "v1"] and [f.id for f in e.failures()] == ["bad"]
    assert e.verify() == []


def test_the_hdf5_index_is_fsynced(tmp_path, monkeypatch):
    from l2l.store import hdf5_store
    st = create_store(tmp_path / "s.h5")
    synced = []
    real = hdf5_store.os.fsync
    monkeypatch.setattr(hdf5_store.os, "fsync", lambda fd: synced.append(fd) or real(fd))
    _fill(st, 1)                       # a commit: segment + index in a new copy of the file
    assert synced
    synced.clear()
    st.set_info("k", 1)                # an index-only change
    assert synced


def _in_forked_child(check) -> int:
    """Run ``check`` in a forked child (killed after 20 s); its exit code: 0 when ``check``
    returned true, 3 when it returned false or raised."""
    import os
    pid = os.fork()
    if pid == 0:
        import signal
        signal.alarm(20)
        try:
            ok = bool(check())
        except BaseException:                         # noqa: BLE001 - the exit code reports it
            ok = False
        os._exit(0 if ok else 3)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_forked_child_reads_the_index_even_while_a_parent_thread_holds_its_lock(tmp_path):
    """Dask forks its workers from the parent, whose other threads may be asking the index at
    that moment: the child opens its own connection under a fresh lock (no deadlock)."""
    import threading
    st = create_store(tmp_path / "s")
    _fill(st, 1)
    ix = st._ix()
    held, release = threading.Event(), threading.Event()

    def hold():                      # the index's own lock (not the whole of ``_guard``,
        with ix._lock:               # which a fork waits for: the next test)
            held.set()
            release.wait()
    t = threading.Thread(target=hold)
    t.start()
    held.wait()
    try:
        code = _in_forked_child(lambda: st.has("v0") and st.meta("v0").num_moments == 3)
    finally:
        release.set()
        t.join()
    assert code == 0


def test_a_fork_waits_for_a_write_to_the_index_and_the_child_reads_it(tmp_path):
    """SQLite keeps each file's lock state per process; a child forked while a parent thread is
    inside a write transaction would inherit that state and wait on a lock nobody holds there
    ("database is locked" after the busy timeout, every read of a dask worker).  A fork waits
    until no transaction of this process is open."""
    import threading
    import time
    from l2l.store import sqlindex
    st = create_store(tmp_path / "s")
    _fill(st, 1)
    ix = st._ix()
    held = threading.Event()

    def write(db):                   # a commit's moment: the file locked EXCLUSIVE (a page
        db.execute("PRAGMA cache_size=1")             # cache too small for the transaction)
        db.executemany("INSERT OR REPLACE INTO info VALUES (?, ?)",
                       [(f"pad{i}", '"' + "0" * 2000 + '"') for i in range(200)])
        held.set()
        time.sleep(0.5)                               # the fork comes now
        db.execute("INSERT OR REPLACE INTO info VALUES ('k', '1')")
    t = threading.Thread(target=ix._write, args=(write,))
    t.start()
    held.wait()
    def child():
        sqlindex.BUSY_MS = 2000                       # a phantom lock: "locked" in 2 s, not 120
        return st.has("v0") and ix.info().get("k") == 1
    try:
        code = _in_forked_child(child)
    finally:
        t.join()
    assert code == 0
