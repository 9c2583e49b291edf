"""Stores at Kinetics and ActivityNet scale: what the index costs as the store grows.

``build_store(path, videos, ...)`` writes a features-only store through l2l's own store API
(``put_many`` + ``commit``, as ``extract --student`` would): random (N, 512) float16 features with
a class signal (each video's class prototype added to a random 10-20 % window of its moments),
``kind="activitynet"``: 30-400 moments a video (215 on average: 20,000 videos hold 4.3 M
moments), 200 classes, three fields (image, audio, imageaudio); ``kind="kinetics"``: few moments
a video (``moments``, default 4-12), 400 classes, one field (imageaudio).  A quarter of each
class is in "validation", the rest in "training".  It is importable (``benchmarks/`` on
``sys.path``), so that other benchmarks (train-skim and evaluate at scale) build the same stores.

The index half (this script's ``main``) records, for each ``--videos`` size:

- open: a fresh process's ``open_store(path)`` and its first answers (``info()``, one video's
  ``meta`` and ``records``), timed inside the process (imports apart);
- commit: 64 new videos staged as 16 parcels of 4 (what the serial ``extract`` stages between
  two commits), then ``commit()``; the median of 3;
- ``l2l store info``: the whole command as a subprocess, minus ``l2l --help`` (the CLI's own
  start-up), each the best of 3;
- ``l2l store verify``: the whole command (it reads every array);
- a dask worker's RSS: a one-worker embedded cluster whose worker opens the store
  (``pipeline.process.Run(path).store``, as a shard task does) and asks what a shard of 16 videos asks
  of it (``has``/``records``/``meta``/``failure``), then stages those 16 videos; its RSS
  (``/proc/self/status``) before opening and after.

Not here: peak RSS of ``train-skim`` and ``evaluate`` at scale (the training half).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import record, table  # noqa: E402

DIM = 512
KINDS = {
    # kind: (classes, fields, default moments (lo, hi) inclusive)
    "activitynet": (200, ("image", "audio", "imageaudio"), (30, 400)),
    "kinetics": (400, ("imageaudio",), (4, 12)),
}


def build_store(path, videos: int, *, kind: str = "activitynet", fields=None, moments=None,
                classes: int | None = None, seed: int = 0, val_fraction: float = 0.25,
                parcel_videos: int = 512, commit_videos: int = 8192,
                progress: bool = False) -> dict:
    """Write a features-only store of ``videos`` videos at ``path`` (a new Zarr store, or an
    ``.h5`` file) with l2l's store API; see the module docstring.  ``moments``: (lo, hi), the
    range of moments per video (inclusive); ``parcel_videos`` videos per ``put_many``, a commit
    every ``commit_videos``.  Returns ``{"videos", "moments", "seconds", "classes", "fields"}``.
    Deterministic in ``seed``."""
    from l2l.core.hashing import stable_hash
    from l2l.store import ArrayRecord, Put, VideoMeta, create_store

    t0 = time.perf_counter()
    n_classes, default_fields, default_moments = KINDS[kind]
    n_classes = classes or n_classes
    fields = tuple(fields or default_fields)
    lo, hi = moments or default_moments
    rng = np.random.default_rng(seed)
    names = [f"class{c:03d}" for c in range(n_classes)]
    protos = {f: rng.standard_normal((n_classes, DIM)).astype(np.float32) for f in fields}
    pool = rng.standard_normal((1 << 16, DIM)).astype(np.float16)     # noise rows, drawn from
    lengths = rng.integers(lo, hi + 1, size=videos)
    labels = rng.integers(0, n_classes, size=videos)
    val = rng.random(videos) < val_fraction
    config = {"type": "features", "synthetic": kind, "seed": seed}
    st = create_store(path)
    st.update_info({"dataset": f"synthetic-{kind}", "classes": names, "fields": list(fields),
                    "stages": {"features": {"config": config, "config_hash": stable_hash(config)}}})
    batch: list = []
    done = 0
    for i in range(videos):
        n, c = int(lengths[i]), int(labels[i])
        vid = f"{kind[0]}{i:07d}"
        meta = VideoMeta(id=vid, labels=(names[c],), subset="validation" if val[i] else "training",
                         duration=round(n * 16 / 30, 3), fps=30.0, num_moments=n, has_audio=True,
                         source=f"/data/{kind}/videos/{vid}.mp4")
        start = int(rng.integers(0, n))
        width = max(1, int(n * rng.uniform(0.1, 0.2)))
        arrays, records = {}, {}
        for f in fields:
            a = pool[(np.arange(n) * 7919 + int(rng.integers(0, len(pool)))) % len(pool)].copy()
            a[start:start + width] += (2.0 * protos[f][c]).astype(np.float16)
            arrays[f] = a
            key = stable_hash([vid, f, config])
            records[f] = ArrayRecord(stage="features", config=config, key=key,
                                     upstream={"frames": key, "logmel": key}, versions={})
        batch.append(Put(meta, arrays, records, True))
        if len(batch) >= parcel_videos or i == videos - 1:
            st.put_many(batch)
            batch = []
        if (i + 1) % commit_videos == 0 or i == videos - 1:
            st.commit()
            done = i + 1
            if progress:
                print(f"  built {done}/{videos} videos ({time.perf_counter() - t0:.0f} s)",
                      flush=True)
    return {"videos": videos, "moments": int(lengths.sum()), "seconds": time.perf_counter() - t0,
            "classes": n_classes, "fields": list(fields)}


# ---- the index half ------------------------------------------------------------------------
def _py(code: str, *args) -> str:
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], check=True,
                          capture_output=True, text=True).stdout


OPEN = """
import sys, time
from l2l.store import open_store
t = time.perf_counter()
st = open_store(sys.argv[1])
st.info()
vid = sys.argv[2]
st.meta(vid); st.records(vid)
print(time.perf_counter() - t)
"""


def time_open(path: Path, vid: str) -> float:
    return min(float(_py(OPEN, path, vid)) for _ in range(3))


def _record(st):
    """A record like the built store's (the same config: a new video must not mix configs)."""
    from l2l.store import ArrayRecord
    config = st.info()["stages"]["features"]["config"]
    return ArrayRecord(stage="features", config=config, key="k", upstream={}, versions={})


