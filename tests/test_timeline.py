"""The paper's 30 fps timeline (``core/timeline.py``): moment k at t0 + k x 16/30 s gets the last
decoded frame at or before that time, its audio window starts there, its clip frames are 2/30 s
apart and picked the same way; ``grid="frames"`` keeps every 16th decoded frame.

The reference is FFmpeg's own ``fps=30:round=up`` filter run through PyAV's filter graph
(``helpers.fps_filter_picks``); ``benchmarks/check_display.py`` checks the same against the
``ffmpeg`` command line."""
from __future__ import annotations

import fractions
from pathlib import Path

import av
import numpy as np
import pytest

from helpers import fps_filter_picks, mux_stereo_tone
from l2l.core.hashing import stable_hash
from l2l.core.timeline import Timeline
from l2l.stages.decode import Decode, DecodeConfig, decode_video


def _tagged(path: Path, fps: int, seconds: float = 2.0, times=None, audio: bool = True) -> Path:
    """Lossless H.264 whose every frame is a different noise texture, plus a 44.1 kHz stereo AAC
    tone of the same length.  ``times``: explicit pts (s) for a variable frame rate."""
    rng = np.random.default_rng(fps)
    n = len(times) if times is not None else int(round(fps * seconds))
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = 48, 32, "yuv444p"
        vs.options = {"qp": "0", "preset": "ultrafast"}
        if times is not None:
            vs.codec_context.time_base = fractions.Fraction(1, 1000)
        aus = out.add_stream("aac", rate=44100, layout="stereo") if audio else None
        for i in range(n):
            f = av.VideoFrame.from_ndarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8),
                                           format="rgb24")
            if times is not None:
                f.pts, f.time_base = int(round(times[i] * 1000)), fractions.Fraction(1, 1000)
            for p in vs.encode(f):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
        if aus is not None:
            mux_stereo_tone(out, aus, times[-1] if times is not None else seconds, (500, 700))
    return path


def _vfr() -> list[float]:
    t = [0.0]
    for i in range(1, 60):
        t.append(t[-1] + (0.02 if i < 20 else 0.1 if i < 40 else 0.037))
    return t


def _decoded(path: Path):
    """(pts times as Fractions, every frame resized + cropped by PyAV directly)."""
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
    times = [f.pts * f.time_base for f in frames]
    rgb = [f.reformat(width=168, height=112, format="rgb24").to_ndarray()[:, 28:140] for f in frames]
    return times, rgb


