"""Corrupted data (issue 7): a corrupted chunk is found by ``l2l store verify`` (checksums) and
named by video, and ``l2l store repair`` + a rerun re-extracts exactly the affected videos; a
parcel damaged before its commit is rejected by the commit's check and made again.  The media
and the reference store are ``test_crash_safety.py``'s."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from l2l.cli.main import main
from l2l.datasets.base import load_dataset
from l2l.pipeline.extract import extract, plan_stages, process_video
from l2l.store import open_store
from helpers import write_video as _write_video
from test_crash_safety import BAD, FIELDS, GOOD, _seeded, media  # noqa: F401  (media: a fixture)


def _chunk_files(store: Path, seg: str, arr: str) -> list[Path]:
    return sorted(p for p in (store / "segments" / seg / arr).rglob("*")
                  if p.is_file() and p.name != "zarr.json")


def test_corrupted_chunks_are_named_by_verify_and_exactly_their_videos_are_redone(media, tmp_path):
    ds, ref = media["ds"], media["ref"]
    store = _seeded(tmp_path / "store", ref)
    extract(ds, store, stages=plan_stages(["decode"]), device="cpu", progress=False, limit=4)
    extract(ds, store, stages=plan_stages(["decode"]), device="cpu", progress=False)
    st = open_store(store)
    seg_of = {v: st.index["videos"][v]["fields"]["frames"]["seg"] for v in st.ids()}
    first, second = sorted(set(seg_of.values()))
    in_first = sorted(v for v, s in seg_of.items() if s == first)
    in_second = sorted(v for v, s in seg_of.items() if s == second)
    assert in_first == ["a", "b", "c", "d"] and in_second == ["e", "f", "g", "h"]
    # bytes flipped all through the second segment's frames chunk (every video's rows, whether
    # the chunk is compressed or not); the first segment's times chunk gone
    (chunk,) = _chunk_files(store, second, "frames")
    data = bytearray(chunk.read_bytes())
    for i in range(64, len(data), 997):
        data[i] ^= 0xFF
    chunk.write_bytes(bytes(data))
    (lost,) = _chunk_files(store, first, "times")
    lost.unlink()

    r = CliRunner().invoke(main, ["store", "verify", str(store)])
    assert r.exit_code != 0
    lines = [ln for ln in r.output.splitlines() if ln and not ln.startswith("Error")]
    named = {ln.split("/")[0] for ln in lines}
    assert named == set(in_first) | set(in_second), r.output
    assert all(f"{v}/frames:" in r.output for v in in_second)
    assert all(f"{v}/times:" in r.output for v in in_first)
    assert not any(f"{v}/frames:" in r.output for v in in_first)

    r = CliRunner().invoke(main, ["store", "repair", str(store)])
    assert r.exit_code == 0 and f"dropped {len(GOOD)} video(s)" in r.output, r.output
    assert open_store(store).verify() == []
    s = extract(ds, store, stages=plan_stages(["decode"]), device="cpu", progress=False)
    assert (s.done, s.skipped, s.failed) == (len(GOOD), 0, len(BAD))
    st = open_store(store)
    assert st.verify() == [] and st.ids() == ref.ids()
    for name in FIELDS:
        assert np.array_equal(st.read_many([name]).arrays[name], ref.read_many([name]).arrays[name])


def test_repair_redoes_only_the_damaged_video_even_when_ids_contain_colons(media, tmp_path):
    """One video per segment, so one damaged chunk is one video; ids with ':' (allowed by the
    adapters) are still named and dropped correctly."""
    vids = tmp_path / "videos"
    vids.mkdir()
    ids = ["x:1", "x", "y:2"]
    for i, vid in enumerate(ids):
        _write_video(vids / f"{vid}.mp4", frames=20 + 10 * i, tone_hz=400.0 + 100 * i)
    db = {vid: {"subset": "training", "duration": 1.0, "url": "",
                "annotations": [{"segment": [0.0, 1.0], "label": "Run"}]} for vid in ids}
    ann = tmp_path / "anno.json"
    ann.write_text(json.dumps({"version": "VERSION 1.3", "database": db}))
    ds = load_dataset("activitynet", vids, ann)
    store = tmp_path / "store"
    for n in (1, 2, 3):                                  # one commit (segment) per video
        extract(ds, store, stages=plan_stages(["decode"]), device="cpu", progress=False, limit=n)
    st = open_store(store)
    seg = st.index["videos"]["x:1"]["fields"]["frame_index"]["seg"]
    (chunk,) = _chunk_files(store, seg, "frame_index")
    chunk.unlink()
    before = {v: st.index["videos"][v] for v in ("x", "y:2")}
    assert [p.video for p in st.verify()] == ["x:1"]
    r = CliRunner().invoke(main, ["store", "repair", str(store)])
    assert "dropped 1 video(s): x:1;" in r.output, r.output
    s = extract(ds, store, stages=plan_stages(["decode"]), device="cpu", progress=False)
    assert (s.done, s.skipped) == (1, 2)
    st = open_store(store)
    assert st.verify() == [] and st.ids() == sorted(ids)
    assert {v: st.index["videos"][v] for v in ("x", "y:2")} == before


def _c_staged(media, tmp_path):
    """A store with videos a and b committed and c staged alone in one parcel: (store path,
    store, parcel name, the parcel's frames chunk files)."""
    ds = media["ds"]
    store = _seeded(tmp_path / "store", media["ref"])
    extract(ds, store, stages=plan_stages(["decode"]), device="cpu", progress=False, limit=2)
    video = next(v for v in ds.videos if v.id == "c")
    assert process_video(str(store), video, plan_stages(["decode"])).status == "done"
    st = open_store(store)
    (parcel,) = st._list_parcels()
    chunks = sorted(p for p in (store / "staging" / parcel / "frames").rglob("*")
                    if p.is_file() and p.name != "zarr.json")
    return store, st, parcel, chunks


@pytest.mark.parametrize("damage", ["flipped", "truncated"])
def test_a_parcel_corrupted_before_commit_is_rejected_then_redone(media, tmp_path, damage):
    """A staged parcel whose bytes changed on disk (or whose chunk no longer even decompresses)
    is rejected at commit: the video is not made visible but listed as a failure, the commit
    goes on, and the next run extracts it again."""
    ds = media["ds"]
    store, st, parcel, chunks = _c_staged(media, tmp_path)
    data = bytearray(chunks[0].read_bytes())
    if damage == "flipped":
        data[len(data) // 2] ^= 0xFF
    else:
        del data[len(data) // 3:]
    chunks[0].write_bytes(bytes(data))
    counts = st.commit()
    assert counts["rejected"] == 1
    st = open_store(store)
    assert "c" not in st.ids() and st.verify() == []
    f = {f.id: f for f in st.failures()}["c"]
    assert "checksum" in f.reason and "\n" not in f.reason
    s = extract(ds, store, stages=plan_stages(["decode"]), device="cpu", progress=False, limit=3)
    assert (s.done, s.skipped) == (1, 2)
    st = open_store(store)
    assert "c" in st.ids() and "c" not in {f.id for f in st.failures()}
    assert np.array_equal(st.read("c", ["frames"])["frames"], media["ref"].read("c", ["frames"])["frames"])


@pytest.mark.parametrize("case", ["chunk file deleted", "parcel from before chunk crc32c"])
def test_commit_check_without_decompressing_and_its_fallback(media, tmp_path, case):
    """Commit checks staged chunks by the crc32c ending each file: a deleted chunk fails too.
    A parcel staged by an older l2l (no crc32c) is read back and its CRC32s compared."""
    store, st, parcel, chunks = _c_staged(media, tmp_path)
    frames = store / "staging" / parcel / "frames"
    if case == "chunk file deleted":
        chunks[0].unlink()
    else:
        meta = json.loads((frames / "zarr.json").read_text())
        assert meta["attributes"].pop("l2l_every_chunk_crc32c") is True
        meta["codecs"] = [c for c in meta["codecs"] if c["name"] != "crc32c"]
        (frames / "zarr.json").write_text(json.dumps(meta))
        for c in chunks:                          # drop the crc32c zarr appended
            c.write_bytes(c.read_bytes()[:-4])
        sound = tmp_path / "sound"                # unharmed, the old parcel commits
        shutil.copytree(store, sound)
        assert open_store(sound).commit()["rejected"] == 0
        assert np.array_equal(open_store(sound).read("c", ["frames"])["frames"],
                              media["ref"].read("c", ["frames"])["frames"])
        data = bytearray(chunks[0].read_bytes())
        data[len(data) // 2] ^= 0xFF
        chunks[0].write_bytes(bytes(data))
    counts = st.commit()
    assert counts["rejected"] == 1
    st = open_store(store)
    assert "c" not in st.ids() and st.verify() == []
    assert "checksum" in {f.id: f for f in st.failures()}["c"].reason
