"""What a user pays: ``l2l extract --stages decode,spectrogram`` as a subprocess, end to end,
against the FFmpeg command line doing the decode part of the same work, side by side.

Part 1 (end to end): N generated videos of 180 s (320x240 H.264 + AAC 44.1 kHz, ffmpeg's
``testsrc2`` and ``sine``).  Each repetition runs, in turn (the order rotating), the FFmpeg
command line over every file, ``l2l extract --workers 1`` and ``l2l extract --workers 2``, each
into a fresh store; the median of the repetitions is reported, as the ratio FFmpeg seconds / l2l
seconds (>= 1.0: l2l is at least as fast).  The breakdown comes from the pipeline's own timing
log (``L2L_TIMINGS``): start-up before ``extract`` runs (interpreter and imports), store set-up,
cluster start, worker start-up (imports and ``setup`` on every worker, in parallel), and the work
summed over videos (decode, spectrogram, staging writes) and the commits.

Part 2 (steady-state scaling): M shorter videos (20 s) with ``--workers 1`` pinned to one core
and ``--workers 2`` pinned to two (``taskset``; decoder threads 1, so each worker uses one core).
Steady-state throughput is moments / (wall - start-up), start-up being what the timing log
measures before the first shard can run (interpreter, set-up, cluster and worker start).

Part 3 (``--realistic``): the realistic set of ``_realistic.py`` (720p H.264 High with B-frames and
stereo AAC, 360p VP9/Opus webm at 25 fps, 1080p60, a rotated portrait clip; ``--scale`` shortens
every file), listed in a CSV.  Each repetition runs in turn (order rotating): the ffmpeg command
line doing the same decode work on the 30 fps timeline, torchcodec 0.17 (decoder-side
Resize/CenterCrop, ``get_frames_played_at`` the moment times, ``AudioDecoder`` at 16 kHz mono;
one process), ``l2l extract --dataset csv --stages decode,spectrogram`` with ``--workers 1`` and
``--workers 2``.  Median of the repetitions, ratios against the ffmpeg command line, and l2l's
breakdown.

On a bigger machine (issue 10 item 6): ``--scaling-only --scaling-videos 200 --workers-list
1,4,8,16`` runs part 2 with those worker counts (pinned to as many cores each).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, record, table  # noqa: E402

FFMPEG_VF = "select=not(mod(n\\,16)),scale=112:112:force_original_aspect_ratio=increase,crop=112:112"


def make_set(name: str, n: int, seconds: float, size: str = "320x240") -> Path:
    """``n`` videos of ``seconds`` s (H.264 + AAC) and an ActivityNet-format annotation file,
    made once with ffmpeg under ``$L2L_BENCH_DATA``."""
    root = DATA / name
    ann = root / "annotations.json"
    if ann.exists():
        return root
    (root / "videos").mkdir(parents=True, exist_ok=True)
    db = {}

    def make(i):
        out = root / "videos" / f"v_cli{i:03d}.mp4"
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                        f"testsrc2=size={size}:rate=30:duration={seconds}", "-f", "lavfi", "-i",
                        f"sine=frequency={300 + 40 * i}:sample_rate=44100:duration={seconds}",
                        "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
                        "-c:a", "aac", "-shortest", str(out)], check=True)
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max(1, (os.cpu_count() or 2) // 2)) as pool:
        list(pool.map(make, range(n)))
    for i in range(n):
        db[f"cli{i:03d}"] = {"subset": "training", "duration": seconds, "url": "",
                             "annotations": [{"segment": [0.0, 1.0], "label": "A" if i % 2 else "B"}]}
    ann.write_text(json.dumps({"version": "VERSION 1.3", "database": db}))
    return root


def _cpu() -> float:
    """CPU seconds (user + system) of this process's finished children and their children."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def ffmpeg_run(videos: list[Path], pin: str | None = None) -> float:
    t = time.perf_counter()
    for v in videos:
        cmd = ["ffmpeg", "-nostdin", "-y", "-v", "error", "-threads", "0", "-i", str(v), "-map", "0:v", "-vf", FFMPEG_VF,
               "-vsync", "vfr", "-pix_fmt", "rgb24", "-f", "rawvideo", "/dev/null", "-map", "0:a",
               "-ac", "1", "-ar", "16000", "-f", "f32le", "/dev/null"]
        subprocess.run((["taskset", "-c", pin] if pin else []) + cmd, check=True)
    return time.perf_counter() - t