def time_commit(path: Path, reps: int = 3) -> float:
    """Median seconds of ``commit()`` of 64 new videos staged as 16 parcels of 4."""
    from l2l.store import Put, VideoMeta, open_store
    st = open_store(path)
    rec = _record(st)
    times = []
    for rep in range(reps):
        for p in range(16):
            st.put_many([Put(VideoMeta(id=f"new{time.time_ns()}-{rep}-{p}-{j}", labels=("class000",),
                                       subset="training", duration=5.0, fps=30.0, num_moments=8,
                                       has_audio=True),
                             {"imageaudio": np.zeros((8, DIM), np.float16)}, {"imageaudio": rec}, True)
                         for j in range(4)])
        t = time.perf_counter()
        st.commit()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def time_cli(*argv, reps: int = 3) -> float:
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        subprocess.run([str(Path(sys.executable).with_name("l2l")), *map(str, argv)], check=True,
                       capture_output=True)
        best = min(best, time.perf_counter() - t)
    return best


WORKER = """
import json, sys
import numpy as np
from distributed import Client
sys.path.insert(0, sys.argv[3])
from bench_scale import worker_task
from l2l.pipeline.runner import local_cluster
with local_cluster(1) as cluster, Client(cluster) as client:
    print(json.dumps(client.submit(worker_task, sys.argv[1], json.loads(sys.argv[2]), pure=False).result()))
"""


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker_task(path: str, ids: list) -> dict:
    """On a dask worker: RSS before and after what a shard asks of the store (see the docstring)."""
    import gc
    from l2l.pipeline.process import Run
    from l2l.store import Put, VideoMeta
    gc.collect()
    before = _rss_mb()
    st = Run(path).store
    puts = []
    rec = _record(st)
    for vid in ids:
        ask = getattr(st, "has", None)
        present = ask(vid) if ask else vid in st.ids()
        if present:
            st.records(vid)
            m = st.meta(vid)
        fail = getattr(st, "failure", None)
        if fail:
            fail(vid)
        puts.append(Put(VideoMeta(id=f"w-{vid}-{os.getpid()}", labels=("class000",),
                                  subset="training", duration=5.0, fps=30.0, num_moments=8,
                                  has_audio=True),
                        {"imageaudio": np.zeros((8, DIM), np.float16)}, {"imageaudio": rec}, True))
    st.put_many(puts)
    gc.collect()
    return {"before_mb": before, "after_mb": _rss_mb()}


def worker_rss(path: Path, ids: list) -> dict:
    return json.loads(_py(WORKER, path, json.dumps(ids), Path(__file__).resolve().parent).strip()
                      .splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, nargs="+", default=[20000, 240000])
    ap.add_argument("--kind", choices=sorted(KINDS), default="kinetics")
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("L2L_BENCH_DATA", "/tmp/l2l-bench")))
    ap.add_argument("--keep", action="store_true", help="Keep the stores (reused when present).")
    ap.add_argument("--no-verify", action="store_true", help="Skip `store verify` (reads everything).")
    ap.add_argument("--no-record", action="store_true")
    a = ap.parse_args()
    rows = []
    help_s = time_cli("--help")
    for n in a.videos:
        path = a.work / f"scale-{a.kind}-{n}.zarr"
        built = ""
        if not (path / "zarr.json").exists():
            shutil.rmtree(path, ignore_errors=True)
            b = build_store(path, n, kind=a.kind, progress=True)
            built = f"{b['seconds']:.0f}"
        vid = f"{a.kind[0]}{n // 2:07d}"
        o = time_open(path, vid)
        c = time_commit(path)
        info = time_cli("store", "info", path) - help_s
        ver = time_cli("store", "verify", path, "--no-progress", reps=1) if not a.no_verify else float("nan")
        ids = [f"{a.kind[0]}{i:07d}" for i in range(0, n, max(1, n // 16))][:16]
        w = worker_rss(path, ids)
        rows.append([n, built or "(reused)", f"{o:.3f}", f"{c:.3f}", f"{info:.2f}",
                     f"{ver:.1f}", f"{w['before_mb']:.0f} -> {w['after_mb']:.0f}"])
        print(rows[-1], flush=True)
        if not a.keep:
            shutil.rmtree(path, ignore_errors=True)
    body = table(["videos", "build (s)", "open (s)", "commit of 64 videos (s)",
                  "store info beyond --help (s)", "store verify (s)", "dask worker RSS (MB)"], rows)
    print(body)
    if not a.no_record:
        load = os.getloadavg()
        record(f"Store index at scale ({a.kind})",
               body + f"\n\n- `l2l --help` took {help_s:.2f} s.  Load average at the end "
               f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (2 cores, shared with other work).")


if __name__ == "__main__":
    main()
