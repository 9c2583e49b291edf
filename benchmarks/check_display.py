"""Check l2l's picture and timeline against FFmpeg's *command line* (the ``ffmpeg`` binary, which
the test suite does not assume is installed; the tests compare against libavfilter through PyAV).

1. Display orientation: a textured clip remuxed with each of the eight EXIF orientations (PyAV's
   ``set_display_rotation(degrees, hflip)``); frame 0 as ``ffmpeg -i FILE -frames:v 1`` shows
   it (autorotate on, full resolution, rgb24) against ``core.picture.apply_ops(display_ops(m))``
   applied to the coded frame.  The permutation must be the same: mean |difference| < 1
   (the two libswscale versions may round the RGB conversion differently in the last bit).
2. The 30 fps timeline: for 25, 30, 50, 60 fps and a VFR file, the frames the command line's
   ``fps=30:round=up`` filter shows at ticks 16k against ``read_moments``'s ``frame_index``.
3. Moment frames of a rotated clip: ``read_moments`` against the command line's own rotate +
   bilinear scale + crop at the same times (mean |difference|, printed).

    python benchmarks/check_display.py [--keep DIR]

Prints one line per case and exits 1 if any differs.
"""
from __future__ import annotations

import argparse
import fractions
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import av
import numpy as np

from l2l.core.media import read_moments
from l2l.core.picture import apply_ops, display_matrix, display_ops, resize_crop_dims


def _write(path: Path, n: int, fps: int, size=(96, 64), times=None) -> Path:
    """Lossless H.264 (yuv444p); frame i: a smooth gradient plus its index in the top-left block
    (red = (i % 64) * 4, green = (i // 64) * 40)."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    with av.open(str(path), "w") as o:
        vs = o.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv444p"
        vs.options = {"qp": "0", "preset": "ultrafast"}
        if times is not None:
            vs.codec_context.time_base = fractions.Fraction(1, 1000)
        for i in range(n):
            img = np.zeros((h, w, 3), np.uint8)
            img[..., 0] = (xx * 255 // w).astype(np.uint8)
            img[..., 1] = (yy * 255 // h).astype(np.uint8)
            img[..., 2] = ((xx + 2 * yy) % 256).astype(np.uint8)
            img[:8, :8, 0], img[:8, :8, 1], img[:8, :8, 2] = (i % 64) * 4, (i // 64) * 40, 0
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            if times is not None:
                f.pts, f.time_base = int(round(times[i] * 1000)), fractions.Fraction(1, 1000)
            for p in vs.encode(f):
                o.mux(p)
        for p in vs.encode():
            o.mux(p)
    return path


def _orient(src: Path, dst: Path, degrees: int, hflip: bool) -> Path:
    with av.open(str(src)) as i, av.open(str(dst), "w") as o:
        s = i.streams.video[0]
        t = o.add_stream_from_template(s)
        t.set_display_rotation(degrees, hflip=hflip)
        for p in i.demux(s):
            if p.dts is not None:
                p.stream = t
                o.mux(p)
    return dst


def _cli_rgb(path: Path, vf: str | None = None, frames: int = 1) -> np.ndarray:
    cmd = ["ffmpeg", "-v", "error", "-i", str(path)] + (["-vf", vf] if vf else []) + \
          ["-frames:v", str(frames), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    return np.frombuffer(subprocess.run(cmd, check=True, capture_output=True).stdout, np.uint8)


def _ident(a: np.ndarray) -> int:
    return int(round(a[..., 0].mean() / 4)) + 64 * int(round(a[..., 1].mean() / 40))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=Path, help="write the files here and keep them")
    args = ap.parse_args()
    if shutil.which("ffmpeg") is None:
        print("check_display: no ffmpeg on PATH", file=sys.stderr)
        return 1
    tmp = Path(args.keep or tempfile.mkdtemp(prefix="l2l-display-"))
    tmp.mkdir(parents=True, exist_ok=True)
    bad = 0
    src = _write(tmp / "src.mp4", 20, 30)
    for degrees in (0, 90, 180, 270):
        for hflip in (False, True):
            p = _orient(src, tmp / f"o{degrees}{'h' if hflip else ''}.mp4", degrees, hflip)
            with av.open(str(p)) as c:
                fr = next(c.decode(video=0))
                ops = display_ops(display_matrix(fr))
                mine = np.ascontiguousarray(apply_ops(fr.to_ndarray(format="rgb24"), ops))
            cli = _cli_rgb(p)
            ok = cli.size == mine.size and np.abs(cli.reshape(mine.shape).astype(int) - mine).mean() < 1
            bad += not ok
            print(f"orientation {degrees:3d} hflip={hflip!s:5}: ops {ops or '()'} "
                  f"{'same as ffmpeg' if ok else 'DIFFERS from ffmpeg'}")
    vfr = [0.0]
    for i in range(1, 60):
        vfr.append(vfr[-1] + (0.02 if i < 20 else 0.1 if i < 40 else 0.037))
    for fps in (25, 30, 50, 60, "vfr"):
        p = (_write(tmp / "vfr.mp4", 60, 30, size=(32, 32), times=vfr) if fps == "vfr"
             else _write(tmp / f"r{fps}.mp4", int(fps * 3.3), fps, size=(32, 32)))
        mine = read_moments(p)["frame_index"].tolist()
        raw = _cli_rgb(p, "fps=30:round=up", frames=10 ** 6).reshape(-1, 32, 32, 3)
        cli = [_ident(f[:8, :8]) for f in raw[::16]][:len(mine)]
        ok = cli == mine
        bad += not ok
        print(f"timeline {fps!s:>3} fps: {'same as' if ok else 'DIFFERS from'} ffmpeg fps=30:round=up "
              f"({mine} vs {cli})")
    big = _write(tmp / "big.mp4", 40, 25, size=(320, 180))
    rot = _orient(big, tmp / "big_rot.mp4", 90, False)
    d = read_moments(rot)
    rw, rh, x0, y0 = resize_crop_dims(180, 320, 112)
    raw = _cli_rgb(rot, f"fps=30:round=up,scale={rw}:{rh}:flags=bilinear", frames=10 ** 6)
    raw = raw.reshape(-1, rh, rw, 3)[::16][:len(d["frames"]), y0:y0 + 112, x0:x0 + 112]
    diff = np.abs(raw.astype(int) - d["frames"]).mean()
    ok = raw.shape == d["frames"].shape and diff < 2
    bad += not ok
    print(f"rotated 320x180 (90 ccw) moments: mean |l2l - ffmpeg rotate+scale+crop| = {diff:.3f} "
          f"{'ok' if ok else 'TOO FAR'}")
    if args.keep is None:
        shutil.rmtree(tmp)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
