"""Decoding less (``core/skipping.py``): on B-frame H.264 and HEVC the decoder
skips the non-reference frames no moment or clip uses; every frame it does decode is bit-identical
to the full decode's, and so is every output.  VP9 (nothing gained) falls back to a full decode."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from l2l.core.media import read_moments
from l2l.core.skipping import frames as _frames, skip_plan as _skip_plan
from l2l.core.picture import ClipSpec
from l2l.core.timeline import Timeline

ENCODERS = {"h264": ("libx264", {"preset": "veryfast", "bf": "3"}, "mp4"),
            "hevc": ("libx265", {"preset": "ultrafast", "x265-params": "bframes=3:log-level=none"},
                     "mp4"),
            "vp9": ("libvpx-vp9", {"deadline": "realtime", "cpu-used": "8"}, "webm")}


def _noisy(path: Path, codec: str, frames: int = 96, fps: int = 30) -> Path:
    """Moving noise (so that every frame is different and B-frames are coded), 64x48."""
    name, options, _ = ENCODERS[codec]
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
