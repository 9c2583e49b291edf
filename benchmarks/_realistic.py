"""The realistic set of ``bench_cli.py --realistic`` (not a benchmark itself): files like the ones
that dominate real cost, generated once with the ``ffmpeg`` command line under
``$L2L_BENCH_DATA``, and the two references run on them.

Files (durations times ``scale``; camera-like noise so that the bit rates are realistic):
- 3 x 720p30 H.264 High profile with B-frames (x264 ``veryfast``, 3 B-frames) + 44.1 kHz stereo
  AAC, 120 s each;
- 360p VP9 + Opus in webm at 25 fps, 120 s;
- 1080p60 H.264 + AAC, 40 s;
- a portrait phone clip: 1920x1080 H.264 + AAC, 40 s, remuxed with a 90 degree display rotation
  (``-metadata:s:v:0 rotate=90``), so shown 1080x1920.
They are listed in a CSV for ``l2l extract --dataset csv``.

References, doing the same decode work on the same 30 fps timeline (moment k at k x 16/30 s, the
last frame at or before it; 112x112 short-side resize + centre crop; 16 kHz mono audio):
- the ffmpeg command line: ``fps=30:round=up``, every 16th output frame, scale + crop to rgb24,
  audio resampled, both to /dev/null (it rotates the portrait clip as l2l does);
- torchcodec 0.17 (benchmark-only): ``VideoDecoder`` with its decoder-side ``Resize`` and
  ``CenterCrop`` and ``get_frames_played_at`` the moment times, ``AudioDecoder`` at 16 kHz mono,
  the files one after another in one process (``--workers`` does not apply).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from _common import DATA

NOISE = "noise=alls=10:allf=t"
FILES = [  # name, seconds (at scale 1), video source + encoder args, audio args, extension
    ("hd720_{i}", 120, "testsrc2=size=1280x720:rate=30", ["-c:v", "libx264", "-preset", "veryfast",
     "-profile:v", "high", "-bf", "3", "-crf", "23", "-pix_fmt", "yuv420p"],
     ["-c:a", "aac", "-ac", "2", "-ar", "44100"], "mp4"),
    ("vp9_360p25", 120, "testsrc2=size=640x360:rate=25", ["-c:v", "libvpx-vp9", "-deadline",
     "realtime", "-cpu-used", "8", "-b:v", "700k", "-pix_fmt", "yuv420p"],
     ["-c:a", "libopus", "-ac", "2", "-ar", "48000"], "webm"),
    ("hd1080p60", 40, "testsrc2=size=1920x1080:rate=60", ["-c:v", "libx264", "-preset", "veryfast",
     "-profile:v", "high", "-crf", "23", "-pix_fmt", "yuv420p"],
     ["-c:a", "aac", "-ac", "2", "-ar", "44100"], "mp4"),
    ("portrait_coded", 40, "testsrc2=size=1920x1080:rate=30", ["-c:v", "libx264", "-preset",
     "veryfast", "-profile:v", "high", "-crf", "23", "-pix_fmt", "yuv420p"],
     ["-c:a", "aac", "-ac", "2", "-ar", "44100"], "mp4"),
]


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def make_realistic(scale: float = 1.0) -> Path:
    """The set under ``$L2L_BENCH_DATA/realistic-<scale>``: ``videos/`` and ``list.csv``."""
    root = DATA / f"realistic-{scale:g}"
    ann = root / "list.csv"
    if ann.exists():
        return root
    (root / "videos").mkdir(parents=True, exist_ok=True)
    rows = []
    for name, seconds, src, venc, aenc, ext in FILES:
        for i in range(3 if "{i}" in name else 1):
            d = max(2.0, seconds * scale)
            out = root / "videos" / f"{name.format(i=i)}.{ext}"
            _ffmpeg("-f", "lavfi", "-i", f"{src}:duration={d},{NOISE}", "-f", "lavfi", "-i",
                    f"sine=frequency={300 + 90 * len(rows)}:sample_rate=44100:duration={d}",
                    *venc, *aenc, "-shortest", str(out))
            if name == "portrait_coded":
                rotated = out.with_name("portrait_rot90.mp4")
                _ffmpeg("-i", str(out), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(rotated))
                out.unlink()
                out = rotated
            rows.append(f"{out.name},{'A' if len(rows) % 2 else 'B'},train")
    ann.write_text("path,label,subset\n" + "\n".join(rows) + "\n")
    return root


def videos(root: Path) -> list[Path]:
    return sorted(p for p in (root / "videos").iterdir() if p.is_file())


FFMPEG_VF = ("fps=30:round=up,select=not(mod(n\\,16)),"
             "scale=112:112:force_original_aspect_ratio=increase:flags=bilinear,crop=112:112")


def ffmpeg_run(paths: list[Path]) -> float:
    t = time.perf_counter()
    for v in paths:
        _ffmpeg("-threads", "0", "-i", str(v), "-map", "0:v", "-vf", FFMPEG_VF, "-vsync", "vfr",
                "-pix_fmt", "rgb24", "-f", "rawvideo", "/dev/null", "-map", "0:a", "-ac", "1",
                "-ar", "16000", "-f", "f32le", "/dev/null")
    return time.perf_counter() - t


TORCHCODEC = r'''
import sys, time
t0 = time.perf_counter()
import torch
from torchcodec.decoders import AudioDecoder, VideoDecoder
from torchcodec.transforms import CenterCrop, Resize
imported = time.perf_counter() - t0
moments = 0
for path in sys.argv[1:]:
    probe = VideoDecoder(path, seek_mode="approximate")
    md = probe.metadata
    w, h = md.width, md.height
    if w <= h:
        size = (round(h * 112 / w), 112)
    else:
        size = (112, round(w * 112 / h))
    dec = VideoDecoder(path, dimension_order="NHWC", num_ffmpeg_threads=0,
                       transforms=[Resize(size), CenterCrop((112, 112))])
    begin = md.begin_stream_seconds or 0.0
    end = md.end_stream_seconds or md.duration_seconds
    n = int((end - begin - 1e-6) * 30 // 16) + 1
    times = [begin + k * 16 / 30 for k in range(n)]
    last = end - 1 / (md.average_fps or 30)   # the last frame's time (constant rate): a
    times = [t for t in times if t <= last + 1e-6]   # moment exists while at or before it (l2l)
    frames = dec.get_frames_played_at(times).data
    audio = AudioDecoder(path, sample_rate=16000, num_channels=1).get_all_samples().data
    moments += len(frames)
print(f"{moments} {imported:.3f}")
'''


def torchcodec_run(paths: list[Path]) -> tuple[float, int, float]:
    """(wall seconds, moments decoded, import seconds) of one process over every file."""
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", TORCHCODEC, *map(str, paths)], capture_output=True,
                       text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"torchcodec run failed: {p.stderr[-2000:]}")
    moments, imported = p.stdout.split()
    return wall, int(moments), float(imported)