def l2l_run(root: Path, store: Path, workers: int, *, pin: str | None = None,
            one_thread: bool = False, csv: bool = False) -> tuple[float, dict]:
    """Wall seconds of the whole command, and its timing log."""
    log = store.with_suffix(".timings.json")
    env = dict(os.environ, L2L_TIMINGS=str(log), L2L_T0=repr(time.time()))
    data = (["--dataset", "csv", "--annotations", str(root / "list.csv")] if csv else
            ["--dataset", "activitynet", "--annotations", str(root / "annotations.json")])
    cmd = [sys.executable, "-c", "from l2l.cli.main import main; main()", "extract",
           *data, "--videos", str(root / "videos"), "--store", str(store),
           "--stages", "decode,spectrogram", "--device", "cpu", "--workers", str(workers),
           "--no-progress"]
    if one_thread:
        cmd += ["--set", "decode.threads=1"]
    t = time.perf_counter()
    env["L2L_T0"] = repr(time.time())
    p = subprocess.run((["taskset", "-c", pin] if pin else []) + cmd, env=env, capture_output=True,
                       text=True)
    wall = time.perf_counter() - t
    if p.returncode != 0 or "failed 0" not in p.stdout:
        raise SystemExit(f"l2l extract failed ({p.returncode}): {p.stdout[-500:]} {p.stderr[-2000:]}")
    timings = json.loads(log.read_text())
    shutil.rmtree(store, ignore_errors=True)
    log.unlink()
    return wall, timings


PARTS = [("before_extract", "start-up (interpreter, imports)"), ("setup", "store set-up"),
         ("cluster_start", "cluster start"), ("worker_start", "worker start-up (imports, setup)"),
         ("decode", "decode (sum over videos)"), ("spectrogram", "spectrogram (sum over videos)"),
         ("write", "staging writes (sum over videos)"), ("commit", "commits")]


def startup(t: dict) -> float:
    """Seconds before the first shard can run."""
    return sum(t.get(k, 0.0) for k in ("before_extract", "setup", "cluster_start", "worker_start"))


def end_to_end(args, work: Path) -> tuple[str, dict]:
    root = make_set(f"cli-{args.videos}x{args.seconds:.0f}s", args.videos, args.seconds)
    videos = sorted((root / "videos").glob("*.mp4"))
    configs = ["ffmpeg", "l2l-1", "l2l-2"]
    walls = {c: [] for c in configs}
    cpus = {c: [] for c in configs}
    logs = {c: [] for c in configs}
    for rep in range(args.reps):
        order = configs[rep % 3:] + configs[:rep % 3]
        for c in order:
            c0 = _cpu()
            if c == "ffmpeg":
                walls[c].append(ffmpeg_run(videos))
            else:
                w, t = l2l_run(root, work / f"{c}-{rep}", int(c[-1]))
                walls[c].append(w)
                logs[c].append(t)
            cpus[c].append(_cpu() - c0)
            print(f"rep {rep + 1}: {c:7s} {walls[c][-1]:6.2f} s wall, {cpus[c][-1]:6.2f} s CPU",
                  flush=True)
    med = {c: statistics.median(walls[c]) for c in configs}
    cpu = {c: statistics.median(cpus[c]) for c in configs}
    moments = logs["l2l-1"][0]["moments"]
    rows = [[c, f"{med[c]:.2f}", " ".join(f"{x:.2f}" for x in walls[c]),
             f"{med['ffmpeg'] / med[c]:.2f}x", f"{cpu[c]:.2f}", f"{cpu['ffmpeg'] / cpu[c]:.2f}x"]
            for c in configs]
    out = table(["run", "median wall s", "runs (s)", "speed vs FFmpeg (wall)", "CPU s",
                 "speed vs FFmpeg (CPU)"], rows)
    brk = []
    for key, label in PARTS:
        vals = [f"{statistics.median([t.get(key, 0.0) for t in logs[c]]):.2f}" for c in ("l2l-1", "l2l-2")]
        brk.append([label] + vals)
    out += "\n\nBreakdown (median seconds; per-video parts are summed over videos, so with 2 " \
           "workers they add up to more than the wall time):\n\n" + \
        table(["part", "--workers 1", "--workers 2"], brk)
    data = {"median": med, "cpu": cpu, "moments": moments, "videos": len(videos),
            "breakdown": {c: logs[c] for c in ("l2l-1", "l2l-2")}}
    return out, data


