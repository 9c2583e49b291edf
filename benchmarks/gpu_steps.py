"""Helpers of ``benchmarks/gpu_check.sh`` (not a benchmark by itself):

- ``many SRC OUT --copies K``: a larger set from a ``make-synthetic`` folder: K hard-linked
  copies of each video under new ids (same annotation format), so that extraction rates are
  measured over tens of thousands of moments without rendering them all;
- ``extract NAME -- ARGS...``: run ``l2l extract ARGS`` in a subprocess, sample GPU utilisation
  (nvidia-smi every 0.2 s) meanwhile, read the moments and seconds from its summary line and
  append a row to ``$L2L_GPU_ROWS`` (JSON lines);
- ``report``: turn the rows into the "GPU check" section of ``benchmarks/RESULTS.md`` (with the
  machine line), comparing with the issue-11 targets.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import GpuSampler, record, table  # noqa: E402

ROWS = os.environ.get("L2L_GPU_ROWS", "")      # rows are written only when this names a file
SUMMARY = re.compile(r"done (\d+) / skipped (\d+) / failed (\d+) \((\d+) moments in ([\d.]+) s\)")


def add_row(**row) -> None:
    if not ROWS:
        return
    with open(ROWS, "a") as f:
        f.write(json.dumps(row) + "\n")


def many(src: Path, out: Path, copies: int) -> None:
    ann = json.loads((src / "annotations.json").read_text())
    db = {}
    (out / "videos").mkdir(parents=True, exist_ok=True)
    for vid, entry in ann["database"].items():
        media = next((src / "videos").glob(f"{vid}.*"))
        for k in range(copies):
            new = f"{vid}_c{k:03d}"
            dst = out / "videos" / f"{new}{media.suffix}"
            if not dst.exists():
                os.link(media, dst)
            db[new] = entry
    ann["database"] = db
    (out / "annotations.json").write_text(json.dumps(ann))
    print(f"{len(db)} videos in {out}")


def extract(name: str, args: list[str], timeout: float | None = None) -> int:
    cmd = [sys.executable, "-c", "from l2l.cli.main import main; main()", "extract", *args]
    t0 = time.perf_counter()
    with GpuSampler() as s:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            rc, out, err = r.returncode, r.stdout, r.stderr
        except subprocess.TimeoutExpired as e:      # keep what it printed, and say so
            rc = 124
            out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            err = (e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")) + \
                f"\n(timed out after {timeout:.0f} s)\n"
    wall = time.perf_counter() - t0
    sys.stdout.write(out[-3000:])
    sys.stderr.write(err[-3000:])
    m = None
    for m in SUMMARY.finditer(out + err):
        pass
    row = {"step": name, "rc": rc, "wall_s": round(wall, 1), "unit": "moments/s"}
    if m:
        done, _, failed, moments, sec = m.groups()
        row.update(done=int(done), failed=int(failed), moments=int(moments), seconds=float(sec),
                   rate=int(moments) / max(float(sec), 1e-9))
    if s.samples:
        row.update(gpu_mean=sum(s.samples) / len(s.samples), gpu_max=max(s.samples))
    add_row(**row)
    print(json.dumps(row), flush=True)
    return rc


TARGETS = [   # (row name prefix, target, unit, what)
    ("features stage bf16", 50_000, "moments/s", "features stage, bf16"),
    ("extract features-only N", 20_000, "moments/s", "features-only extraction"),
    ("extract teacher N", 2_000, "clips/s", "teacher extraction"),
]


def report(title: str) -> None:
    if not ROWS:
        sys.exit("report: set L2L_GPU_ROWS to the rows file (gpu_check.sh does)")
    rows = [json.loads(line) for line in Path(ROWS).read_text().splitlines() if line.strip()]
    body = []
    for r in rows:
        rate = (f"{r['rate']:,.0f}" if r.get("rate", 0) >= 100 else f"{r.get('rate', 0):.2f}") + \
            f" {r.get('unit', '')}" if "rate" in r else "n/a"
        if "max_abs" in r:
            rate = f"max abs {r['max_abs']:.1e}, relative {r['relative']:.1e}"
        if r["step"].startswith("extract teacher"):
            rate = rate.replace("moments/s", "clips/s")
        gpu = f"{r['gpu_mean']:.0f}% (max {r['gpu_max']})" if "gpu_mean" in r else "n/a"
        extra = (f"{r['moments']} moments in {r['seconds']} s, failed {r['failed']}"
                 if "moments" in r else "")
        if r.get("rc"):
            extra += f" rc={r['rc']}"
        body.append([r["step"], rate, gpu, extra.strip()])
    text = table(["step", "rate", "GPU utilisation", "detail"], body)
    best = lambda prefix: max((r["rate"] for r in rows if r["step"].startswith(prefix)
                               and "rate" in r), default=None)
    checks = []
    for prefix, target, unit, what in TARGETS:
        got = best(prefix)
        checks.append([what, f">= {target:,} {unit}",
                       "not measured" if got is None else f"{got:,.1f}",
                       "n/a" if got is None else ("met" if got >= target else "NOT met")])
    dec, allst = best("extract decode-only N"), best("extract all stages fresh N")
    if dec and allst:
        checks.append(["all stages fresh vs decode-only, same workers", ">= 0.9x",
                       f"{allst / dec:.2f}x", "met" if allst >= 0.9 * dec else "NOT met"])
    text += "\n\n" + table(["target (issue 11)", "target", "measured", ""], checks)
    text += ("\n\n- Extraction rates are the CLI's own summary (moments of the videos done over "
             "the run's seconds, worker start-up and model loading included); 'N' is all cores. "
             "Teacher: one clip per moment.  GPU utilisation: nvidia-smi every 0.2 s during "
             "the step.  Made by `benchmarks/gpu_check.sh` (rows in its $OUT/rows.jsonl, log in "
             "$OUT/log.txt).")
    record(title, text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("many")
    m.add_argument("src", type=Path)
    m.add_argument("out", type=Path)
    m.add_argument("--copies", type=int, default=10)
    e = sub.add_parser("extract")
    e.add_argument("name")
    e.add_argument("--timeout", type=float, default=float(os.environ.get("STEP_LIMIT", 0)) or None,
                   help="seconds (output kept on timeout; default $STEP_LIMIT, set by gpu_check.sh)")
    e.add_argument("args", nargs=argparse.REMAINDER)
    r = sub.add_parser("report")
    r.add_argument("--title", default="GPU check")
    r.add_argument("--results", type=Path, default=None,
                   help="record into this copy of RESULTS.md (default: benchmarks/RESULTS.md)")
    a = ap.parse_args()
    if a.cmd == "many":
        many(a.src, a.out, a.copies)
    elif a.cmd == "extract":
        sys.exit(extract(a.name, [x for x in a.args if x != "--"], a.timeout))
    else:
        if a.results is not None:
            import _common
            _common.RESULTS = a.results
        report(a.title)


if __name__ == "__main__":
    main()
