"""The one media reader (``core/media.py``): the teacher's clips from the decode pass, frames
picked by index (visualize), audio resampled in blocks, and what the decode stage's config and
keys do with the clip options.  Everything is checked against plain PyAV run independently here."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from helpers import mux_stereo_tone, write_raw
from l2l.core.audio_windows import AudioWindows, BlockResampler
from l2l.core.errors import L2LError
from l2l.core.media import ClipSpec, DecodeError, read_frames, read_moments
from l2l.stages.decode import Decode, DecodeConfig, decode_video

REPO = Path(__file__).resolve().parents[1]


def _textured_video(path: Path, frames: int = 40, size=(80, 60)) -> Path:
    """Lossless H.264 with a different noise texture in every frame (so a wrong frame, offset or
    scale shows), plus a 44.1 kHz stereo AAC tone of the same length."""
    w, h = size
    rng = np.random.default_rng(3)
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=30)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv444p"
        vs.options = {"qp": "0", "preset": "ultrafast"}
        aus = out.add_stream("aac", rate=44100, layout="stereo")
        for i in range(frames):
            img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            for p in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
        mux_stereo_tone(out, aus, frames / 30, (500, 900))
    return path


def _all_frames(path: Path, **reformat) -> list[np.ndarray]:
    """Every decoded frame, converted by PyAV directly (a fresh reformat per frame)."""
    with av.open(str(path)) as c:
        return [f.reformat(format="rgb24", **reformat).to_ndarray() for f in c.decode(video=0)]


def test_clips_are_the_frames_step_apart_resized_and_cropped(tmp_path):
    path = _textured_video(tmp_path / "t.mp4", frames=40)
    d = decode_video(path, DecodeConfig(clip_len=16))        # step 2, 128x171, crop 112
    full = _all_frames(path, width=171, height=128)
    crop = [f[8:120, 30:142] for f in full]                  # torchvision's centre crop offsets
    assert len(full) == 40
    assert d["clips"].shape == (3, 16, 112, 112, 3) and d["clips"].dtype == np.uint8
    for k, m in enumerate([0, 16, 32]):
        for p in range(16):
            i = min(m + 2 * p, 39)                           # past the end: the last decoded frame
            assert np.array_equal(d["clips"][k, p], crop[i]), (k, p, i)
    # moment 1 ends with frames 38 then 39 repeated (not 38, the last frame on its step)
    assert np.array_equal(d["clips"][1, 11], crop[38])
    assert all(np.array_equal(d["clips"][1, p], crop[39]) for p in range(12, 16))
    assert not np.array_equal(crop[38], crop[39])


def test_clip_geometry_is_its_own(tmp_path):
    path = _textured_video(tmp_path / "t.mp4", frames=20)
    spec = ClipSpec(length=3, step=5, resize=(64, 72), crop=40)
    d = read_moments(path, clips=spec)
    full = _all_frames(path, width=72, height=64)
    y0, x0 = spec.origin()
    assert (y0, x0) == (12, 16)
    assert d["clips"].shape == (2, 3, 40, 40, 3)
    for k, m in enumerate([0, 16]):
        for p in range(3):
            assert np.array_equal(d["clips"][k, p], full[min(m + 5 * p, 19)][y0:y0 + 40, x0:x0 + 40])


def test_clips_change_nothing_else_and_no_key(tmp_path):
    path = _textured_video(tmp_path / "t.mp4", frames=40)
    plain, with_clips = decode_video(path), decode_video(path, DecodeConfig(clip_len=16))
    assert "clips" not in plain
    for k in ("frames", "times", "frame_index", "waveform"):
        assert np.array_equal(plain[k], with_clips[k]), k
    a, b = Decode(DecodeConfig()), Decode(DecodeConfig(clip_len=16, clip_resize=[120, 150], clip_crop=96))
    assert a.config_hash == b.config_hash and a.key({"source": "x"}) == b.key({"source": "x"})
    assert a.outputs == ("frames", "times", "frame_index", "waveform")
    assert a.transient == ("waveform",)
    assert b.outputs[-1] == "clips" and "clips" in b.transient
    assert Decode(DecodeConfig(keep_frames=False)).transient == ("waveform", "frames")
    # a different moment grid is a different key
    assert Decode(DecodeConfig(stride=8)).config_hash != a.config_hash


def test_decode_config_round_trips_with_its_tuple_field():
    c = DecodeConfig(clip_len=16, clip_resize=(120, 160))
    back = DecodeConfig(**json.loads(json.dumps(dataclasses.asdict(c))))   # a list from JSON
    assert back == c and back.clip_resize == (120, 160)
    assert dataclasses.replace(c, clip_resize=[128, 171]).clip_resize == (128, 171)
    assert DecodeConfig(clip_resize="128x171").clip_resize == (128, 171)
    hash(back)
    with pytest.raises(ValueError):
        DecodeConfig(clip_len=16, clip_crop=200)


def test_block_resampled_audio_equals_frame_by_frame_resampling(tmp_path):
    """Several 1.5 s blocks of 44.1 kHz stereo: each window must equal, bit for bit, the
    stream that one ``AudioResampler.resample`` call per decoded frame gives (the old way)."""
    path = _textured_video(tmp_path / "t.mp4", frames=150)     # 5 s
    chunks, t0 = [], None
    res = av.AudioResampler(format="flt", layout="mono", rate=16000)
    with av.open(str(path)) as c:
        for f in c.decode(audio=0):
            for rf in res.resample(f):
                t0 = f.time if t0 is None else t0
                chunks.append(rf.to_ndarray().reshape(-1))
    for rf in res.resample(None):
        chunks.append(rf.to_ndarray().reshape(-1))
    stream = np.concatenate(chunks)
    d = decode_video(path)
    assert len(d["times"]) == 10 and d["has_audio"]
    for k, t in enumerate(d["times"]):
        s0 = int(round((t - t0) * 16000))
        want = np.zeros(16000, np.float32)
        seg = stream[max(s0, 0):s0 + 16000]
        want[max(0, -s0):max(0, -s0) + len(seg)] = seg
        assert np.array_equal(d["waveform"][k], want), k
    assert np.abs(d["waveform"][3]).max() > 0.2


def _windows(path: Path, blocks: bool) -> AudioWindows:
    """The audio side of ``read_moments`` on its own.  ``blocks=False``: every frame resampled
    alone and ``last_time`` updated at every video frame, as decode did before blocks."""
    win = AudioWindows(16000, 1.0)
    res = BlockResampler(16000, win, av.AudioResampler(format="flt", layout="mono", rate=16000),
                         av.AudioFifo)
    n, last_t = 0, None
    with av.open(str(path)) as c:
        for f in c.decode(*c.streams.video[:1], *c.streams.audio[:1]):
            if isinstance(f, av.VideoFrame):
                last_t = float(f.time)
                if n % 16 == 0 or not blocks:
                    win.last_time = last_t
                if n % 16 == 0:
                    win.add_moment(n // 16, last_t)
                n += 1
            elif not (blocks and res.push(f)):
                win.last_time = last_t
                res.push_one(f)
    win.last_time = last_t
    res.finish()
    win.finish()
    return win


@pytest.mark.parametrize("case", ["tail", "late", "plain"])
def test_blocks_keep_the_old_bound_on_audio_ahead_of_the_video(tmp_path, case):
    """Near the 120 s bound frames are resampled one by one: what is stored, what is only
    counted, and whether a window overran are exactly as with one call per frame."""
    path = {"tail": lambda: write_raw(tmp_path / "tail.mkv", frames=40, audio_seconds=150),
            "late": lambda: write_raw(tmp_path / "late.mkv", frames=20, video_offset=122 * 30,
                                      audio_seconds=126, audio_first=True),
            "plain": lambda: _textured_video(tmp_path / "t.mp4", frames=100)}[case]()
    old, new = _windows(path, blocks=False), _windows(path, blocks=True)
    assert (new.stored, new.seen, new.overrun) == (old.stored, old.seen, old.overrun)
    assert sorted(new.out) == sorted(old.out)
    assert all(np.array_equal(new.out[k], old.out[k]) for k in old.out)
    if case == "tail":           # 150 s of audio after 1.3 s of video: ~121.3 s kept
        assert old.seen == 150 * 16000 and abs(old.stored - 121.3 * 16000) < 16000
    assert old.overrun == (case == "late")


def test_read_frames_picks_decoded_frames_by_index(tmp_path):
    path = _textured_video(tmp_path / "t.mp4", frames=40)
    d = decode_video(path)
    got = read_frames(path, [16, 0, 32, 16])
    assert np.array_equal(got, d["frames"][[1, 0, 2, 1]])
    with pytest.raises(DecodeError, match=r"has no decoded frame\(s\) \[40\]"):
        read_frames(path, [3, 40])


def test_errors_are_one_line_l2l_errors(tmp_path):
    from l2l.stages.decode import DecodeError as Reexported
    assert Reexported is DecodeError and issubclass(DecodeError, L2LError)
    assert issubclass(DecodeError, RuntimeError)
    with pytest.raises(DecodeError, match="file not found"):
        read_frames(tmp_path / "nope.mp4", [0])


def test_decoding_imports_no_torch(tmp_path):
    path = _textured_video(tmp_path / "t.mp4", frames=20)
    code = ("import sys; from l2l.stages.decode import decode_video; "
            f"d = decode_video({str(path)!r}); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchaudio', "
            "'torchvision', 'zarr', 'dask')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", out.stdout
