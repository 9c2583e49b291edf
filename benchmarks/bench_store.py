"""The store: reading every video's features into memory (``Store.read_many``), against a raw
read of the same bytes (every file of the store's segments, ``open().read()``, no decoding) and
against one ``.npy`` file per video and feature (the layout the authors' code reads), side by
side.

The data: ``--videos`` videos of 100-340 moments (about 220 on average, as ActivityNet at
30 fps) with two (N, 512) float16 features, ``image`` and ``audio`` (random numbers: they do
not compress, as real features barely do).  Each reader runs in turn, in rotating order, with a
warm page cache (the data was just written) and, where this process may drop the page cache
(root), cold; the best repetition is reported.
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

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import record, table  # noqa: E402

from l2l.store import ArrayRecord, VideoMeta, create_store, open_store  # noqa: E402

FIELDS = ("image", "audio")


def build(root: Path, videos: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    store = create_store(root / "store")
    npy = root / "npy"
    npy.mkdir()
    lengths = rng.integers(100, 341, size=videos)
    rec = ArrayRecord(stage="features", config={"type": "features"}, key="k", upstream={},
                      versions={})
    for i, n in enumerate(lengths):
        vid = f"v{i:05d}"
        arrays = {f: rng.standard_normal((n, 512), np.float32).astype(np.float16) for f in FIELDS}
        meta = VideoMeta(id=vid, labels=("x",), subset="validation", duration=n * 16 / 30,
                         fps=30.0, num_moments=int(n), has_audio=True)
        for f, a in arrays.items():
            np.save(npy / f"{vid}_{f}.npy", a)
        store.put(meta, arrays, {f: rec for f in FIELDS}, replace=True)
        if (i + 1) % 1000 == 0:
            store.commit()
    store.commit()
    return int(lengths.sum())


def read_store(root: Path):
    b = open_store(root / "store").read_many(list(FIELDS))
    return sum(a.nbytes for a in b.arrays.values())


def read_raw(root: Path):
    total = 0
    for p in sorted((root / "store" / "segments").rglob("*")):
        if p.is_file():
            with open(p, "rb") as f:
                total += len(f.read())
    return total


def read_npy(root: Path):
    names = sorted(os.listdir(root / "npy"))
    out = {f: [] for f in FIELDS}
    for n in names:
        vid, f = n[:-4].rsplit("_", 1)
        out[f].append(np.load(root / "npy" / n))
    return sum(np.concatenate(v).nbytes for v in out.values())


def drop_caches() -> bool:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None, help="Where to write (default: a temp dir).")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="l2l-store-bench-", dir=args.dir))
    try:
        t = time.perf_counter()
        moments = build(root, args.videos)
        print(f"built {args.videos} videos, {moments} moments in {time.perf_counter() - t:.1f} s")
        readers = {"store read_many": read_store, "raw read of the segment files": read_raw,
                   "one .npy per video and feature": read_npy}
        sizes = {"store read_many": sum(p.stat().st_size for p in (root / "store").rglob("*") if p.is_file()),
                 "one .npy per video and feature": sum(p.stat().st_size for p in (root / "npy").iterdir())}
        sizes["raw read of the segment files"] = sum(
            p.stat().st_size for p in (root / "store" / "segments").rglob("*") if p.is_file())
        files = {"store read_many": sum(1 for p in (root / "store").rglob("*") if p.is_file()),
                 "one .npy per video and feature": len(os.listdir(root / "npy"))}
        files["raw read of the segment files"] = sum(
            1 for p in (root / "store" / "segments").rglob("*") if p.is_file())
        results = {}
        for cache in ("warm", "cold"):
            if cache == "cold" and not drop_caches():
                print("cold-cache rows skipped: cannot write /proc/sys/vm/drop_caches (not root)")
                continue
            names = list(readers)
            best = {k: float("inf") for k in names}
            for rep in range(args.reps):
                for k in names[rep % 3:] + names[:rep % 3]:
                    if cache == "cold":
                        drop_caches()
                    else:
                        readers[k](root)                   # make sure this one is cached
                    t = time.perf_counter()
                    readers[k](root)
                    best[k] = min(best[k], time.perf_counter() - t)
            results[cache] = best
        logical = moments * 512 * 2 * len(FIELDS)
        rows = []
        for cache, best in results.items():
            ref = best["store read_many"]
            for k, s in best.items():
                rows.append([cache, k, files[k], f"{sizes[k] / 2**20:.0f}", f"{s:.3f}",
                             f"{logical / s / 2**20:.0f}",
                             "1.00x" if k == "store read_many" else f"{s / ref:.2f}x"])
        out = table(["page cache", "reader", "files", "MiB on disk", "seconds", "MiB/s (features)",
                     "store is faster by"], rows)
        notes = [f"{args.videos} videos, {moments} moments, {len(FIELDS)} features of (N, 512) "
                 f"float16 = {logical / 2**20:.0f} MiB in memory; best of {args.reps}; local disk."]
        print(out)
        print("\n".join(notes))
        data = {k: v for k, v in results.items()}
        if not args.no_record:
            record("Store: reading all features", out + "\n\n" + "\n".join(f"- {n}" for n in notes)
                   + f"\n\n<!-- data: {json.dumps(data)} -->")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
