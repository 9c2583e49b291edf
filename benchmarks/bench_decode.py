"""Decode + spectrogram: l2l's decode stage against PyAV decoding every frame to RGB and against
the ffmpeg command line doing the same work, side by side in one run.

For every video, each path produces the same things: every 16th frame as 112x112 RGB (short
side resized, centre crop), audio as 16 kHz mono, cut into 1 s windows at the moments, and the
(101, 40) log-mel of each window (the same ``log_mel`` call for all three, so the spectrogram
cost is shared and the difference is in decoding).

- ``l2l``: ``stages.decode.decode_video`` + ``stages.spectrogram.log_mel``.
- ``pyav-every-frame``: the obvious PyAV loop: every frame ``to_ndarray(format="rgb24")`` at full
  size, every 16th kept and resized with ``torch.nn.functional.interpolate``; audio resampled by
  ``av.AudioResampler`` and collected whole.
- ``ffmpeg-cli``: one ``ffmpeg`` process per video: ``select=not(mod(n,16)),scale,crop`` to raw
  RGB and ``-ac 1 -ar 16000`` to raw float32 (files in a RAM disk), read back with numpy.  Shown
  with and without the spectrogram.  Skipped, with a note, when ``ffmpeg`` is not installed.

Rates: moments/s and video-seconds/s on the wall clock, and video-seconds per CPU-second
("per core": process + children CPU time, so decoder threads and ffmpeg are counted).  Every
path runs on every video in each repetition, in rotating order; the best repetition of each
path is reported.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import record, synthetic_set, table  # noqa: E402

from l2l.stages.decode import SAMPLE_RATE, decode_video, resize_crop_dims  # noqa: E402
from l2l.stages.spectrogram import SpectrogramConfig, log_mel, mel_transform  # noqa: E402

STRIDE, SIZE = 16, 112
CONF = SpectrogramConfig()
TRANSFORM = None


def spectrogram(waveform: np.ndarray) -> np.ndarray:
    return log_mel(waveform, CONF, transform=TRANSFORM)


def windows(audio: np.ndarray, times: np.ndarray, t0: float = 0.0) -> np.ndarray:
    out = np.zeros((len(times), SAMPLE_RATE), np.float32)
    for k, t in enumerate(times):
        s = int(round((t - t0) * SAMPLE_RATE))
        seg = audio[max(s, 0):max(s + SAMPLE_RATE, 0)]
        off = max(0, -s)
        out[k, off:off + len(seg)] = seg[:SAMPLE_RATE - off]
    return out


def run_l2l(path: Path) -> int:
    d = decode_video(path)
    spectrogram(d["waveform"])
    return len(d["times"])


def run_pyav_every_frame(path: Path) -> int:
    import av
    import torch
    import torch.nn.functional as F
    frames, times, chunks = [], [], []
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        vs.thread_type = "AUTO"
        aus = c.streams.audio[0] if c.streams.audio else None
        res = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE) if aus else None
        n = 0
        for packet in c.demux(*([vs] + ([aus] if aus else []))):
            if packet.stream.type == "video":
                for f in packet.decode():
                    rgb = f.to_ndarray(format="rgb24")          # every frame, full size
                    if n % STRIDE == 0:
                        frames.append(rgb)
                        times.append(float(f.time))
                    n += 1
            elif res is not None:
                for af in packet.decode():
                    for rf in res.resample(af):
                        chunks.append(rf.to_ndarray().reshape(-1))
        if res is not None:
            for rf in res.resample(None):
                chunks.append(rf.to_ndarray().reshape(-1))
    h, w = frames[0].shape[:2]
    rw, rh, x0, y0 = resize_crop_dims(w, h, SIZE)
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(rh, rw), mode="bilinear", antialias=True, align_corners=False)
    x[:, :, y0:y0 + SIZE, x0:x0 + SIZE].round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    spectrogram(windows(audio, np.asarray(times)))
    return len(times)


def probe(path: Path) -> tuple[int, int]:
    import av
    with av.open(str(path)) as c:
        return c.streams.video[0].codec_context.width, c.streams.video[0].codec_context.height


def run_ffmpeg(path: Path, tmp: Path, with_spectrogram: bool = True) -> int:
    w, h = probe(path)
    rw, rh, x0, y0 = resize_crop_dims(w, h, SIZE)
    vout, aout = tmp / "v.rgb", tmp / "a.f32"
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", "-i", str(path),
                    "-map", "0:v:0", "-vf", f"select='not(mod(n\\,{STRIDE}))',scale={rw}:{rh},"
                    f"crop={SIZE}:{SIZE}:{x0}:{y0}", "-fps_mode", "passthrough",
                    "-pix_fmt", "rgb24", "-f", "rawvideo", str(vout),
                    "-map", "0:a:0?", "-ac", "1", "-ar", str(SAMPLE_RATE), "-f", "f32le", str(aout)],
                   check=True)
    frames = np.fromfile(vout, np.uint8).reshape(-1, SIZE, SIZE, 3)
    audio = np.fromfile(aout, np.float32) if aout.exists() else np.zeros(0, np.float32)
    if with_spectrogram:
        import av
        with av.open(str(path)) as c:
            fps = float(c.streams.video[0].average_rate)
        spectrogram(windows(audio, np.arange(len(frames)) * STRIDE / fps))
    return len(frames)


def cpu_seconds() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def duration(path: Path) -> float:
    import av
    with av.open(str(path)) as c:
        return c.duration / 1e6


def main():
    global TRANSFORM
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=Path, default=None,
                    help="Folder of .mp4 files (default: a synthetic 320x240 set, made once).")
    ap.add_argument("--size", default="320x240",
                    help="WxH of the synthetic set (ignored with --videos); 640x360 is "
                         "ActivityNet's most common size.")
    ap.add_argument("--limit", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(1)
    TRANSFORM = mel_transform(CONF)
    sw, sh = (int(x) for x in args.size.lower().split("x"))
    folder = args.videos or synthetic_set(f"videos-{sw}x{sh}", width=sw, height=sh) / "videos"
    files = sorted(folder.glob("*.mp4"))[:args.limit]
    have_ffmpeg = shutil.which("ffmpeg") is not None
    paths = {"l2l": run_l2l, "pyav-every-frame": run_pyav_every_frame}
    tmp = Path(tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    if have_ffmpeg:
        paths["ffmpeg-cli + spectrogram"] = lambda p: run_ffmpeg(p, tmp, True)
        paths["ffmpeg-cli (decode only)"] = lambda p: run_ffmpeg(p, tmp, False)
    vsec = sum(duration(f) for f in files)
    run_l2l(files[0])                                         # warm up imports and caches
    best = {k: [float("inf"), float("inf"), 0] for k in paths}
    names = list(paths)
    for rep in range(args.reps):
        acc = {k: [0.0, 0.0, 0] for k in paths}
        for i, f in enumerate(files):
            for k in names[i % len(names):] + names[:i % len(names)]:     # rotate the order
                w0, c0 = time.perf_counter(), cpu_seconds()
                m = paths[k](f)
                acc[k][0] += time.perf_counter() - w0
                acc[k][1] += cpu_seconds() - c0
                acc[k][2] += m
        for k, (w, c, m) in acc.items():
            best[k] = [min(best[k][0], w), min(best[k][1], c), m]
        print(f"rep {rep + 1}/{args.reps}: " + ", ".join(f"{k} {acc[k][0]:.2f}s" for k in names),
              flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    res = {k: {"wall": w, "cpu": c, "moments": m, "moments_s": m / w, "vsec_s": vsec / w,
               "vsec_cpu": vsec / c} for k, (w, c, m) in best.items()}
    ref = res["l2l"]
    rows = []
    for k, r in res.items():
        rows.append([k, f"{r['moments_s']:.0f}", f"{r['vsec_s']:.1f}", f"{r['vsec_cpu']:.1f}",
                     "1.00x" if k == "l2l" else f"{ref['moments_s'] / r['moments_s']:.2f}x",
                     "1.00x" if k == "l2l" else f"{ref['vsec_cpu'] / r['vsec_cpu']:.2f}x"])
    w, h = probe(files[0])
    out = table(["path", "moments/s", "video-s/s", "video-s per CPU-s", "l2l speed-up (wall)",
                 "l2l speed-up (per core)"], rows)
    notes = [f"{len(files)} videos ({w}x{h} H.264 + AAC, {vsec:.0f} s of video, "
             f"{ref['moments']} moments), best of {args.reps} interleaved repetitions; "
             "torch 1 thread, decoders with their default threading."]
    if not have_ffmpeg:
        notes.append("ffmpeg columns SKIPPED: the `ffmpeg` command line is not installed "
                     "(`apt-get install ffmpeg`); the project itself decodes with PyAV.")
    print(out)
    print("\n".join(notes))
    print(json.dumps(res))
    if not args.no_record:
        data = {k: {kk: round(vv, 4) for kk, vv in r.items()} for k, r in res.items()}
        section = "Decode + spectrogram" + ("" if (w, h) == (320, 240) else f" at {w}x{h}")
        record(section, out + "\n\n" + "\n".join(notes)
               + f"\n\n<!-- data: {json.dumps(data)} -->")
    return res


if __name__ == "__main__":
    main()
