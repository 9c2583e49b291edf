"""train-skim and evaluate at ActivityNet size (issue 20): peak RSS and seconds of one training
epoch in memory and streamed (``--memory-budget``), and of ``evaluate``, each run as the CLI
command a user types (a subprocess, its peak RSS from ``wait4``).

The store: ``bench_scale.build_store(kind="activitynet")``: ``--videos`` (20,000) features-only
videos of 30-400 moments (4.3 M moments at 20,000 videos), 200 classes, a quarter in
"validation", three (N, 512) float16 features with a class signal.  It is built once under
``--work`` and reused.  The runs: ``train-skim`` for one epoch (``--epochs 1 --min-steps 0``,
batch 256, T = 10, validation scored after the epoch as always) with a budget larger than the
features (in memory) and with ``--memory-budget`` (streamed), then ``evaluate`` on the
validation subset, one after the other.  This is the train/eval half of the scale benchmark;
the index half (open, commit, ``store info``, ``verify``) is ``bench_scale.py``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import record, table  # noqa: E402
from bench_scale import build_store  # noqa: E402  (the shared store builder)

def run_cli(argv: list[str], log: Path) -> dict:
    """``l2l argv`` as a subprocess: wall seconds and peak RSS (GiB, of the process tree's
    largest process: ``ru_maxrss`` of the waited-for child)."""
    t = time.perf_counter()
    with open(log, "w") as f:
        p = subprocess.Popen([sys.executable, "-c", "from l2l.cli.main import main; main()", *argv], stdout=f,
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
    if not (store / "zarr.json").exists():
        facts = build_store(store, args.videos, kind="activitynet", progress=True)
    else:
        from l2l.store import open_store
        st = open_store(store)
        facts = {"videos": len(st.ids()), "moments": sum(st.meta(v).num_moments for v in st.ids())}
    print(f"store {store}: {facts} ({time.perf_counter() - t:.0f} s)", flush=True)
    if args.only_build:
        return
    skip = set(filter(None, args.skip.split(",")))
    common = ["--store", str(store), "--epochs", "1", "--min-steps", "0", "--device", "cpu",
              "--no-progress"]
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