@pytest.mark.parametrize("fps", [25, 30, 50, 60, "vfr"])
def test_moments_are_ffmpegs_30fps_picks(tmp_path, fps):
    path = (_tagged(tmp_path / "vfr.mp4", 30, times=_vfr()) if fps == "vfr"
            else _tagged(tmp_path / f"r{fps}.mp4", fps))
    times, rgb = _decoded(path)
    d = decode_video(path)
    picks = fps_filter_picks(path)
    n = int((times[-1] - times[0]) * 30 // 16) + 1           # moments at or before the last frame
    assert len(picks) == n and d["frame_index"].tolist() == picks
    assert np.array_equal(d["times"], [float(times[0] + fractions.Fraction(16 * k, 30)) for k in range(n)])
    for k, i in enumerate(picks):                            # the picked frame, resized + cropped
        assert times[i] <= times[0] + fractions.Fraction(16 * k, 30)
        assert i + 1 == len(times) or times[i + 1] > times[0] + fractions.Fraction(16 * k, 30)
        assert np.array_equal(d["frames"][k], rgb[i]), (k, i)
    if fps != "vfr":                                         # 2 s whatever the rate: 4 moments
        assert n == 4


def test_same_seconds_give_the_same_moments_whatever_the_rate(tmp_path):
    got = {fps: decode_video(_tagged(tmp_path / f"r{fps}.mp4", fps, seconds=3.0, audio=False))
           for fps in (25, 30, 60)}
    assert {len(d["times"]) for d in got.values()} == {6}
    assert all(np.array_equal(d["times"], got[30]["times"]) for d in got.values())
    # the old grid: every 16th decoded frame, so twice the moments at 60 fps as at 30 fps
    old = {fps: decode_video(tmp_path / f"r{fps}.mp4", DecodeConfig(grid="frames")) for fps in (30, 60)}
    assert [len(old[f]["times"]) for f in (30, 60)] == [6, 12]
    assert old[60]["frame_index"].tolist() == list(range(0, 180, 16))
    # on 30 fps files the two grids agree exactly
    for key in ("frame_index", "frames", "times", "waveform"):
        assert np.array_equal(old[30][key], got[30][key]), key


def test_audio_windows_start_at_the_grid_time(tmp_path):
    """25 fps: moment 1 is at 16/30 s but its frame at 0.52 s; its window starts at 16/30 s."""
    path = _tagged(tmp_path / "r25.mp4", 25, seconds=3.0)
    chunks, t0 = [], None
    res = av.AudioResampler(format="flt", layout="mono", rate=16000)
    with av.open(str(path)) as c:
        for f in c.decode(audio=0):
            for rf in res.resample(f):
                t0 = f.time if t0 is None else t0
                chunks.append(rf.to_ndarray().reshape(-1))
    chunks += [rf.to_ndarray().reshape(-1) for rf in res.resample(None)]
    stream = np.concatenate(chunks)
    d = decode_video(path)
    assert d["frame_index"].tolist()[:2] == [0, 13]
    for k, t in enumerate(d["times"]):
        s0 = int(round((t - t0) * 16000))
        want = np.zeros(16000, np.float32)
        seg = stream[max(s0, 0):s0 + 16000]
        want[max(0, -s0):max(0, -s0) + len(seg)] = seg
        assert np.array_equal(d["waveform"][k], want), k
    assert np.abs(d["waveform"][1]).max() > 0.2


@pytest.mark.parametrize("fps", [25, 60])
def test_clip_frames_are_2_30_s_apart_picked_the_same_way(tmp_path, fps):
    path = _tagged(tmp_path / f"r{fps}.mp4", fps, audio=False)
    d = decode_video(path, DecodeConfig(clip_len=16))
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
    clip = [f.reformat(width=171, height=128, format="rgb24").to_ndarray()[8:120, 30:142] for f in frames]
    every_tick = fps_filter_picks(path, stride=1)            # tick u's frame, up to the last frame
    for k in range(len(d["times"])):
        for j in range(16):
            u = 16 * k + 2 * j
            i = every_tick[u] if u < len(every_tick) else len(frames) - 1   # past the end: last
            assert np.array_equal(d["clips"][k, j], clip[i]), (k, j, i)
    plain = decode_video(path)
    for key in ("frame_index", "frames", "times"):
        assert np.array_equal(plain[key], d[key])


def test_grid_is_in_the_key_and_old_keys_differ():
    keys = {Decode(c).config_hash for c in (DecodeConfig(), DecodeConfig(grid="frames"),
                                            DecodeConfig(grid_rate=25.0))}
    assert len(keys) == 3
    old = {k: v for k, v in Decode().config_dict().items()          # a store from before the grid
           if k not in ("grid", "grid_rate", "display") + Decode.hash_exclude}
    assert stable_hash(old) not in keys | {Decode(DecodeConfig(grid="frames", display=False)).config_hash}
    with pytest.raises(ValueError, match="grid must be one of"):
        DecodeConfig(grid="seconds")


def test_timeline_ticks_without_decoding():
    """Ticks settled by positions alone: 25 fps in pts units of 1/12800 s."""
    line = Timeline("time", 16, 30.0, clip_len=2, clip_step=2)
    line.start(0, fractions.Fraction(1, 12800))
    settled = []
    for i in range(1, 50):
        settled += [(u, m, c, i - 1) for u, m, c in line.feed(512 * i)]
    settled += [(u, m, c, 49) for u, m, c in line.finish(512 * 49)]
    moments = [(m, f) for u, m, c, f in settled if m is not None]
    assert moments == [(0, 0), (1, 13), (2, 26), (3, 40)]          # last frame at 1.96 s
    assert [(c, f) for u, m, c, f in settled if u == 18] == [([(1, 1)], 15)]   # 0.6 s -> frame 15
