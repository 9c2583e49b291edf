"""Decode: l2l's in-process decode (``stages.decode.decode_video``) against the ffmpeg command
line doing the same work, side by side on the same files, with a breakdown of where l2l's time
goes.

The reference is issue 10's command, one ``ffmpeg`` process per file::

    ffmpeg -threads 0 -i V -map 0:v -vf "select=not(mod(n\\,16)),scale=112:112:
      force_original_aspect_ratio=increase,crop=112:112" -vsync vfr -pix_fmt rgb24 -f rawvideo
      /dev/null -map 0:a -ac 1 -ar 16000 -f f32le /dev/null

Rows (every row runs on every file in each repetition, in rotating order; the median of the
repetitions is reported):
- ``l2l decode``: ``decode_video`` (frames, times, audio windows), in this process;
- ``ffmpeg CLI``: the command above (its process start included, as a user pays it);
- ``pyav decode only`` and ``pyav decode + kept frames``: the floor for any PyAV reader (demux
  and decode every packet of both streams, nothing else), then that plus converting the kept
  frames; they split l2l's cost into decode / frame conversion / audio and the rest;
- ``l2l decode + spectrogram``: plus ``stages.spectrogram.log_mel`` (recorded, for the synthetic
  set, in the "Decode + spectrogram" section that ``bench_projection.py`` reads).

``--workers 1,2``: the l2l, ffmpeg and PyAV-floor rows again with N files decoded at once (N
worker processes started before timing, N concurrent ffmpeg processes).  ``--threads``: decoder
threads per process for the l2l and PyAV rows (0: FFmpeg's choice, as ``-threads 0``).  The speed ratio is ffmpeg's time over l2l's (1.0x:
as fast as the command line; higher is faster), on the wall clock and per CPU-second (process
plus children, so decoder threads and ffmpeg are counted; less sensitive to other load).

Default files: issue 10's set, 6 videos of 180 s, 320x240 H.264 (``testsrc2``) + AAC 44.1 kHz
stereo (``sine``), made once with ffmpeg under ``$L2L_BENCH_DATA``; ``--seconds 20`` for a quick
run.  ``--set synthetic``: ``l2l make-synthetic``'s 8 videos of 20-40 s instead (busier pictures;
the "Decode + spectrogram" section that ``bench_projection.py`` reads comes from this set only).
Without ffmpeg: the synthetic set, and the ffmpeg rows are skipped with a note.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, record, synthetic_set, table  # noqa: E402

from l2l.core.grid import MOMENT_STRIDE  # noqa: E402
from l2l.core.media import resize_crop_dims  # noqa: E402
from l2l.stages.decode import DecodeConfig, decode_video  # noqa: E402

THREADS = 0


def ffmpeg_set(seconds: float, count: int, width: int, height: int) -> Path:
    """Issue 10's files (testsrc2 + sine, H.264 + AAC 44.1 kHz stereo), made once."""
    out = DATA / f"testsrc2-{width}x{height}-{seconds:g}s"
    out.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        f = out / f"v{i + 1}.mp4"
        if not f.exists():
            tmp = f.with_suffix(".part.mp4")
            subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y",
                            "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate=30",
                            "-f", "lavfi", "-i", f"sine=frequency={250 + 50 * i}:sample_rate=44100",
                            "-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast",
                            "-c:a", "aac", "-ac", "2", str(tmp)], check=True)
            tmp.rename(f)
    return out


def run_l2l(path: Path) -> int:
    return len(decode_video(path, DecodeConfig(threads=THREADS))["times"])


def run_l2l_spectrogram(path: Path) -> int:
    from l2l.stages.spectrogram import SpectrogramConfig, log_mel
    d = decode_video(path, DecodeConfig(threads=THREADS))
    log_mel(d["waveform"], SpectrogramConfig())
    return len(d["times"])


def _pyav_pass(path: Path, convert: bool) -> int:
    import av
    from av.video.reformatter import VideoReformatter
    kept = 0
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        vs.thread_type = "AUTO"
        if THREADS:
            vs.codec_context.thread_count = THREADS
        streams = [vs] + list(c.streams.audio[:1])
        ref, n = VideoReformatter(), 0
        rw, rh, x0, y0 = resize_crop_dims(vs.codec_context.width, vs.codec_context.height, 112)
        for f in c.decode(*streams):
            if type(f) is av.VideoFrame:
                if n % MOMENT_STRIDE == 0:
                    kept += 1
                    if convert:
                        ref.reformat(f, width=rw, height=rh, format="rgb24",
                                     threads=1).to_ndarray()[y0:y0 + 112, x0:x0 + 112].copy()
                n += 1
    return kept


def run_pyav_decode(path: Path) -> int:
    return _pyav_pass(path, convert=False)


