"""Decoding less (``core/skipping.py``): on B-frame H.264 and HEVC the decoder
skips the non-reference frames no moment or clip uses; every frame it does decode is bit-identical
to the full decode's, and so is every output.  VP9 (nothing gained) falls back to a full decode."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from l2l.core.media import read_moments
from l2l.core.skipping import frames as _frames, idr, skip_plan as _skip_plan
from l2l.core.picture import ClipSpec
from l2l.core.timeline import Timeline

ENCODERS = {"h264": ("libx264", {"preset": "veryfast", "bf": "3"}, "mp4"),
            "hevc": ("libx265", {"preset": "ultrafast", "x265-params": "bframes=3:log-level=none"},
                     "mp4"),
            "vp9": ("libvpx-vp9", {"deadline": "realtime", "cpu-used": "8"}, "webm")}


def _noisy(path: Path, codec: str, frames: int = 96, fps: int = 30, **extra) -> Path:
    """Moving noise (so that every frame is different and B-frames are coded), 64x48;
    ``extra``: encoder options over the codec's."""
    name, options, _ = ENCODERS[codec]
    options = {**options, **extra}
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    with av.open(str(path), "w") as out:
        vs = out.add_stream(name, rate=fps)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        vs.options = options
        for i in range(frames):
            img = np.roll(base, (i, 2 * i), (0, 1))[:48, :64].copy()
            for p in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
    return path


def _full(path: Path) -> dict[int, np.ndarray]:
    with av.open(str(path)) as c:
        return {f.pts: f.to_ndarray(format="yuv420p") for f in c.decode(video=0)}


@pytest.mark.parametrize("codec", ["h264", "hevc", "vp9"])
@pytest.mark.parametrize("clips", [None, ClipSpec()])
def test_kept_frames_and_outputs_equal_a_full_decode(tmp_path, codec, clips):
    path = _noisy(tmp_path / f"n.{ENCODERS[codec][2]}", codec)
    full = _full(path)
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        vs.thread_type = "AUTO"                  # frame threads: skip_frame set per packet
        line = Timeline("time", 16, 30.0, clip_len=clips.length if clips else 0,
                        clip_step=clips.step if clips else 1)
        plan = _skip_plan(path, vs, line)
        if codec == "vp9":
            assert plan is None                  # nothing to gain: a full decode
            return
        assert plan is not None and len(plan[1]) < len(full)
        got = {f.pts: f.to_ndarray(format="yuv420p") for f in _frames(c, vs, None, plan)}
    assert plan[1] <= set(got)                   # every needed frame came
    assert len(got) < len(full) * (0.9 if clips is None else 1)   # and some were skipped
    assert all(np.array_equal(got[p], full[p]) for p in got)      # bit-identical
    a = read_moments(path, clips=clips, skip_unused=False)
    b = read_moments(path, clips=clips)
    for key in a:
        if isinstance(a[key], np.ndarray):
            assert np.array_equal(a[key], b[key]), key
    g = read_moments(path, grid="frames", skip_unused=False)
    assert all(np.array_equal(v, read_moments(path, grid="frames")[k])
               for k, v in g.items() if isinstance(v, np.ndarray))


# Short GOPs: with a closed GOP every keyframe is an IDR picture, and the frames after a GOP's
# last needed one are not sent at all; with an open GOP (x264 open-gop, x265's default CRA
# keyframes) the keyframes are not IDR and nothing is left out that way.
GOPS = [("h264", {"g": "20", "keyint_min": "20", "sc_threshold": "0"}, True),
        ("h264", {"g": "20", "keyint_min": "20", "sc_threshold": "0",
                  "x264-params": "open-gop=1"}, False),
        ("hevc", {"g": "20", "x265-params": "bframes=3:log-level=none:keyint=20:open-gop=0"}, True),
        ("hevc", {"g": "20", "x265-params": "bframes=3:log-level=none:keyint=20"}, False)]


@pytest.mark.parametrize("codec,options,closed", GOPS, ids=["h264", "h264-open", "hevc",
                                                            "hevc-cra"])
def test_frames_after_the_last_needed_one_before_an_idr_are_left_out(tmp_path, codec, options,
                                                                     closed):
    path = _noisy(tmp_path / "g.mp4", codec, frames=120, **options)
    full = _full(path)
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        vs.thread_type = "AUTO"
        plan = _skip_plan(path, vs, Timeline("time", 16, 30.0))
        assert plan is not None
        keys = [p.pts for p in c.demux(vs) if p.is_keyframe and p.size]
        c.seek(0)
        got = {f.pts: f.to_ndarray(format="yuv420p") for f in _frames(c, vs, None, plan)}
    assert len(keys) >= 5                       # a keyframe every 20 frames
    assert plan.keep <= set(got) and not plan.drop & plan.keep
    assert not plan.drop & set(got)             # left out: never decoded
    if closed:
        assert len(plan.drop) >= 10             # frames 17-19 of a GOP are after tick 16's
    else:
        assert plan.drop == set()               # keyframes that are not IDR: nothing left out
    assert all(np.array_equal(got[p], full[p]) for p in got)      # bit-identical
    for clips in (None, ClipSpec()):
        a = read_moments(path, clips=clips, skip_unused=False)
        b = read_moments(path, clips=clips)
        for key in a:
            if isinstance(a[key], np.ndarray):
                assert np.array_equal(a[key], b[key]), key


def test_idr_reads_nal_unit_types():
    avcc = lambda *nals: b"".join(len(n).to_bytes(4, "big") + n for n in nals)  # noqa: E731
    sei, idr_slice, p_slice = b"\x06\x05\x10" + bytes(16), b"\x65\x88", b"\x41\x9a"
    assert idr("h264", avcc(sei, idr_slice), 4)          # SEI passed over
    assert not idr("h264", avcc(sei, p_slice), 4)
    assert idr("h264", b"\x00\x00\x00\x01\x09\xf0\x00\x00\x01\x65\x88", 0)   # Annex B
    assert not idr("h264", b"\x00\x00\x01\x41\x9a", 0)
    assert idr("hevc", avcc(b"\x26\x01\xaf"), 4)          # IDR_W_RADL (19)
    assert not idr("hevc", avcc(b"\x2a\x01\xaf"), 4)      # CRA (21)
    assert not idr("h264", b"", 4) and not idr("h264", b"\x00\x00", 4)
