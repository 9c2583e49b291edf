"""`l2l extract` end to end on small real files: resume, failures, changed configs, the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from l2l.cli.main import main
from l2l.stages.decode import decode_video
from l2l.stages.spectrogram import Spectrogram
from l2l.store import open_store


@pytest.fixture
def activitynet_set(tmp_path, make_video):
    """Five listed videos: three good (one silent), one truncated, one random bytes; plus one
    listed but missing."""
    vids = tmp_path / "videos"
    vids.mkdir()
    make_video("videos/v_good1.mp4", frames=64, tone_hz=500.0)
    make_video("videos/good2.mp4", frames=40, tone_hz=900.0)
    make_video("videos/v_mute.mp4", frames=48, audio_rate=None)
    full = make_video("full.mp4", frames=300, lossless=False)
    data = full.read_bytes()
    (vids / "v_trunc.mp4").write_bytes(data[: len(data) // 2])
    (vids / "v_noise.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    db = {}
    for vid, label in [("good1", "Run"), ("good2", "Swim"), ("mute", "Run"), ("trunc", "Swim"),
                       ("noise", "Run"), ("gone", "Swim")]:
        db[vid] = {"subset": "training", "duration": 2.0, "url": "",
                   "annotations": [{"segment": [0.0, 1.0], "label": label}]}
    ann = tmp_path / "activity_net.v1-3.min.json"
    ann.write_text(json.dumps({"version": "VERSION 1.3", "database": db}))
    return tmp_path, vids, ann


def _extract(store, vids, ann, *extra):
    r = CliRunner().invoke(main, ["extract", "--dataset", "activitynet", "--videos", str(vids),
                                  "--annotations", str(ann), "--store", str(store),
                                  "--no-progress", *extra])
    return r


def test_extract_failures_resume_and_verify(activitynet_set):
    root, vids, ann = activitynet_set
    store = root / "store"
    r = _extract(store, vids, ann)
    assert r.exit_code == 0, r.output
    assert "done 3 / skipped 0 / failed 3" in r.output
    st = open_store(store)
    assert st.ids() == ["good1", "good2", "mute"]
    fails = {f.id: f for f in st.failures()}
    assert set(fails) == {"trunc", "noise", "gone"}
    for f in fails.values():
        assert "\n" not in f.reason and f.reason
    assert fails["trunc"].reason == (f"{vids / 'v_trunc.mp4'}: cannot open (corrupt, truncated or "
                                     "not media): Invalid data found when processing input")
    assert str(vids / "v_noise.mp4") in fails["noise"].reason
    assert "not found" in fails["gone"].reason
    # the silent video is kept, flagged, with log-silence
    m = st.meta("mute")
    assert not m.has_audio and m.num_moments == 3
    assert np.all(st.read("mute", ["logmel"])["logmel"] == np.float16(np.log(1e-6)))
    # decode -> store -> read is exact
    d = decode_video(vids / "v_good1.mp4")
    got = st.read("good1", ["frames", "times", "logmel"])
    assert np.array_equal(got["frames"], d["frames"]) and np.array_equal(got["times"], d["times"])
    assert np.array_equal(got["logmel"], Spectrogram().run({"waveform": d["waveform"]})["logmel"])
    assert st.meta("good1").labels == ("Run",)
    r = CliRunner().invoke(main, ["store", "verify", str(store)])
    assert r.exit_code == 0 and "OK (3 videos verified)" in r.output
    # a second run skips everything done; the files that failed to decode are not decoded
    # again (same bytes, same settings), the missing one is looked for again
    r = _extract(store, vids, ann)
    assert "done 0 / skipped 3 / failed 3" in r.output, r.output
    assert r.output.count("(recorded earlier; --retry-failed tries again)") == 2
    assert open_store(store).failures() == st.failures()
    r = _extract(store, vids, ann, "--retry-failed")
    assert "done 0 / skipped 3 / failed 3" in r.output and "recorded earlier" not in r.output


def test_changed_spectrogram_setting_is_detected_and_recomputed(activitynet_set):
    root, vids, ann = activitynet_set
    store = root / "store"
    _extract(store, vids, ann, "--limit", "3")                   # good1, good2, mute
    before = open_store(store)
    old_key = before.records("good1")["logmel"].key
    old_frames_key = before.records("good1")["frames"].key
    r = _extract(store, vids, ann, "--limit", "2", "--set", "spectrogram.floor=1e-3")
    assert "done 2 / skipped 0" in r.output, r.output
    st = open_store(store)
    rec = st.records("good1")["logmel"]
    assert rec.key != old_key and rec.config["floor"] == 1e-3
    assert st.records("good1")["frames"].key == old_frames_key     # decode was not redone
    assert st.read("good1", ["logmel"])["logmel"].min() >= np.float16(np.log(1e-3))
    # the same setting again: everything skipped
    r = _extract(store, vids, ann, "--limit", "2", "--set", "spectrogram.floor=1e-3")
    assert "done 0 / skipped 2" in r.output
    # "mute" still has the old setting: readers refuse to mix the two, verify reports it
    with pytest.raises(Exception, match="different configs"):
        st.read_many(["logmel"])
    assert any("mixes 2 configs" in str(p) for p in st.verify())
    r = _extract(store, vids, ann, "--limit", "3", "--set", "spectrogram.floor=1e-3")
    assert "done 1 / skipped 2" in r.output
    assert open_store(store).read_many(["logmel"]).arrays["logmel"].shape[0] == 10


def test_bad_options_and_annotations_are_one_line(activitynet_set, tmp_path):
    root, vids, ann = activitynet_set
    r = _extract(root / "s", vids, ann, "--set", "spectrogram.nope=1")
    assert r.exit_code != 0 and "has no option nope" in r.output
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    r = _extract(root / "s", vids, bad)
    assert r.exit_code != 0 and str(bad) in r.output and "invalid JSON" in r.output


def test_store_info_and_hdf5_export_cli(activitynet_set):
    root, vids, ann = activitynet_set
    store = root / "store"
    _extract(store, vids, ann)
    r = CliRunner().invoke(main, ["store", "info", str(store)])
    assert r.exit_code == 0 and "logmel" in r.output and "failures   3" in r.output
    r = CliRunner().invoke(main, ["store", "export", str(store), str(root / "x.h5")])
    assert r.exit_code == 0, r.output
    h = open_store(root / "x.h5")
    assert h.ids() == open_store(store).ids()
    assert np.array_equal(h.read_many(["logmel"]).arrays["logmel"],
                          open_store(store).read_many(["logmel"]).arrays["logmel"])


def test_a_store_path_that_is_a_file_is_one_line(activitynet_set):
    root, vids, ann = activitynet_set
    f = root / "notes.txt"
    f.write_text("not a store")
    r = CliRunner().invoke(main, ["extract", "--dataset", "activitynet", "--videos", str(vids),
                                  "--annotations", str(ann), "--store", str(f), "--no-progress"])
    assert r.exit_code == 1 and "Traceback" not in r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(f) in lines[0] and "not an l2l feature store" in lines[0]
    assert f.read_text() == "not a store"


def test_backend_asked_for_is_recorded_whatever_the_suffix(activitynet_set):
    root, vids, ann = activitynet_set
    r = CliRunner().invoke(main, ["extract", "--dataset", "activitynet", "--videos", str(vids),
                                  "--annotations", str(ann), "--store", str(root / "x.h5"),
                                  "--backend", "zarr", "--stages", "decode", "--no-progress"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["store", "verify", str(root / "x.h5")])
    assert r.exit_code == 0 and "OK (3 videos verified)" in r.output, r.output
    assert open_store(root / "x.h5").backend == "zarr"


@pytest.mark.parametrize("slots", [1, 3])
def test_videos_decoded_at_once_change_nothing_stored(activitynet_set, monkeypatch, slots):
    """Decode-ahead (several videos of a shard decoded at once, one decoder thread each) stores
    the same arrays, provenance and failures as one video after another."""
    from l2l.pipeline.process import Run
    root, vids, ann = activitynet_set
    monkeypatch.setattr(Run, "decode_slots", lambda self: 1)
    assert _extract(root / "one", vids, ann, "--stages", "decode,spectrogram").exit_code == 0
    monkeypatch.setattr(Run, "decode_slots", lambda self: slots)
    r = _extract(root / "many", vids, ann, "--stages", "decode,spectrogram")
    assert r.exit_code == 0 and "done 3 / skipped 0 / failed 3" in r.output, r.output
    a, b = open_store(root / "one"), open_store(root / "many")
    assert a.ids() == b.ids() == ["good1", "good2", "mute"]
    assert [(f.id, f.stage, f.reason) for f in a.failures()] == \
        [(f.id, f.stage, f.reason) for f in b.failures()]
    for vid in a.ids():
        assert a.records(vid) == b.records(vid) and a.meta(vid) == b.meta(vid)
        x, y = a.read(vid, ["frames", "times", "logmel"]), b.read(vid, ["frames", "times", "logmel"])
        assert all(np.array_equal(x[k], y[k]) for k in x)
    assert b.verify() == []


def test_commits_are_periodic_but_never_more_than_their_share_of_the_run():
    from l2l.pipeline.extract import COMMIT_EVERY, COMMIT_SECONDS, COMMIT_SHARE, _commit_due
    n = COMMIT_EVERY
    assert not _commit_due(0, 10 * COMMIT_SECONDS, 0.0)          # nothing to commit
    assert not _commit_due(n - 1, 1.0, 0.01) and _commit_due(n, 1.0, 0.01)
    # a commit that took 1.3 s (a 20,000-video index) is not repeated within 1.3 / share s
    wait = 1.3 / COMMIT_SHARE - 1.3
    assert not _commit_due(10 * n, wait - 0.1, 1.3) and _commit_due(10 * n, wait + 0.1, 1.3)
    assert _commit_due(1, COMMIT_SECONDS + 1, 30.0)               # but never later than this
