"""Pictures as FFmpeg shows them (``core/picture.py``): display rotation and flips, non-square
pixels, for moment frames, teacher clips and visualize's frames.

References are made with FFmpeg's own filters through PyAV's filter graph (libavfilter: the
``transpose``/``hflip``/``vflip`` filter the command line's autorotate inserts for each of the
eight orientations, then ``scale`` with bilinear filtering, then the crop), independently of
l2l.  Which filter the command line inserts for which orientation is the table ``CLI_FILTERS``,
read off ``ffmpeg`` 5.1 by ``benchmarks/check_display.py`` (which compares against the binary
itself; the suite does not assume one is installed)."""
from __future__ import annotations

import fractions
from pathlib import Path

import av
import numpy as np
import pytest

from l2l.core.media import DecodeError, read_frames, read_moments
from l2l.core.picture import display_matrix, display_ops, resize_crop_dims
from l2l.stages.decode import Decode, DecodeConfig, decode_video

# (counter-clockwise degrees, hflip) as PyAV's set_display_rotation takes them -> the filters
# `ffmpeg -i FILE` applies (benchmarks/check_display.py checks this table against the binary)
CLI_FILTERS = {(0, False): [], (0, True): [("hflip", None)],
               (90, False): [("transpose", "cclock")], (90, True): [("transpose", "clock_flip")],
               (180, False): [("hflip", None), ("vflip", None)], (180, True): [("vflip", None)],
               (270, False): [("transpose", "clock")], (270, True): [("transpose", "cclock_flip")]}


def _smooth(path: Path, frames: int = 20, size=(96, 64), sar=None, fps: int = 30) -> Path:
    """Lossless H.264 (yuv444p): smooth gradients that move with the frame index (so that a
    wrong orientation, aspect, frame or crop shows while resize rounding stays small)."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv444p"
        vs.options = {"qp": "0", "preset": "ultrafast"}
        if sar is not None:
            vs.codec_context.sample_aspect_ratio = fractions.Fraction(sar)
        for i in range(frames):
            img = np.stack([xx * 250 / w, yy * 250 / h, (xx + yy + 7 * i) % 128 + 60], -1)
            frame = av.VideoFrame.from_ndarray(img.astype(np.uint8), format="rgb24")
            for p in vs.encode(frame):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
    return path


def _orient(src: Path, dst: Path, degrees: int, hflip: bool = False) -> Path:
    """``src``'s packets remuxed with a display matrix (nothing re-encoded)."""
    with av.open(str(src)) as i, av.open(str(dst), "w") as o:
        t = o.add_stream_from_template(i.streams.video[0])
        t.set_display_rotation(degrees, hflip=hflip)
        for p in i.demux(i.streams.video[0]):
            if p.dts is not None:
                p.stream = t
                o.mux(p)
    return dst


def _reference(path: Path, filters: list, size=112, clip=None) -> list[np.ndarray]:
    """Every frame through libavfilter: ``filters``, then bilinear scale to the short-side size
    (or exactly ``clip`` = (h, w)) computed on the filtered (displayed) geometry, then the crop."""
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        frames = list(c.decode(vs))
        g = av.filter.Graph()
        last = g.add_buffer(template=vs)
        for name, arg in filters:
            f = g.add(name, arg) if arg else g.add(name)
            last.link_to(f)
            last = f
        sink = g.add("buffersink")
        last.link_to(sink)
        g.configure()
        shown = []
        for fr in frames:
            g.push(fr)
            shown.append(g.pull())
    out = []
    for fr in shown:
        w, h = fr.width, fr.height              # square pixels here (setsar=1 for anamorphic)
        if clip is not None:
            (rh, rw), y0, x0, c = clip, int(round((clip[0] - 112) / 2)), int(round((clip[1] - 112) / 2)), 112
        else:
            rw, rh, x0, y0 = resize_crop_dims(w, h, size)
            c = size
        rgb = fr.reformat(width=rw, height=rh, format="rgb24", interpolation="BILINEAR").to_ndarray()
        out.append(rgb[y0:y0 + c, x0:x0 + c])
    return out