def run_pyav_frames(path: Path) -> int:
    return _pyav_pass(path, convert=True)


FFMPEG_VF = ("select=not(mod(n\\,16)),scale=112:112:force_original_aspect_ratio=increase,"
             "crop=112:112")


def run_ffmpeg(path: Path) -> int:
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", "-threads", "0", "-i", str(path),
                    "-map", "0:v", "-vf", FFMPEG_VF, "-vsync", "vfr", "-pix_fmt", "rgb24",
                    "-f", "rawvideo", "/dev/null",
                    "-map", "0:a", "-ac", "1", "-ar", "16000", "-f", "f32le", "/dev/null"],
                   check=True)
    return 0


def cpu_seconds() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def _call(args):
    """In a worker process: (moments, CPU seconds of this process, its threads included)."""
    name, path = args
    c0 = time.process_time()
    m = ROWS[name](Path(path))
    return m, time.process_time() - c0


ROWS = {"l2l decode": run_l2l, "ffmpeg CLI": run_ffmpeg, "pyav decode only": run_pyav_decode,
        "pyav decode + kept frames": run_pyav_frames, "l2l decode + spectrogram": run_l2l_spectrogram}


MULTI = ("l2l decode", "ffmpeg CLI", "pyav decode only")    # rows also run with N workers


def time_row(name: str, files: list[Path], workers: int, pool) -> tuple[float, float, int]:
    """(wall s, CPU s, moments) of one row over all files with ``workers`` at once (CPU: this
    process and its children, or the sum of the workers' own process times)."""
    w0, c0 = time.perf_counter(), cpu_seconds()
    if workers == 1:
        moments = sum(ROWS[name](f) for f in files)
    elif name == "ffmpeg CLI":
        with ThreadPoolExecutor(workers) as ex:
            moments = sum(ex.map(run_ffmpeg, files))
    else:
        got = pool.map(_call, [(name, str(f)) for f in files], chunksize=1)
        wall = time.perf_counter() - w0
        return wall, sum(g[1] for g in got), sum(g[0] for g in got)
    return time.perf_counter() - w0, cpu_seconds() - c0, moments


def duration(path: Path) -> float:
    from l2l.core.media import container_duration
    return container_duration(path) or 0.0


def main():
    global THREADS
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=Path, default=None, help="Folder of .mp4 files to use instead.")
    ap.add_argument("--set", choices=["testsrc2", "synthetic"], default="testsrc2",
                    help="Generated files: issue 10's testsrc2 set (default) or `l2l make-synthetic`'s "
                         "(8 videos of 20-40 s; what the \"Decode + spectrogram\" section and "
                         "bench_projection.py use).")
    ap.add_argument("--size", default="320x240", help="WxH of the generated files.")
    ap.add_argument("--seconds", type=float, default=180.0, help="Length of each generated file.")
    ap.add_argument("--count", type=int, default=None,
                    help="Number of files (default 6; 8 with --set synthetic).")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--workers", default="1", help="Comma list: files decoded at once, e.g. 1,2.")
    ap.add_argument("--threads", type=int, default=0, help="Decoder threads per process (0: auto).")
    ap.add_argument("--rows", default=",".join(ROWS), help="Comma list of rows to run.")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    THREADS = args.threads
    have_ffmpeg = shutil.which("ffmpeg") is not None
    sw, sh = (int(x) for x in args.size.lower().split("x"))
    synthetic = args.set == "synthetic" or not (args.videos or have_ffmpeg)
    count = args.count or (8 if synthetic else 6)
    if args.videos:
        folder = args.videos
    elif not synthetic:
        folder = ffmpeg_set(args.seconds, count, sw, sh)
    else:
        folder = synthetic_set(f"videos-{sw}x{sh}", width=sw, height=sh) / "videos"
    files = sorted(folder.glob("*.mp4"))[:count]
    names = [r for r in args.rows.split(",") if r in ROWS and (have_ffmpeg or r != "ffmpeg CLI")]
    workers = [int(w) for w in args.workers.split(",")]
    vsec = sum(duration(f) for f in files)
    for name in names:                            # warm up imports, caches, the mel transform
        if name != "ffmpeg CLI":
            ROWS[name](files[0])
    res: dict[str, dict] = {}
    ctx = multiprocessing.get_context("spawn")     # fresh processes: nothing inherited mid-state
    for w in workers:
        pool = ctx.Pool(w) if w > 1 else None
        if pool is not None:                      # start the workers before timing
            pool.map(_call, [("l2l decode", str(files[0]))] * w, chunksize=1)
        wnames = names if w == 1 else [k for k in names if k in MULTI]
        got = {k: [] for k in wnames}
        for rep in range(args.reps):
            order = wnames[rep % len(wnames):] + wnames[:rep % len(wnames)]
            for k in order:
                got[k].append(time_row(k, files, w, pool))
            print(f"workers {w} rep {rep + 1}/{args.reps}: "
                  + ", ".join(f"{k} {got[k][-1][0]:.2f}s" for k in wnames), flush=True)
        if pool is not None:
            pool.close()
        for k, runs in got.items():
            wall = statistics.median(r[0] for r in runs)
            cpu = statistics.median(r[1] for r in runs)
            m = max(r[2] for r in runs) or max(r[2] for r in got.get("l2l decode", [(0, 0, 0)]))
            res[f"{k} | {w}"] = {"row": k, "workers": w, "wall": wall, "cpu": cpu, "moments": m,
                                 "moments_s": m / wall, "vsec_s": vsec / wall,  # ffmpeg: l2l's count
                                 "vsec_cpu": vsec / cpu if cpu == cpu else float("nan"),
                                 "walls": [round(r[0], 3) for r in runs]}
    out, data = report(res, names, workers, files, vsec, args, have_ffmpeg)
    if not args.no_record:
        suffix = "" if (sw, sh) == (320, 240) or args.videos else f" at {sw}x{sh}"
        name = "Decode vs the ffmpeg command line" + suffix + (", synthetic set" if synthetic else "")
        record(name, out + f"\n\n<!-- data: {json.dumps(data)} -->")
        spec = res.get("l2l decode + spectrogram | 1")
        if spec is not None and synthetic and not args.videos:    # what bench_projection.py reads
            keep = {kk: round(spec[kk], 4) for kk in ("wall", "cpu", "moments", "moments_s", "vsec_s", "vsec_cpu")}
            record("Decode + spectrogram" + suffix,
                   f"l2l decode + spectrogram, one process: {spec['moments_s']:.0f} moments/s, "
                   f"{spec['vsec_s']:.1f} video-s/s, {spec['vsec_cpu']:.1f} video-s per CPU-s "
                   f"(median of {args.reps}; the full table is in \"Decode vs the ffmpeg command "
                   f"line\").\n\n<!-- data: {json.dumps({'l2l': keep})} -->")
    return res


