"""The store at the edges a hostile user finds (issue 21) and across versions (issue 20): an old
store (the index as one JSON attribute) opens and migrates; a full disk, a read-only store and two
extracts creating one store at once each give one line and exit 1, or succeed, and leave the store
consistent (``l2l store verify``)."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from l2l.cli.main import main
from l2l.store import ArrayRecord, Failure, VideoMeta, create_store, open_store
from helpers import write_video


def _meta(vid, n):
    return VideoMeta(id=vid, labels=("a",), subset="training", duration=n / 2, fps=30.0,
                     num_moments=n, has_audio=True, source=f"/x/{vid}.mp4")


def _rec():
    return ArrayRecord(stage="s", config={"type": "s"}, key="k", upstream={}, versions={})


def _old_store(path: Path) -> dict:
    """A store in the layout of l2l before the SQLite index: the same segments, with the index
    as the ``l2l_index`` attribute of ``index/zarr.json``.  Returns the arrays by video."""
    st = create_store(path)
    rng = np.random.default_rng(1)
    data = {}
    for i in range(3):
        a = rng.standard_normal((4 + i, 8)).astype(np.float16)
        st.put(_meta(f"v{i}", 4 + i), {"x": a}, {"x": _rec()})
        data[f"v{i}"] = a
    st.record_failure(Failure(id="bad", stage="decode", reason="bad.mp4: not a video"))
    st.commit()
    st.update_info({"classes": ["a"], "fields": ["x"]})
    index = st.index
    st.close()
    (path / "index" / "index.sqlite").unlink()
    (path / "index" / "installing.json").unlink(missing_ok=True)
    (path / "index" / "zarr.json").write_text(json.dumps(
        {"zarr_format": 3, "node_type": "group", "attributes": {"l2l_index": index}}))
    return data


def _same(st, data):
    assert st.ids() == sorted(data) and [f.id for f in st.failures()] == ["bad"]
    for vid, a in data.items():
        assert np.array_equal(st.read(vid, ["x"])["x"], a)
    assert st.info()["classes"] == ["a"] and st.verify() == []


def test_an_old_store_is_read_as_it_is_then_migrated_by_store_migrate(tmp_path):
    data = _old_store(tmp_path / "s")
    _same(open_store(tmp_path / "s"), data)
    assert not (tmp_path / "s" / "index" / "index.sqlite").exists()     # reading changes nothing
    r = CliRunner().invoke(main, ["store", "migrate", str(tmp_path / "s")])
    assert r.exit_code == 0 and "migrated" in r.output, r.output
    doc = json.loads((tmp_path / "s" / "index" / "zarr.json").read_text())
    assert "l2l_index" not in doc["attributes"] and (tmp_path / "s" / "index" / "index.sqlite").is_file()
    _same(open_store(tmp_path / "s"), data)
    r = CliRunner().invoke(main, ["store", "migrate", str(tmp_path / "s")])
    assert r.exit_code == 0 and "nothing to migrate" in r.output


def test_an_old_store_is_migrated_by_its_first_commit(tmp_path):
    data = _old_store(tmp_path / "s")
    st = open_store(tmp_path / "s")
    b = np.ones((2, 8), np.float16)
    st.put(_meta("v9", 2), {"x": b}, {"x": _rec()})
    st.commit()
    assert (tmp_path / "s" / "index" / "index.sqlite").is_file()
    _same(open_store(tmp_path / "s"), {**data, "v9": b})


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_store_repair_restores_a_damaged_index_from_its_log(tmp_path, damage):
    """A truncated (or overwritten) index database: every command says so in one line and names
    ``l2l store repair``, which rebuilds it from the index log; a torn last log entry means the
    generation before it.  The store then verifies and holds what was committed."""
    st = create_store(tmp_path / "s")
    rng = np.random.default_rng(2)
    data = {}
    for i in range(4):
        data[f"v{i}"] = rng.standard_normal((3 + i, 8)).astype(np.float16)
        st.put(_meta(f"v{i}", 3 + i), {"x": data[f"v{i}"]}, {"x": _rec()})
        st.commit()                                   # one generation each
    st.update_info({"classes": ["a"]})
    st.close()
    db = tmp_path / "s" / "index" / "index.sqlite"
    raw = db.read_bytes()
    db.write_bytes(raw[:len(raw) // 3] if damage == "truncate" else b"x" * len(raw))
    r = CliRunner().invoke(main, ["store", "info", str(tmp_path / "s")])
    _one_line(r, "index", "l2l store repair")
    r = CliRunner().invoke(main, ["store", "repair", str(tmp_path / "s")])
    assert r.exit_code == 0 and "rebuilt from its log: generation 4, 4 videos" in r.output, r.output
    st = open_store(tmp_path / "s")
    assert st.ids() == sorted(data) and st.info()["classes"] == ["a"] and st.verify() == []
    for vid, a in data.items():
        assert np.array_equal(st.read(vid, ["x"])["x"], a)
    # a torn last change: the generation before it
    log = sorted((tmp_path / "s" / "index" / "log").glob("*.json"))
    last_commit = max(p for p in log if '"op":"commit"' in p.read_text())
    last_commit.write_text(last_commit.read_text()[:50])
    db.write_bytes(b"")
    r = CliRunner().invoke(main, ["store", "repair", str(tmp_path / "s")])
    assert r.exit_code == 0 and "generation 3, 3 videos" in r.output and "left out 2" in r.output, r.output
    st = open_store(tmp_path / "s")
    assert st.ids() == ["v0", "v1", "v2"] and st.verify() == []
    assert len([p for p in (tmp_path / "s" / "segments").iterdir() if p.is_dir()]) == 3  # v3's: gone
    st.put(_meta("v3", 6), {"x": data["v3"]}, {"x": _rec()})   # a rerun redoes the rest
    st.commit()
    assert open_store(tmp_path / "s").ids() == sorted(data) and open_store(tmp_path / "s").verify() == []


# ---- through the command line ------------------------------------------------------------------
@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("edges")
    vids = root / "videos"
    vids.mkdir()
    db = {}
    for i in range(3):
        write_video(vids / f"v_m{i}.mp4", frames=24, tone_hz=300.0 + 100 * i)
        db[f"m{i}"] = {"subset": "training", "duration": 1.0, "url": "",
                       "annotations": [{"segment": [0.0, 1.0], "label": "Run" if i % 2 else "Swim"}]}
    ann = root / "ann.json"
    ann.write_text(json.dumps({"version": "VERSION 1.3", "database": db}))
    return {"videos": vids, "ann": ann}


def _extract(media, store):
    return ["extract", "--dataset", "activitynet", "--videos", str(media["videos"]), "--annotations",
            str(media["ann"]), "--store", str(store), "--stages", "decode", "--device", "cpu",
            "--no-progress"]


def _one_line(r, *needles):
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), (r.exit_code, r.output, r.exception)
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.output
    for n in needles:
        assert n in lines[0], (n, lines[0])


def _verified(store):
    r = CliRunner().invoke(main, ["store", "verify", str(store)])
    assert r.exit_code == 0, r.output


def test_a_full_disk_is_one_line_leaves_nothing_behind_and_the_rerun_succeeds(media, tmp_path,
                                                                             monkeypatch):
    """ENOSPC injected into every array write (what a full disk does to staging): one line, exit 1,
    no temporary parcel left (it would keep the disk full), the store verifies; once there is
    space again, the same command extracts everything."""
    from l2l.store import zarr_store
    store = tmp_path / "s"
    real = zarr_store._write_array

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(zarr_store, "_write_array", full)
    r = CliRunner().invoke(main, _extract(media, store))
    _one_line(r, str(store), "No space left on device")
    assert [p.name for p in (store / "staging").iterdir()] == ["zarr.json"]     # (the group)
    _verified(store)
    monkeypatch.setattr(zarr_store, "_write_array", real)
    r = CliRunner().invoke(main, _extract(media, store))
    assert r.exit_code == 0, r.output
    assert open_store(store).ids() == ["m0", "m1", "m2"]
    _verified(store)


def _read_only(path: Path):
    """Make ``path`` (a folder) read-only for this process: chmod for a user; for root (whom
    permissions do not stop), a read-only bind mount.  Returns an undo function."""
    if os.geteuid() != 0:
        for p in [path, *path.rglob("*")]:
            p.chmod(p.stat().st_mode & ~0o222)
        return lambda: [p.chmod(p.stat().st_mode | 0o200) for p in [path, *path.rglob("*")]]
    ok = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True).returncode == 0
    if ok and subprocess.run(["mount", "-o", "remount,bind,ro", str(path)],
                             capture_output=True).returncode == 0:
        return lambda: subprocess.run(["umount", "-l", str(path)], check=True)   # (lazy: a
        # store object of this process may still hold its index open)
    if ok:
        subprocess.run(["umount", str(path)])
    pytest.skip("running as root where a read-only bind mount is not allowed: no way to make "
                "a folder read-only for this process")


def test_read_only_commands_and_no_op_runs_work_on_a_read_only_store(media, tmp_path):
    store = tmp_path / "ro" / "s"
    store.parent.mkdir()
    assert CliRunner().invoke(main, _extract(media, store)).exit_code == 0
    undo = _read_only(store.parent)
    try:
        r = CliRunner().invoke(main, _extract(media, store))          # every video done
        assert r.exit_code == 0 and "skipped 3" in r.output, r.output
        for cmd in (["store", "info"], ["store", "verify"], ["store", "repair"]):
            r = CliRunner().invoke(main, cmd + [str(store)])
            assert r.exit_code == 0, (cmd, r.output)
        _one_line(CliRunner().invoke(main, _extract(media, store.parent / "new")),
                  str(store.parent / "new"), "cannot create the store")
        assert not (store.parent / "new").exists()
    finally:
        undo()
    _verified(store)


CREATE = """
import sys
from l2l.cli.main import main
main(sys.argv[1:])
"""


def test_two_extracts_creating_one_store_at_once(media, tmp_path):
    """10 trials: two ``l2l extract`` processes start on the same new store at the same moment;
    both succeed, every video is extracted once, the store verifies (no ContainsGroupError)."""
    for trial in range(10):
        store = tmp_path / f"s{trial}"
        procs = [subprocess.Popen([sys.executable, "-c", CREATE, *_extract(media, store)],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for _ in range(2)]
        outs = [p.communicate(timeout=120)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outs
        assert not any("Traceback" in o or "ContainsGroupError" in o for o in outs), outs
        st = open_store(store)
        assert st.ids() == ["m0", "m1", "m2"] and st.failures() == []
        assert st.verify() == []
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no temporaries
