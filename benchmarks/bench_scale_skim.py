"""train-skim and evaluate at ActivityNet size (issue 20): peak RSS and seconds of one training
epoch in memory and streamed (``--memory-budget``), and of ``evaluate``, each run as the CLI
command a user types (a subprocess, its peak RSS from ``wait4``).

The store (``build_store``): ``--videos`` (20,000) features-only videos split as ActivityNet's
(50 % training, 25 % validation, the rest testing, unlabelled), 200 classes, lengths drawn
from a log-normal around 215 moments (10 to 1,500: ActivityNet-like; 4.3 M moments at 20,000
videos), three (N, 512) float16 features ``image``, ``audio`` and ``imageaudio``, each a class
direction plus noise (so the skim model has something to learn).  It is built once under
``--work`` and reused.  This is the train/eval half of the scale benchmark; the index half
(open, commit, ``store info``, ``verify``) is ``bench_scale.py``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import record, table  # noqa: E402

FIELDS = ("image", "audio", "imageaudio")


def lengths_for(videos: int, seed: int = 0) -> np.ndarray:
    """ActivityNet-like moment counts: log-normal, median ~170, mean ~215, within 10..1500."""
    rng = np.random.default_rng((seed, 1))
    return np.clip(np.round(rng.lognormal(np.log(170), 0.7, size=videos)), 10, 1500).astype(np.int64)


def build_store(path: Path, videos: int, *, classes: int = 200, seed: int = 0,
                fields=FIELDS, shard: int = 64, commit_every: int = 2048) -> dict:
    """A features-only store of ``videos`` videos (see the module docstring), built through
    l2l's store API; returns {"videos", "moments"}.  Reused when it is already complete."""
    from l2l.store import ArrayRecord, Put, VideoMeta, create_store, open_store
    path = Path(path)
    lengths = lengths_for(videos, seed)
    if path.exists():
        st = open_store(path)
        if len(st.ids()) == videos:
            return {"videos": videos, "moments": int(lengths.sum())}
    st = create_store(path)
    names = [f"class{c:03d}" for c in range(classes)]
    st.update_info({"classes": names, "fields": list(fields)})
    rng = np.random.default_rng(seed)
    centres = {f: rng.standard_normal((classes, 512), np.float32) for f in fields}
    rec = {f: ArrayRecord(stage="features", config={"type": "features", "field": f}, key=f"bench-{f}",
                          upstream={}, versions={}) for f in fields}
    n_train, n_val = videos // 2, videos // 4
    done = set(st.ids())
    items, since = [], 0
    for i, n in enumerate(lengths):
        vid = f"v{i:06d}"
        if vid in done:
            continue
        c = int(rng.integers(classes))
        subset = "training" if i < n_train else "validation" if i < n_train + n_val else "testing"
        meta = VideoMeta(id=vid, labels=(names[c],) if subset != "testing" else (), subset=subset,
                         duration=float(n) * 16 / 30, fps=30.0, num_moments=int(n), has_audio=True)
        arrays = {}
        for f in fields:
            a = rng.standard_normal((int(n), 512), np.float32)
            a += 0.5 * centres[f][c]
            arrays[f] = a.astype(np.float16)
        items.append(Put(meta, arrays, dict(rec), True))
        if len(items) == shard:
            st.put_many(items)
            since += len(items)
            items = []
        if since >= commit_every:
            st.commit()
            since = 0
            print(f"  {i + 1} videos", flush=True)
    st.put_many(items)
    st.commit()
    return {"videos": videos, "moments": int(lengths.sum())}


def run_cli(argv: list[str], log: Path) -> dict:
    """``l2l argv`` as a subprocess: wall seconds and peak RSS (GiB, of the process tree's
    largest process: ``ru_maxrss`` of the waited-for child)."""
    t = time.perf_counter()
    with open(log, "w") as f:
        p = subprocess.Popen([sys.executable, "-m", "l2l.cli.main", *argv], stdout=f,
                             stderr=subprocess.STDOUT)
        _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    rc = os.waitstatus_to_exitcode(status)
    if rc != 0:
        raise SystemExit(f"l2l {' '.join(argv)} failed (exit {rc}); see {log}")
    return {"seconds": round(wall, 1), "peak_rss_gib": round(ru.ru_maxrss / 2**20, 2)}


def load() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=int, default=20000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/l2l-bench-scale"))
    ap.add_argument("--only-build", action="store_true")
    ap.add_argument("--budget", type=float, default=2.0, help="--memory-budget of the streamed run")
    ap.add_argument("--skip", default="", help="comma list of runs to skip: memory,stream,evaluate")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    store = args.work / f"store-{args.videos}.zarr"
    t = time.perf_counter()
    facts = build_store(store, args.videos)
    print(f"store {store}: {facts} ({time.perf_counter() - t:.0f} s)", flush=True)
    if args.only_build:
        return
    skip = set(filter(None, args.skip.split(",")))
    common = ["--store", str(store), "--epochs", "1", "--min-steps", "0", "--device", "cpu",
              "--no-progress", "--val-subset", "validation"]
    runs = {}
    for name, budget in (("memory", "1000"), ("stream", str(args.budget))):
        if name in skip:
            continue
        out = args.work / f"skim-{name}"
        if out.exists():
            import shutil
            shutil.rmtree(out)
        runs[name] = {"load_before": load(),
                      **run_cli(["train-skim", *common, "--out", str(out), "--memory-budget", budget],
                                args.work / f"train-{name}.log")}
        runs[name]["epoch_seconds"] = float(
            (out / "log.csv").read_text().splitlines()[-1].split(",")[3])
        print(name, runs[name], flush=True)
    if "evaluate" not in skip:
        ck = args.work / ("skim-stream" if (args.work / "skim-stream").exists() else "skim-memory")
        runs["evaluate"] = {"load_before": load(),
                            **run_cli(["evaluate", "--store", str(store), "--checkpoint", str(ck),
                                       "--out", str(args.work / "eval"), "--device", "cpu",
                                       "--no-progress", "--memory-budget", str(args.budget)],
                                      args.work / "evaluate.log")}
        print("evaluate", runs["evaluate"], flush=True)
    rows = [[k, v["seconds"], v.get("epoch_seconds", ""), v["peak_rss_gib"], v["load_before"]]
            for k, v in runs.items()]
    out = table(["run", "command seconds", "epoch seconds (log.csv)", "peak RSS GiB",
                 "load avg before (1/5/15 min)"], rows)
    print(out)
    if not args.no_record:
        record(f"train-skim and evaluate at ActivityNet size ({args.videos} videos)",
               out + f"\n\n- store: {facts['videos']} videos, {facts['moments']} moments, "
               "3 x (N, 512) float16; train-skim 1 epoch, batch 256, T = 10, CPU; evaluate "
               f"with --memory-budget {args.budget}\n\n<!-- data: {json.dumps(runs)} -->")


if __name__ == "__main__":
    main()
