"""Crash safety (issue 7): kill -9 of the extract process at several points while it writes, then
rerun: the store verifies, no video is partial, none is doubled, failures are listed once, what
was committed before the kill is untouched, and the arrays equal those of an uninterrupted run.
Corrupted data: ``test_corruption.py``, on the same media.

The kills are real SIGKILLs of a subprocess: the driver below runs ``extract`` with hooks that
SIGKILL the process itself at an exact point of the store's write protocol (a parcel's rename,
a segment's arrays, the index replacement, the parcel deletions), counted from the start of the
run; one test kills ``l2l extract`` from outside once it has staged some parcels.  The driver
runs the decode stage only (no torch import, so a subprocess starts in about a second); the
store's protocol is the same for every field.  Killing a dask worker is covered in
``test_distributed.py``.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from l2l.cli.main import main
from l2l.datasets.base import load_dataset
from l2l.pipeline.extract import extract, plan_stages
from l2l.store import create_store, open_store
from helpers import write_video as _write_video

REPO = Path(__file__).resolve().parents[1]
GOOD = [("a", 20), ("b", 40), ("c", 33), ("d", 64), ("e", 17), ("f", 50), ("g", 70), ("h", 30)]
BAD = ("noise", "gone")                  # random bytes; listed but no file
FIELDS = ["frames", "times", "frame_index"]

DRIVER = textwrap.dedent("""
    import json, os, signal, sys
    from pathlib import Path
    import l2l.pipeline.extract as ex
    from l2l.datasets.base import load_dataset
    from l2l.store import hdf5_store, packed, zarr_store

    videos, ann, store, point, nth, log = sys.argv[1:7]
    ex.COMMIT_EVERY = 3                  # periodic commits in the middle of the run,
    ex.COMMIT_SHARE = 1.0                # each as soon as it is due
    hits, state = {}, {"commit": False, "index_done": False}

    def hit(name):
        hits[name] = hits.get(name, 0) + 1
        if name == point and hits[name] == int(nth):
            os.kill(os.getpid(), signal.SIGKILL)

    class HookedOs:                      # ``os`` for the store modules, with hooks around renames
        def __getattr__(self, name):
            return getattr(os, name)

        def replace(self, src, dst):
            parcel = Path(src).name.startswith(".tmp-")
            index = state["commit"] and not parcel and not state["index_done"]
            hit("parcel" if parcel else "index" if index else "other")
            os.replace(src, dst)
            if index:
                state["index_done"] = True
                hit("after-index")

    zarr_store.os = hdf5_store.os = HookedOs()

    commit_locked = packed.PackedStore._commit_locked
    def hooked_commit(self):
        if not self._list_parcels():
            return commit_locked(self)
        state.update(commit=True, index_done=False)
        try:
            return commit_locked(self)
        finally:
            state["commit"] = False
    packed.PackedStore._commit_locked = hooked_commit

    write_array = zarr_store._write_array
    def hooked_array(folder, shape, dtype, blocks):
        hit("segment")                   # the segment's earlier arrays are written, this one not
        return write_array(folder, shape, dtype, blocks)
    zarr_store._write_array = hooked_array

    for cls in (zarr_store.ZarrStore, hdf5_store.HDF5Store):
        def hooked_delete(self, name, _orig=cls._delete_parcel):
            hit("delete")
            _orig(self, name)
        cls._delete_parcel = hooked_delete

    put_many = packed.PackedStore.put_many
    def logged_put(self, items):          # a video's work is finished once its put returns
        put_many(self, items)
        with open(log, "a") as f:
            f.write("".join(p.meta.id + "\\n" for p in items))
    packed.PackedStore.put_many = logged_put

    ds = load_dataset("activitynet", Path(videos), Path(ann))
    ex.extract(ds, store, stages=ex.plan_stages(["decode"]), device="cpu", progress=False)
    print(json.dumps(hits))
""")


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash")
    vids = root / "videos"
    vids.mkdir()
    for i, (vid, frames) in enumerate(GOOD):
        _write_video(vids / f"v_{vid}.mp4", frames=frames, tone_hz=300.0 + 100 * i)
    (vids / "v_noise.mp4").write_bytes(np.random.default_rng(3).bytes(3000))
    db = {vid: {"subset": "training", "duration": 1.0, "url": "",
                "annotations": [{"segment": [0.0, 1.0], "label": "Run" if i % 2 else "Swim"}]}
          for i, vid in enumerate([g for g, _ in GOOD] + list(BAD))}
    ann = root / "anno.json"
    ann.write_text(json.dumps({"version": "VERSION 1.3", "database": db}))
    ds = load_dataset("activitynet", vids, ann)
    ref = root / "ref"
    s = extract(ds, ref, stages=plan_stages(["decode"]), device="cpu", progress=False)
    assert (s.done, s.failed) == (len(GOOD), len(BAD))
    return {"root": root, "videos": vids, "ann": ann, "ds": ds, "ref": open_store(ref)}


def _seeded(store: Path, ref) -> Path:
    """A new store holding ``ref``'s store-level info (classes, costs, fields): what a resumed
    run finds.  It spares each killed subprocess importing torch to measure the model costs."""
    st = create_store(store)
    for key, value in ref.info().items():
        if key not in ("schema_version", "backend", "generation"):
            st.set_info(key, value)
    return store


def _segment_rows(st) -> dict[str, int]:
    """Rows per field over every live segment array: equal to the moments when nothing is doubled."""
    used = {(f["seg"], f["arr"], name) for e in st.index["videos"].values()
            for name, f in e["fields"].items()}
    rows: dict[str, int] = {}
    for seg, arr, name in used:
        if st.backend == "zarr":
            import zarr
            n = zarr.open_array(str(st.path / "segments" / seg / arr), mode="r").shape[0]
        else:
            n = st._h5()["segments"][seg][arr].shape[0]
        rows[name] = rows.get(name, 0) + n
    return rows


def _after_kill(store: Path) -> tuple[dict, set]:
    """Right after the kill, before any rerun: whatever is visible is whole and sound.  Returns the
    visible videos' index entries and the ids of the complete parcels still staged."""
    st = open_store(store)
    problems = [p for p in st.verify() if "staged parcels not committed" not in str(p)]
    assert problems == []
    assert set(st.ids()) <= {g for g, _ in GOOD}
    for vid in st.ids():                                     # every visible video whole
        assert set(st.records(vid)) == set(FIELDS)
        got = st.read(vid, FIELDS)
        assert all(len(a) == st.meta(vid).num_moments for a in got.values())
    staged = {vid for _, vid in st.staged()}
    return json.loads(json.dumps(st.index["videos"])), staged


