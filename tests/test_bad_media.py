"""Bad and unusual media (issue 7): each file either extracts correctly or is recorded with a
one-line reason naming it; none stops the run; nothing already in the store changes.  Memory
stays bounded however large the frames or long the file (``test_memory.py``).

One ``l2l extract`` run goes over every case below (``bad_run``); each case is then its own test
of what the store holds for it.  The files are written here: the shared ``write_video`` (flat
colour frames whose red channel encodes the frame index, plus a sine tone) and, for big frames,
long audio, odd interleaving and faststart mp4s, the small writers in ``conftest.py``.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner

from l2l.cli.main import main
from l2l.stages.decode import decode_video
from l2l.stages.spectrogram import Spectrogram
from l2l.store import open_store
from helpers import fps_filter_picks, remux, write_audio_only, write_raw, write_video, write_vp9_opus

REPO = Path(__file__).resolve().parents[1]
SILENCE = np.float16(np.log(1e-6))          # log-mel of a zero window (spectrogram floor)


def _vfr_times():
    t = [0.0]
    for i in range(1, 40):
        t.append(t[-1] + (0.02 if i < 20 else 0.1))
    return t


# ---- the cases -------------------------------------------------------------------------------
# id -> (file name, writer(path, scratch dir)).  Expectations are the tests further down.
def _truncate(src_writer, frac):
    def make(path: Path, scratch: Path) -> Path:
        full = src_writer(scratch / f"full-{path.name}")
        data = full.read_bytes()
        path.write_bytes(data[:int(len(data) * frac)])
        return path
    return make


def _full_mp4(path):            # index (moov) at the end, the muxer's default
    return write_video(path, frames=150, lossless=False) if not path.exists() else path


def _faststart_mp4(path):       # index at the start
    if path.exists():
        return path
    tmp = write_video(path.with_name("plain-" + path.name), frames=150, lossless=False)
    return remux(tmp, path, movflags="faststart")


def _full_mkv(path):
    return write_video(path, frames=150, lossless=False) if not path.exists() else path


CASES = {
    "empty": ("empty.mp4", lambda p, s: (p.write_bytes(b""), p)[1]),
    "random": ("random.mp4", lambda p, s: (p.write_bytes(np.random.default_rng(7).bytes(20000)), p)[1]),
    **{f"trunc_end_{int(f * 100)}": (f"trunc_end_{int(f * 100)}.mp4",
                                     _truncate(lambda q: _full_mp4(q.with_name("end.mp4")), f))
       for f in (0.01, 0.3, 0.6, 0.9)},
    **{f"trunc_start_{int(f * 100)}": (f"trunc_start_{int(f * 100)}.mp4",
                                       _truncate(lambda q: _faststart_mp4(q.with_name("start.mp4")), f))
       for f in (0.05, 0.3, 0.5, 0.7, 0.95)},
    **{f"trunc_mkv_{int(f * 100)}": (f"trunc_mkv_{int(f * 100)}.mkv",
                                     _truncate(lambda q: _full_mkv(q.with_name("full.mkv")), f))
       for f in (0.1, 0.5)},
    "audio_only": ("audio_only.mp4", lambda p, s: write_audio_only(p)),
    "video_only": ("video_only.mp4", lambda p, s: write_video(p, frames=40, audio_rate=None)),
    "one_frame": ("one_frame.mp4", lambda p, s: write_video(p, frames=1)),
    "short_03s": ("short_03s.mp4", lambda p, s: write_video(p, frames=9)),
    "odd_ffv1": ("odd_ffv1.mkv", lambda p, s: write_video(p, frames=20, size=(97, 61), codec="ffv1",
                                                          pix_fmt="yuv444p")),
    "odd_mpeg4": ("odd_mpeg4.avi", lambda p, s: write_video(p, frames=20, size=(97, 61), codec="mpeg4",
                                                            pix_fmt="yuv420p")),
    "odd_x264_444": ("odd_x264_444.mp4", lambda p, s: write_video(p, frames=20, size=(97, 61),
                                                                  pix_fmt="yuv444p")),
    "x264_10bit": ("x264_10bit.mp4", lambda p, s: write_video(p, frames=20, pix_fmt="yuv420p10le")),
    "x264_444": ("x264_444.mp4", lambda p, s: write_video(p, frames=20, pix_fmt="yuv444p")),
    "vfr": ("vfr.mp4", lambda p, s: write_video(p, frames=40, vfr_times=_vfr_times())),
    "audio_8k": ("audio_8k.mp4", lambda p, s: write_video(p, frames=40, audio_rate=8000, tone_hz=1000.0)),
    "audio_44k": ("audio_44k.mp4", lambda p, s: write_video(p, frames=40, audio_rate=44100, tone_hz=1000.0)),
    "audio_51": ("audio_51.mp4", lambda p, s: write_video(p, frames=40, audio_rate=48000, channels="5.1",
                                                          tone_hz=1000.0)),
    "audio_short": ("audio_short.mp4", lambda p, s: write_video(p, frames=90, audio_seconds=0.5)),
    "audio_long_mp4": ("audio_long_mp4.mp4", lambda p, s: write_video(p, frames=30, audio_seconds=5.0)),
    "audio_long_mkv": ("audio_long_mkv.mkv", lambda p, s: write_video(p, frames=30, audio_seconds=5.0)),
    "audio_tail_10min": ("audio_tail_10min.mkv", lambda p, s: write_raw(p, frames=2, audio_seconds=600)),
    "late_video": ("late_video.mkv", lambda p, s: write_raw(p, frames=20, video_offset=150 * 30,
                                                            audio_seconds=160, audio_first=True)),
    "uhd_4k": ("uhd_4k.mp4", lambda p, s: write_raw(p, frames=2, size=(3840, 2160))),
    "vp9_opus": ("vp9_opus.webm", lambda p, s: write_vp9_opus(p)),
}
KEEPER = "keeper"                     # committed before the bad run: must not change

ANY_CUT = r"cannot open|cannot decode|decode error after \d+ frames|truncated: decoded"
FAILS = {                             # id -> regex its one-line reason must match
    "empty": r"empty file \(0 bytes\)",
    "random": r"cannot open \(corrupt, truncated or not media\)",
    **{f"trunc_end_{p}": r"cannot open \(corrupt, truncated or not media\)" for p in (1, 30, 60, 90)},
    **{f"trunc_start_{p}": ANY_CUT for p in (5, 30, 50, 70, 95)},
    **{f"trunc_mkv_{p}": ANY_CUT for p in (10, 50)},
    "audio_only": r"no video stream",
    "late_video": r"audio runs more than 120 s ahead of the video",
}


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory):
    """Extract KEEPER alone, snapshot it, then extract KEEPER + every case in one CLI run."""
    root = tmp_path_factory.mktemp("bad")
    vids, scratch = root / "videos", root / "scratch"
    vids.mkdir()
    scratch.mkdir()
    write_video(vids / f"{KEEPER}.mp4", frames=48, tone_hz=600.0)
    paths = {KEEPER: vids / f"{KEEPER}.mp4"}
    for vid, (name, make) in CASES.items():
        paths[vid] = make(vids / name, scratch)
    db = {vid: {"subset": "training", "duration": 1.0, "url": "",
                "annotations": [{"segment": [0.0, 1.0], "label": "Run"}]} for vid in paths}
    ann = root / "anno.json"
    ann.write_text(json.dumps({"version": "VERSION 1.3", "database": db}))   # KEEPER first
    store = root / "store"

    def run(*extra):
        return CliRunner().invoke(main, ["extract", "--dataset", "activitynet", "--videos", str(vids),
                                         "--annotations", str(ann), "--store", str(store),
                                         "--no-progress", "--device", "cpu", *extra])

    first = run("--limit", "1")
    assert first.exit_code == 0, first.output
    before = open_store(store)
    snap = {"entry": json.loads(json.dumps(before.index["videos"][KEEPER])),
            "arrays": before.read(KEEPER, ["frames", "times", "frame_index", "logmel"]),
            "segment": _tree_digest(store / "segments" / before.index["videos"][KEEPER]["fields"]["frames"]["seg"])}
    result = run()
    return {"root": root, "store": store, "paths": paths, "result": result, "snap": snap,
            "st": open_store(store)}


def _tree_digest(d: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(d.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(d)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


# ---- the run as a whole ----------------------------------------------------------------------
def test_no_case_stops_the_run_and_every_one_is_accounted_for(bad_run):
    r = bad_run["result"]
    assert r.exit_code == 0, r.output
    st = bad_run["st"]
    ok = set(CASES) - set(FAILS)
    m = re.search(r"done (\d+) / skipped (\d+) / failed (\d+)", r.output)
    assert m and tuple(map(int, m.groups())) == (len(ok), 1, len(FAILS)), r.output
    assert set(st.ids()) == ok | {KEEPER}
    assert {f.id for f in st.failures()} == set(FAILS)
    assert st.verify() == []
    # the CLI lists each failure on one line of its own
    for vid in FAILS:
        assert sum(str(bad_run["paths"][vid]) in line for line in r.output.splitlines()) == 1


def test_nothing_already_in_the_store_changes(bad_run):
    st, snap = bad_run["st"], bad_run["snap"]
    assert st.index["videos"][KEEPER] == snap["entry"]
    got = st.read(KEEPER, list(snap["arrays"]))
    for name, a in snap["arrays"].items():
        assert np.array_equal(got[name], a), name
    seg = snap["entry"]["fields"]["frames"]["seg"]
    assert _tree_digest(bad_run["store"] / "segments" / seg) == snap["segment"]


@pytest.mark.parametrize("vid", sorted(FAILS))
def test_unusable_file_is_recorded_with_one_line_reason(bad_run, vid):
    f = {f.id: f for f in bad_run["st"].failures()}[vid]
    path = str(bad_run["paths"][vid])
    assert "\n" not in f.reason and f.reason.startswith(f"{path}: ")
    assert re.search(FAILS[vid], f.reason), f.reason
    assert f.stage == "decode" and f.source == path
    assert vid not in bad_run["st"].ids()


# ---- what the store holds for each usable case -----------------------------------------------
def _stored(bad_run, vid):
    st = bad_run["st"]
    return st.meta(vid), st.read(vid, ["frames", "times", "frame_index", "logmel"])


def _pts_times(path) -> list[float]:
    with av.open(str(path)) as c:
        return [float(f.time) for f in c.decode(video=0)]


def _check_grid(bad_run, vid, *, has_audio: bool):
    """Moments = FFmpeg's fps=30 picks every 16/30 s (computed independently), 112x112 frames,
    spectrograms equal to those of the decoded windows."""
    meta, a = _stored(bad_run, vid)
    times = _pts_times(bad_run["paths"][vid])
    picks = fps_filter_picks(bad_run["paths"][vid])
    n = len(picks)
    if vid != "vfr":                      # 30 fps files: as many moments as frames / 16
        assert n == (len(times) + 15) // 16
    assert meta.num_moments == n and meta.has_audio is has_audio
    assert a["frames"].shape == (n, 112, 112, 3) and a["frames"].dtype == np.uint8
    assert a["frame_index"].tolist() == picks
    assert np.allclose(a["times"], times[0] + np.arange(n) * 16 / 30, atol=1e-9)
    d = decode_video(bad_run["paths"][vid])
    assert np.array_equal(a["logmel"], Spectrogram().run({"waveform": d["waveform"]})["logmel"])
    return meta, a, d


@pytest.mark.parametrize("vid,tol", [("odd_ffv1", 0), ("odd_x264_444", 0), ("odd_mpeg4", 12),
                                     ("x264_10bit", 3), ("x264_444", 0), ("vp9_opus", 6)])
def test_odd_sizes_pixel_formats_and_codecs_give_112_frames_with_the_right_colour(bad_run, vid, tol):
    _, a, _ = _check_grid(bad_run, vid, has_audio=True)
    # frame i is flat (red i*5, green 100, blue 200): moments 0, 16, 32 -> red 0, 80, 160
    centre = a["frames"][:, 40:72, 40:72].astype(int)
    expect = np.array([[k * 80, 100, 200] for k in range(len(centre))])
    assert np.abs(centre.mean(axis=(1, 2)) - expect).max() <= tol + 2, centre.mean(axis=(1, 2))
    assert a["frames"].std(axis=(1, 2)).max() <= tol + 1        # still flat after resize + crop


def test_vp9_opus_webm_has_its_tone(bad_run):
    d = decode_video(bad_run["paths"]["vp9_opus"])
    assert abs(np.argmax(np.abs(np.fft.rfft(d["waveform"][0]))) - 700) <= 3


def test_4k_frames_come_out_112(bad_run):
    meta, a = _stored(bad_run, "uhd_4k")
    assert meta.num_moments == 1 and a["frames"].shape == (1, 112, 112, 3)
    assert abs(int(a["frames"][0, 56, 56, 1]) - int(a["frames"][0, 56, 56, 0])) <= 2   # grey: luma 0


@pytest.mark.parametrize("vid", ["video_only", "one_frame", "short_03s", "vfr"])
def test_video_only_single_frame_short_and_vfr(bad_run, vid):
    meta, a, d = _check_grid(bad_run, vid, has_audio=vid != "video_only")
    if vid == "video_only":
        assert np.all(a["logmel"] == SILENCE)
    if vid in ("one_frame", "short_03s"):
        assert meta.num_moments == 1
        n = {"one_frame": 1, "short_03s": 9}[vid] * 16000 // 30      # samples of tone
        w = d["waveform"][0]
        assert np.sqrt((w[:n - 400] ** 2).mean()) > 0.2 and np.all(w[n + 1200:] == 0)
    if vid == "vfr":
        vfr = _vfr_times()                # 2.38 s: moments at 0, 16/30, ..., 64/30 s
        assert np.allclose(a["times"], np.arange(5) * 16 / 30) and vfr[-1] < 80 / 30


@pytest.mark.parametrize("vid", ["audio_8k", "audio_44k", "audio_51"])
def test_other_sample_rates_and_channels_are_windowed_at_16k_mono(bad_run, vid):
    _, a, d = _check_grid(bad_run, vid, has_audio=True)
    for w in d["waveform"][:2]:
        assert abs(np.argmax(np.abs(np.fft.rfft(w))) - 1000) <= 3      # 1 s window: bin = Hz
        rms = np.sqrt((w[:8000] ** 2).mean())
        # a 0.5-amplitude tone (rms 0.354); FFmpeg's default 5.1 -> mono matrix adds the channels
        # (C + 0.707 (L + R) + 0.5 (Ls + Rs)), so the same tone in all six comes out ~3.4x louder
        assert 0.3 < rms < 0.4 if vid != "audio_51" else 1.1 < rms < 1.3


def test_audio_shorter_than_video_pads_with_silence(bad_run):
    _, a, d = _check_grid(bad_run, "audio_short", has_audio=True)
    assert a["logmel"].shape[0] == 6
    assert np.sqrt((d["waveform"][0][:7000] ** 2).mean()) > 0.2      # the first 0.5 s has the tone
    assert np.all(d["waveform"][2:] == 0) and np.all(a["logmel"][2:] == SILENCE)


@pytest.mark.parametrize("vid", ["audio_long_mp4", "audio_long_mkv", "audio_tail_10min"])
def test_audio_longer_than_video_keeps_the_video_grid(bad_run, vid):
    meta, a, d = _check_grid(bad_run, vid, has_audio=True)
    assert meta.num_moments == {"audio_tail_10min": 1}.get(vid, 2)
    # every window lies inside the audio: full tone, no padding
    assert np.all(np.sqrt((d["waveform"] ** 2).mean(axis=1)) > 0.3)