@pytest.mark.parametrize("degrees,hflip", sorted(CLI_FILTERS))
def test_moment_frames_are_rotated_and_flipped_as_ffmpeg_shows_them(tmp_path, degrees, hflip):
    src = _smooth(tmp_path / "s.mp4", size=(96, 54))
    path = _orient(src, tmp_path / "o.mp4", degrees, hflip)
    d = decode_video(path)
    ref = _reference(path, CLI_FILTERS[(degrees, hflip)])
    want = np.stack([ref[i] for i in d["frame_index"]])
    assert d["frames"].shape == want.shape == (2, 112, 112, 3)
    diff = np.abs(d["frames"].astype(int) - want)
    assert diff.mean() < 0.1 and diff.max() <= 2, (diff.mean(), diff.max())
    coded = decode_video(path, DecodeConfig(display=False))["frames"]     # the old, coded picture
    assert np.array_equal(coded, decode_video(src, DecodeConfig(display=False))["frames"])
    if (degrees, hflip) != (0, False):
        assert np.abs(coded.astype(int) - want).mean() > 10               # the test can fail


def test_portrait_phone_clip_is_stored_upright(tmp_path):
    """A 1080x1920-style portrait clip: coded landscape (96x54) with a 90 degree matrix."""
    path = _orient(_smooth(tmp_path / "s.mp4", size=(96, 54)), tmp_path / "p.mp4", 270)
    with av.open(str(path)) as c:
        assert display_ops(display_matrix(next(c.decode(video=0)))) == ("transpose:clock",)
    d = decode_video(path, DecodeConfig(clip_len=16))
    ref = _reference(path, CLI_FILTERS[(270, False)])
    assert np.abs(d["frames"].astype(int) - np.stack([ref[i] for i in d["frame_index"]])).mean() < 0.1
    # teacher clips: each frame resized to exactly 128x171 as displayed, then the centre crop
    clip_ref = _reference(path, CLI_FILTERS[(270, False)], clip=(128, 171))
    for p in range(16):
        i = min(2 * p, 19)
        assert np.abs(d["clips"][0, p].astype(int) - clip_ref[i]).mean() < 0.6, p
    # visualize's frames: picked by index, displayed the same way
    assert np.array_equal(read_frames(path, d["frame_index"]), d["frames"])
    assert not np.array_equal(read_frames(path, d["frame_index"], display=False), d["frames"])


@pytest.mark.parametrize("sar", [fractions.Fraction(2, 1), fractions.Fraction(3, 4)])
def test_anamorphic_pixels_are_resized_on_the_display_geometry(tmp_path, sar):
    path = _smooth(tmp_path / "a.mp4", size=(64, 48), sar=sar)
    d = decode_video(path)
    # what a player shows: scale=iw*sar:ih,setsar=1 (libavfilter), then resize + crop
    ref = _reference(path, [("scale", f"{int(64 * sar)}:48:flags=bilinear"), ("setsar", "1")])
    want = np.stack([ref[i] for i in d["frame_index"]])
    diff = np.abs(d["frames"].astype(int) - want)
    assert diff.mean() < 1.5, diff.mean()
    square = decode_video(path, DecodeConfig(display=False))["frames"]
    assert np.abs(square.astype(int) - want).mean() > 5


def test_display_is_in_the_key_and_odd_angles_are_one_line(tmp_path):
    assert Decode(DecodeConfig()).config_hash != Decode(DecodeConfig(display=False)).config_hash
    src = _smooth(tmp_path / "s.mp4", frames=4)
    path = tmp_path / "odd.mp4"
    with av.open(str(src)) as i, av.open(str(path), "w") as o:
        t = o.add_stream_from_template(i.streams.video[0])
        t.set_display_rotation(30)
        for p in i.demux(i.streams.video[0]):
            if p.dts is not None:
                p.stream = t
                o.mux(p)
    with pytest.raises(DecodeError, match=r"odd\.mp4: display matrix rotates by 330 degrees") as e:
        read_moments(path)
    assert "\n" not in str(e.value)
    assert decode_video(path, DecodeConfig(display=False))["frames"].shape == (1, 112, 112, 3)