def report(res, names, workers, files, vsec, args, have_ffmpeg):
    rows = []
    for w in workers:
        ff = res.get(f"ffmpeg CLI | {w}")
        for k in names:
            r = res.get(f"{k} | {w}")
            if r is None:
                continue
            ratio = lambda a, b: f"{a / b:.2f}x" if ff is not None and a == a and b == b else "-"
            rows.append([k, w, f"{r['wall']:.2f}", f"{r['cpu']:.2f}" if r["cpu"] == r["cpu"] else "-",
                         f"{r['moments_s']:.0f}", f"{r['vsec_s']:.1f}",
                         ratio(ff["wall"], r["wall"]) if ff else "-",
                         ratio(ff["cpu"], r["cpu"]) if ff else "-"])
    out = table(["row", "workers", "wall s", "CPU s", "moments/s", "video-s/s",
                 "speed vs ffmpeg (wall)", "speed vs ffmpeg (CPU)"], rows)
    where = Path(files[0]).parent
    where = where.relative_to(DATA) if where.is_relative_to(DATA) else where
    lines = [out, "", f"{len(files)} files ({where}, {vsec:.0f} s of video), "
             f"median of {args.reps} interleaved repetitions; decoder threads per process: "
             f"{args.threads or 'auto'}.  Speed vs ffmpeg = ffmpeg's time / the row's time."]
    one = {k: res.get(f"{k} | 1") for k in names}
    if all(one.get(k) for k in ("l2l decode", "pyav decode only", "pyav decode + kept frames")):
        dec, fr, l2l = (one[k]["cpu"] for k in ("pyav decode only", "pyav decode + kept frames", "l2l decode"))
        parts = [f"demux + decode {dec:.2f} s", f"kept frames converted {fr - dec:+.2f} s",
                 f"audio resample + windows + the rest {l2l - fr:+.2f} s"]
        if one.get("l2l decode + spectrogram"):
            parts.append(f"spectrogram {one['l2l decode + spectrogram']['cpu'] - l2l:+.2f} s")
        lines += ["", "Breakdown of `l2l decode`, one process, CPU seconds (differences of the "
                  "rows' medians, so noisy at the 0.1 s level): " + "; ".join(parts) + "."]
    if not have_ffmpeg:
        lines += ["", "ffmpeg rows SKIPPED: the `ffmpeg` command line is not installed."]
    text = "\n".join(lines)
    print(text)
    data = {k: {kk: ((round(v, 4) if v == v else None) if isinstance(v, float) else v)
                for kk, v in r.items()}
            for k, r in res.items()}
    return text, data


if __name__ == "__main__":
    main()