def realistic(args, work: Path) -> tuple[str, dict]:
    import _realistic as R
    root = R.make_realistic(args.scale)
    paths = R.videos(root)
    configs = ["ffmpeg", "torchcodec", "l2l-1", "l2l-2"]
    walls = {c: [] for c in configs}
    logs = {c: [] for c in configs}
    tc_moments = tc_import = None
    failures: list[str] = []
    for rep in range(args.reps):
        order = configs[rep % 4:] + configs[:rep % 4]
        for c in order:
            if c == "ffmpeg":
                walls[c].append(R.ffmpeg_run(paths))
            elif c == "torchcodec":
                w, tc_moments, tc_import = R.torchcodec_run(paths)
                walls[c].append(w)
            else:
                try:
                    w, t = l2l_run(root, work / f"real-{c}-{rep}", int(c[-1]), csv=True)
                except SystemExit as e:          # a failed run is reported, not hidden
                    failures.append(f"rep {rep + 1} {c}: {' '.join(str(e).split())[:300]}")
                    print(failures[-1], flush=True)
                    shutil.rmtree(work / f"real-{c}-{rep}", ignore_errors=True)
                    continue
                walls[c].append(w)
                logs[c].append(t)
            print(f"rep {rep + 1}: {c:10s} {walls[c][-1]:7.2f} s wall (load {os.getloadavg()[0]:.1f})",
                  flush=True)
    configs = [c for c in configs if walls[c]]
    med = {c: statistics.median(walls[c]) for c in configs}
    moments = next((logs[c][0]["moments"] for c in ("l2l-1", "l2l-2") if logs[c]), None)
    rows = [[c, f"{med[c]:.2f}", " ".join(f"{x:.2f}" for x in walls[c]),
             f"{med['ffmpeg'] / med[c]:.2f}x"] for c in configs]
    out = table(["run", "median wall s", "runs (s)", "speed vs ffmpeg CLI"], rows)
    ran = [c for c in ("l2l-1", "l2l-2") if logs[c]]
    brk = [[label] + [f"{statistics.median([t.get(key, 0.0) for t in logs[c]]):.2f}"
                      for c in ran] for key, label in PARTS]
    out += (f"\n\n{len(paths)} files, {moments} moments (torchcodec: {tc_moments}; its import "
            f"{tc_import:.2f} s is in its wall time, as l2l's start-up is in l2l's).\n\n"
            "l2l breakdown (median seconds; per-video parts summed over videos):\n\n"
            + table(["part"] + [f"--workers {c[-1]}" for c in ran], brk)
            + ("\n\nFailed runs:\n" + "\n".join(f"- {f}" for f in failures) if failures else ""))
    return out, {"median": med, "failures": failures, "runs": walls, "moments": moments,
                 "scale": args.scale,
                 "files": [p.name for p in paths], "torchcodec_moments": tc_moments,
                 "breakdown": {c: logs[c] for c in ran}}


SPIN = "import time\nt = time.perf_counter()\ns = 0\nfor i in range(20_000_000):\n    s += i\nprint(time.perf_counter() - t)"


def ceiling(n: int) -> float:
    """What n cores give this machine at all: n copies of a pure-Python loop pinned to cores
    0..n-1 at once, throughput relative to one copy on core 0 (n on an idle machine with n
    real cores; less with hyperthread siblings or neighbours' load)."""
    def run(k):
        procs = [subprocess.Popen(["taskset", "-c", str(i), sys.executable, "-c", SPIN],
                                  stdout=subprocess.PIPE, text=True) for i in range(k)]
        return [float(p.communicate()[0]) for p in procs]
    one = statistics.median(run(1))
    return sum(one / t for t in run(n))


