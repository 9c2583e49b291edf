"""A projection, from the rates measured by the other benchmarks (read back from RESULTS.md),
of extraction time and store size for all of ActivityNet v1.3 (about 20,000 videos of 117 s on
average) on one GPU machine and on k machines.

Inputs (from RESULTS.md; run those benchmarks first):
- decode + spectrogram: video-seconds per CPU-second of the l2l path (``bench_decode.py``);
- bytes per moment of the decode + spectrogram store, and the 1 -> 2 worker efficiency
  (``bench_extract_scaling.py``);
- the features stage on a GPU: ``--gpu-moments-per-s`` (from ``bench_features.py`` on a GPU
  machine); without it, the GPU side is estimated from FLOPs and says so.

Assumptions, printed with the table: ``--cores`` decoding cores per machine, all busy; the store
on a file system all machines share, fast enough not to be the bottleneck; per-core rates as
measured here (a loaded 2-core VM: real servers are usually faster per core).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, record, table  # noqa: E402

VIDEOS, SECONDS, FPS, STRIDE = 20_000, 117.0, 30.0, 16
FEATURE_BYTES = 3 * 512 * 2          # image, audio, imageaudio: (N, 512) float16 each
STUDENT_FLOPS = 2 * 2 * 0.49e9       # two ResNet-18 trunks at 112x112, 2 FLOPs per MAC


def section_data(title: str) -> dict | None:
    text = RESULTS.read_text() if RESULTS.exists() else ""
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    if not m:
        return None
    d = re.search(r"<!-- data: (\{.*?\}) -->", m.group(1), re.S)
    return json.loads(d.group(1)) if d else None


def decode_table_row() -> dict | None:
    """The l2l row of the decode table, for a section recorded without a data comment."""
    text = RESULTS.read_text() if RESULTS.exists() else ""
    m = re.search(r"^## Decode \+ spectrogram\n.*?^\| l2l +\| *([\d.]+) *\| *([\d.]+) *\| *([\d.]+)",
                  text, re.S | re.M)
    return {"l2l": {"moments_s": float(m.group(1)), "vsec_s": float(m.group(2)),
                    "vsec_cpu": float(m.group(3))}} if m else None


def hms(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    h = seconds / 3600
    return f"{h:.1f} h" if h < 48 else f"{h / 24:.1f} days"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cores", type=int, default=32, help="Decoding cores per machine.")
    ap.add_argument("--machines", default="1,2,4,8,16")
    ap.add_argument("--gpu-moments-per-s", type=float, default=None,
                    help="Measured features-stage rate on one GPU (bench_features.py).")
    ap.add_argument("--gpu-tflops", type=float, default=100.0,
                    help="Sustained TFLOP/s assumed for the FLOP estimate when no GPU rate is given.")
    ap.add_argument("--resolution", default="640x360",
                    help="Typical frame size assumed for ActivityNet; the decode rate measured on "
                         "the benchmark set is scaled by the ratio of pixels.")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    dec = section_data("Decode + spectrogram") or decode_table_row()
    ext = section_data("End-to-end extraction, 1 vs 2 workers")
    if not dec or not ext:
        sys.exit("run bench_decode.py and bench_extract_scaling.py first (their data is read "
                 f"from {RESULTS})")
    measured_core = dec["l2l"]["vsec_cpu"]             # video-seconds per CPU-second
    # end to end (store writes, commit) against decode + spectrogram alone, same videos, wall
    e2e = min(1.0, (ext["video_seconds"] / ext["seconds_1"]) / dec["l2l"]["vsec_s"])
    w, h = (int(x) for x in args.resolution.split("x"))
    bench_px = 320 * 240
    px_scale = bench_px / (w * h)
    per_core = measured_core * e2e * px_scale
    eff = min(1.0, ext["seconds_1"] / ext["seconds_2"] / 2)  # per-process efficiency at 2
    bpm = ext["bytes_per_moment"]
    total_vsec = VIDEOS * SECONDS
    moments = total_vsec * FPS / STRIDE
    if args.gpu_moments_per_s:
        gpu_rate, gpu_src = args.gpu_moments_per_s, "measured (--gpu-moments-per-s)"
    else:
        gpu_rate = args.gpu_tflops * 1e12 / STUDENT_FLOPS
        gpu_src = (f"estimated from FLOPs ({STUDENT_FLOPS / 1e9:.2f} GFLOP per moment at "
                   f"{args.gpu_tflops:.0f} TFLOP/s sustained), not measured")
    rows = []
    for k in [int(x) for x in args.machines.split(",")]:
        cpu_s = total_vsec / (per_core * args.cores * k * (eff if k * args.cores > 1 else 1))
        gpu_s = moments / (gpu_rate * k)
        wall = max(cpu_s, gpu_s)                       # pipelined: the slower side sets the pace
        rows.append([k, k * args.cores, hms(cpu_s), hms(gpu_s), hms(wall),
                     "decode (CPU)" if cpu_s >= gpu_s else "features (GPU)"])
    size_dec = moments * bpm
    size_all = size_dec + moments * FEATURE_BYTES
    out = table(["machines (1 GPU each)", "decoding cores", "decode + spectrogram", "features on GPU",
                 "extraction (pipelined)", "bound by"], rows)
    notes = [f"ActivityNet v1.3: {VIDEOS} videos x {SECONDS:.0f} s = {total_vsec / 3600:.0f} h of "
             f"video, {moments / 1e6:.2f} M moments at {FPS:.0f} fps / {STRIDE}.",
             f"Decode + spectrogram per core: {measured_core:.1f} video-s per CPU-s measured on "
             f"320x240 (bench_decode.py) x {e2e:.2f} for the store writes and commit (end-to-end vs "
             f"decode alone, same videos) x {px_scale:.2f} for {args.resolution} frames (ASSUMED: "
             f"decode cost proportional to pixels) = {per_core:.1f} video-s per core-second; "
             f"x {args.cores} cores per machine, x {eff:.2f} per-worker efficiency (measured 1 -> 2 "
             "workers on this 2-core VM, bench_extract_scaling.py; pessimistic for real servers).",
             f"Features on one GPU: {gpu_rate:,.0f} moments/s, {gpu_src}.",
             f"Store: {bpm:.0f} bytes per moment measured (synthetic set) for frames + logmel (+ times, indices) "
             f"-> {size_dec / 2**40:.2f} TiB; with the three (N, 512) float16 features "
             f"({FEATURE_BYTES} bytes per moment, uncompressed) {size_all / 2**40:.2f} TiB; "
             f"the features alone (what train-skim reads) {moments * FEATURE_BYTES / 2**30:.1f} GiB.",
             "Assumes the store sits on a shared file system fast enough for all writers "
             f"({size_dec / (total_vsec / (per_core * args.cores * 16 * eff)) / 2**20:.0f} MiB/s "
             "of writes at 16 machines) and the videos are read from local or fast storage."]
    print(out)
    print("\n".join(notes))
    if not args.no_record:
        record("Projection: all of ActivityNet v1.3", out + "\n\n" + "\n".join(f"- {n}" for n in notes))


if __name__ == "__main__":
    main()
