"""End-to-end extraction (decode + spectrogram into a fresh Zarr store, committed) of the same
videos with 1 worker (the serial runner, in this process) and with 2 dask workers (an embedded
cluster of 2 processes), side by side; the scaling ratio.

The 2-worker cluster is started before the clock starts (its start-up, a few seconds, is shown
apart: it is paid once per run, not per video).  Both configurations run in each repetition,
alternating which goes first; the best repetition of each is reported.  Also records the store's
bytes per moment (used by ``bench_projection.py``).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import record, synthetic_set, table  # noqa: E402

from l2l.datasets.base import load_dataset  # noqa: E402
from l2l.pipeline.extract import extract, plan_stages  # noqa: E402
from l2l.pipeline.runner import local_cluster  # noqa: E402


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--set", type=Path, default=None,
                    help="A make-synthetic folder (default: the synthetic 320x240 set).")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--one-core-per-worker", action="store_true",
                    help="One decoder thread and one torch thread per worker, so that 1 worker "
                         "uses one core and 2 workers two: the scaling of the worker model itself.")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    root = args.set or synthetic_set()
    ds = load_dataset("synthetic", root / "videos", root / "annotations.json")
    one = args.one_core_per_worker
    stages = plan_stages(["decode", "spectrogram"], {"decode": {"threads": 1}} if one else None)
    if one:
        import torch
        torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="l2l-scaling-"))
    t0 = time.perf_counter()
    cluster = local_cluster(2)
    startup = time.perf_counter() - t0
    best = {1: None, 2: None}
    moments = store_bytes = 0
    try:
        for rep in range(args.reps):
            for workers in ((1, 2) if rep % 2 == 0 else (2, 1)):
                store = work / f"s{workers}-{rep}"
                kw = {"workers": 1} if workers == 1 else {"scheduler": cluster.scheduler_address}
                t = time.perf_counter()
                s = extract(ds, store, stages=stages, device="cpu", progress=False, **kw)
                wall = time.perf_counter() - t
                assert s.failed == 0 and s.done == len(ds.videos), s.line()
                moments, store_bytes = s.moments, du(store)
                print(f"rep {rep + 1}: {workers} worker(s) {wall:.2f} s ({s.line()})", flush=True)
                best[workers] = wall if best[workers] is None else min(best[workers], wall)
                shutil.rmtree(store)
    finally:
        cluster.close()
        shutil.rmtree(work, ignore_errors=True)
    vsec = sum(v.duration or 0 for v in ds.videos)
    rows = [[w, f"{best[w]:.2f}", f"{moments / best[w]:.0f}", f"{vsec / best[w]:.1f}",
             f"{best[1] / best[w]:.2f}x"] for w in (1, 2)]
    out = table(["workers", "seconds", "moments/s", "video-s/s", "speed-up vs 1"], rows)
    notes = (["One core per worker: decoder threads 1 and torch threads 1 in every worker, so "
              "the 1-worker run uses one core and the 2-worker run two."] if one else []) + [
             f"{len(ds.videos)} videos, {moments} moments, {vsec:.0f} s of video; best of "
             f"{args.reps} alternating repetitions; 2-worker cluster start-up {startup:.1f} s "
             "(not in the times above).",
             f"This machine has {os.cpu_count()} cores" + (
                 "." if one else ": 2 workers can at best use the same 2 cores that the 1-worker "
                 "run already uses through decoder threads and torch threads, so the ratio here "
                 "measures overhead and core utilisation, not how a cluster scales."),
             f"Store: {store_bytes / moments:.0f} bytes per moment on disk "
             "(frames uint8 + logmel float16 + times + frame_index, zstd)."]
    data = {"moments": moments, "video_seconds": vsec, "seconds_1": best[1],
            "seconds_2": best[2], "bytes_per_moment": store_bytes / moments,
            "cores": os.cpu_count(), "startup_s": startup}
    print(out)
    print("\n".join(notes))
    if not args.no_record:
        record("End-to-end extraction, 1 vs 2 workers" + (", one core each" if one else ""),
               out + "\n\n" + "\n".join(f"- {n}" for n in notes) + f"\n\n<!-- data: {json.dumps(data)} -->")


if __name__ == "__main__":
    main()