def scaling(args, work: Path) -> tuple[str, dict]:
    root = make_set(f"cli-{args.scaling_videos}x{args.scaling_seconds:.0f}s", args.scaling_videos,
                    args.scaling_seconds)
    counts = [int(x) for x in args.workers_list.split(",")]
    res = {n: [] for n in counts}
    ceil = {n: [] for n in counts}
    for rep in range(args.reps):
        for n in (counts if rep % 2 == 0 else counts[::-1]):
            ceil[n].append(ceiling(n))
            pin = ",".join(str(i) for i in range(n))
            w, t = l2l_run(root, work / f"scale-{n}-{rep}", n, pin=pin, one_thread=True)
            steady = t["moments"] / max(1e-9, w - startup(t))
            res[n].append((w, startup(t), steady))
            print(f"rep {rep + 1}: {n} worker(s) on {n} core(s): {w:.2f} s, start-up "
                  f"{startup(t):.2f} s, {steady:.0f} moments/s steady", flush=True)
    base = statistics.median([r[2] for r in res[counts[0]]]) / counts[0]
    rows = []
    for n in counts:
        steady = statistics.median([r[2] for r in res[n]])
        c = statistics.median(ceil[n]) / statistics.median(ceil[counts[0]]) * counts[0]
        rows.append([n, f"{statistics.median([r[0] for r in res[n]]):.2f}",
                     f"{statistics.median([r[1] for r in res[n]]):.2f}", f"{steady:.0f}",
                     f"{steady / (base * counts[0]):.2f}x", f"{steady / (base * n):.2f}",
                     f"{c:.2f}x", f"{steady / (base * counts[0]) / (c / counts[0]):.2f}"])
    out = table(["workers (cores)", "wall s", "start-up s", "steady moments/s",
                 f"vs {counts[0]} worker(s)", "efficiency (>= 0.8 wanted)",
                 "machine ceiling (pinned CPU loops)", "speed-up / ceiling"], rows)
    return out, {"videos": args.scaling_videos, "seconds": args.scaling_seconds,
                 "runs": {str(n): res[n] for n in counts},
                 "ceiling": {str(n): ceil[n] for n in counts}}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=int, default=6, help="180 s videos for part 1")
    ap.add_argument("--seconds", type=float, default=180.0)
    ap.add_argument("--scaling-videos", type=int, default=40, help="videos for part 2 (>= 20 per worker)")
    ap.add_argument("--scaling-seconds", type=float, default=20.0)
    ap.add_argument("--workers-list", default="1,2", help="worker counts for part 2, pinned to as many cores")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--scaling-only", action="store_true")
    ap.add_argument("--realistic", action="store_true",
                    help="only part 3: the realistic set against ffmpeg and torchcodec")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="--realistic: file durations times this (1: 3 x 120 s 720p, ...)")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    if not shutil.which("ffmpeg"):
        raise SystemExit("ffmpeg is needed (to make the videos and as the reference)")
    work = Path(tempfile.mkdtemp(prefix="l2l-bench-cli-"))
    if args.realistic:
        try:
            text, data = realistic(args, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(text)
        if not args.no_record:
            record(f"l2l extract on realistic files vs ffmpeg and torchcodec (bench_cli, scale "
                   f"{args.scale:g})", f"Median of {args.reps} interleaved runs:\n\n{text}"
                   f"\n\n<!-- data: {json.dumps(data)} -->")
        return
    try:
        parts, data = [], {}
        if not args.scaling_only:
            text, data["end_to_end"] = end_to_end(args, work)
            print(text)
            parts.append(f"End to end, {args.videos} videos of {args.seconds:.0f} s (320x240 "
                         f"H.264 + AAC), median of {args.reps} interleaved runs:\n\n{text}")
        text, data["scaling"] = scaling(args, work)
        print(text)
        parts.append(f"Steady-state scaling, {args.scaling_videos} videos of "
                     f"{args.scaling_seconds:.0f} s, each worker count pinned to as many cores "
                     f"(taskset), decoder threads 1, median of {args.reps}:\n\n{text}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not args.no_record:
        section = "l2l extract end to end vs FFmpeg (bench_cli)" if not args.scaling_only else \
            f"l2l extract scaling, workers {args.workers_list} (bench_cli)"
        record(section, "\n\n".join(parts) + f"\n\n<!-- data: {json.dumps(data)} -->")


if __name__ == "__main__":
    main()