def _check_after_rerun(media, store: Path, visible: dict, staged: set, summary,
                       finished: set | None = None) -> None:
    st, ref = open_store(store), media["ref"]
    assert st.verify() == []
    assert st.ids() == ref.ids() == sorted(g for g, _ in GOOD)
    assert sorted(f.id for f in st.failures()) == sorted(BAD)
    assert [st.meta(v) for v in st.ids()] == [ref.meta(v) for v in ref.ids()]
    a, b = st.read_many(FIELDS), ref.read_many(FIELDS)
    for name in FIELDS:
        assert np.array_equal(a.arrays[name], b.arrays[name]), name
    # nothing doubled: the live segments hold each video's rows exactly once
    moments = sum(st.meta(v).num_moments for v in st.ids())
    assert _segment_rows(st) == {name: moments for name in FIELDS}
    assert st._list_parcels() == []
    # what was committed before the kill is untouched, and only the rest was redone
    for vid, entry in visible.items():
        assert st.index["videos"][vid] == entry, vid
    assert summary.done == len(GOOD) - len(set(visible) | staged)
    assert summary.skipped == len(set(visible) | staged) and summary.failed == len(BAD)
    if finished is not None:             # every video finished before the kill was kept
        assert set(visible) | staged == finished


def _kill_run_and_rerun(media, store: Path, point: str, nth: int) -> None:
    log = store.with_name(store.name + ".finished")
    _seeded(store, media["ref"])
    p = subprocess.run([sys.executable, "-c", DRIVER, str(media["videos"]), str(media["ann"]),
                        str(store), point, str(nth), str(log)], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == -signal.SIGKILL, (p.returncode, p.stdout, p.stderr[-2000:])
    finished = set(log.read_text().split()) if log.exists() else set()
    visible, staged = _after_kill(store)
    summary = extract(media["ds"], store, stages=plan_stages(["decode"]), device="cpu", progress=False)
    _check_after_rerun(media, store, visible, staged, summary, finished)


# (point, nth): COMMIT_EVERY=3 makes commits after videos 3, 6 and 9 and at the end; a decode-only
# segment has 3 arrays; each commit deletes the parcels it folded.
POINTS = [
    ("parcel", 2),        # the 2nd parcel is written but not yet renamed: nothing committed yet
    ("parcel", 5),        # after the first commit, mid-parcel
    ("segment", 5),       # second commit, its segment half written
    ("index", 2),         # second commit: segment complete, index not yet replaced
    ("after-index", 1),   # first commit: index replaced, no parcel deleted yet
    ("delete", 5),        # second commit: some of its parcels deleted, some not
]


@pytest.mark.parametrize("point,nth", POINTS, ids=[f"{p}-{n}" for p, n in POINTS])
def test_kill9_during_extract_then_rerun_loses_and_doubles_nothing(media, tmp_path, point, nth):
    _kill_run_and_rerun(media, tmp_path / "store", point, nth)


@pytest.mark.parametrize("point,nth", [("index", 2), ("after-index", 2)])
def test_kill9_with_the_hdf5_backend(media, tmp_path, point, nth):
    _kill_run_and_rerun(media, tmp_path / "store.h5", point, nth)


def test_kill9_of_the_extract_command_from_outside(media, tmp_path):
    """``l2l extract`` killed from outside once 4 parcels are staged (none committed yet: from
    the 2nd staged parcel on, this test holds the store's commit lock, as another committing
    process would, so the run's final commit waits for it instead of racing the kill)."""
    import fcntl
    store = _seeded(tmp_path / "store", media["ref"])
    cmd = [sys.executable, "-c", "from l2l.cli.main import main; main()", "extract",
           "--dataset", "activitynet", "--videos", str(media["videos"]), "--annotations",
           str(media["ann"]), "--store", str(store), "--stages", "decode", "--device", "cpu",
           "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    staging = store / "staging"
    deadline = time.monotonic() + 60
    lock = None
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            n = sum(not p.name.startswith(".") for p in staging.iterdir()) if staging.is_dir() else 0
            if n >= 2 and lock is None:
                lock = open(store / "zarr.json", "rb")
                fcntl.flock(lock, fcntl.LOCK_EX)
            if n >= 4:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.002)
    finally:
        rc = proc.wait(timeout=30)
        if lock is not None:
            lock.close()
    assert rc == -signal.SIGKILL, f"extract ended ({rc}) before it had staged 4 parcels"
    visible, staged = _after_kill(store)
    assert visible == {} and len(staged) >= 3
    r = CliRunner().invoke(main, ["store", "verify", str(store)])
    assert r.exit_code != 0 and "staged parcels not committed" in r.output
    summary = extract(media["ds"], store, stages=plan_stages(["decode"]), device="cpu", progress=False)
    _check_after_rerun(media, store, visible, staged, summary)
