"""Throughput of the features stage (``Features.run_batch``, numpy in and out), and the
pipeline's own overhead per moment.

Three measures, side by side in one run:
- **stage**: a randomly initialised student (the weights do not change the cost) over
  ``--videos`` videos of ``--moments`` random moments in all, by batch size and precision
  (fp32 on CPU; fp32 and bf16, and with ``--compile`` bf16 + ``torch.compile``, on CUDA); best
  of ``--repeats`` after a warm-up run;
- **stage overhead**: the same ``run_batch`` with a trivial model (a slice of the inputs), so
  what is left is the stage's own work: checks, staging, copies, dtype conversions;
- **extract overhead** (``--extract``): features-only ``l2l extract`` (serial, one worker) of a
  small synthetic set whose frames and log-mels are already stored, with that trivial model: what
  the runner and the store cost per moment, beside the stage.
Overheads are in microseconds per moment; the model rows in moments/s.  Not a test: no
pass/fail, just figures, recorded in ``RESULTS.md``.

    python benchmarks/bench_features.py [--moments 128] [--videos 4] [--batch-sizes 16,64]
        [--device auto] [--compile] [--extract]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from l2l.models.students import build_student, save_student
from l2l.stages.features import Features, FeaturesConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import GpuSampler, record, synthetic_set, table  # noqa: E402


class Trivial(torch.nn.Module):
    """Stands in for the student: (B, 512) outputs from a slice of the inputs, next to free."""

    def forward(self, frames, logmel):
        x = frames[:, 0, 0, :1].float() + logmel[:, 0, :1]
        y = x.expand(-1, 512)
        return {"image": y, "audio": y, "imageaudio": y}


class TrivialFeatures(Features):
    """The features stage with the trivial model (no checkpoint): its overhead alone."""

    def load_model(self, device):
        return Trivial().to(device)


def videos_of(n: int, v: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    sizes = [n // v + (i < n % v) for i in range(v)]
    return [{"frames": rng.integers(0, 256, (k, 112, 112, 3), dtype=np.uint8),
             "logmel": rng.normal(-6, 2, (k, 101, 40)).astype(np.float16)} for k in sizes]


def timed(stage: Features, videos, device: str, repeats: int) -> float:
    """Best seconds of ``run_batch`` over ``videos`` (after one warm-up run)."""
    stage.run_batch(videos, device=device)
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        stage.run_batch(videos, device=device)
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def extract_overhead(device: str, repeats: int, copies: int) -> tuple[float, float, int]:
    """Features-only extraction with the trivial model, serial, over a synthetic set made
    ``copies`` times larger by hard links: (seconds per moment over the whole run, marginal
    seconds per moment between a run over half the videos and one over all of them, moments).
    The marginal figure leaves out what a run pays once (store creation, commits, worker-side
    set-up)."""
    from gpu_steps import many

    from l2l.datasets import load_dataset
    from l2l.pipeline.extract import extract, plan_stages
    syn = synthetic_set("videos-160x120-short", classes=2, per_class=3, width=160, height=120,
                        dmin=20.0, dmax=30.0)
    with tempfile.TemporaryDirectory() as d:
        many(syn, Path(d) / "many", copies)
        ds = load_dataset("synthetic", Path(d) / "many" / "videos", Path(d) / "many" / "annotations.json")
        base = Path(d) / "base.zarr"
        cpu = plan_stages(["decode", "spectrogram"])
        extract(ds, base, stages=cpu, device="cpu", progress=False)
        # the models' FLOP count (a real forward pass of each, ~2 s on CPU) is recorded once per
        # store, when the first model stage runs: done here, so that no timed run pays it
        from l2l.models.cost import flops_per_moment
        from l2l.store import open_store
        open_store(base).set_info("flops_per_moment", flops_per_moment(num_classes=len(ds.classes)))
        stages = [s.for_device("cpu") for s in cpu] + \
            [TrivialFeatures(FeaturesConfig()).for_device(device)]
        best = {}
        half = len(ds.videos) // 2
        for i in range(repeats + 1):                         # the first round warms up
            for limit in (half, None):
                store = Path(d) / f"run{i}-{limit}.zarr"
                shutil.copytree(base, store)
                t0 = time.perf_counter()
                s = extract(ds, store, stages=stages, device=device, progress=False, limit=limit)
                sec = time.perf_counter() - t0
                assert s.failed == 0 and s.done == (limit or len(ds.videos)), s.line()
                if i and sec < best.get(limit, (float("inf"), 0))[0]:
                    best[limit] = (sec, s.moments)
                shutil.rmtree(store)
        (t_all, m_all), (t_half, m_half) = best[None], best[half]
        return t_all / m_all, (t_all - t_half) / max(1, m_all - m_half), m_all


def gpu_row(step: str, rate: float, util: GpuSampler) -> None:
    """One JSON row for ``gpu_steps.py report`` when ``$L2L_GPU_ROWS`` names a file."""
    import json
    import os
    if os.environ.get("L2L_GPU_ROWS"):
        row = {"step": step, "rate": rate, "unit": "moments/s"}
        if util.samples:
            row.update(gpu_mean=sum(util.samples) / len(util.samples), gpu_max=max(util.samples))
        with open(os.environ["L2L_GPU_ROWS"], "a") as f:
            f.write(json.dumps(row) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--moments", type=int, default=128, help="moments per timed run, in all")
    ap.add_argument("--videos", type=int, default=4, help="videos the moments are split over")
    ap.add_argument("--batch-sizes", default="16,64")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--repeats", type=int, default=2, help="timed runs; the best is reported")
    ap.add_argument("--compile", action="store_true", help="also bf16 + torch.compile (CUDA)")
    ap.add_argument("--extract", action="store_true",
                    help="also features-only extraction with the trivial model (overhead)")
    ap.add_argument("--no-record", action="store_true", help="print only; leave RESULTS.md alone")
    ap.add_argument("--results", type=Path, default=None,
                    help="record into this copy of RESULTS.md instead (gpu_check.sh)")
    ap.add_argument("--copies", type=int, default=10,
                    help="--extract: hard-linked copies of the 6 synthetic videos (10: 60 videos)")
    a = ap.parse_args()
    devices = ["cpu"]
    if a.device in ("auto", "cuda") and torch.cuda.is_available():
        devices = ["cuda"] if a.device == "cuda" else ["cpu", "cuda"]
    elif a.device == "cuda":
        sys.exit("--device cuda: torch sees no GPU")
    batches = [int(b) for b in a.batch_sizes.split(",")]
    videos = videos_of(a.moments, a.videos)
    rows, over = [], []
    head = f"{'device':<7}{'batch':>6}  {'precision':<14}{'moments/s':>11}  GPU"
    print(head)
    with tempfile.TemporaryDirectory() as d:
        ck = Path(d) / "student.pt"
        save_student(build_student(num_classes=400), ck, config={"bench": True},
                     classes=[str(i) for i in range(400)])
        for dev in devices:
            modes = [("fp32", False)] + ([("bf16", False)] if dev == "cuda" else [])
            for b in batches:
                compiled = [("bf16", True)] if dev == "cuda" and a.compile and b == max(batches) else []
                for prec, comp in modes + compiled:
                    stage = Features(FeaturesConfig(checkpoint=str(ck), batch_size=b, precision=prec,
                                                    compile=comp)).for_device(dev)
                    with GpuSampler(dev == "cuda") as util:
                        rate = a.moments / timed(stage, videos, dev, a.repeats)
                    name = prec + (" compiled" if comp else "")
                    print(f"{dev:<7}{b:>6}  {name:<14}{rate:>11.1f}  {util.text()}", flush=True)
                    rows.append([dev, b, name, f"{rate:,.0f}", util.text()])
                    gpu_row(f"features stage {name} batch {b} ({dev})", rate, util)
            b = max(batches)
            stage = TrivialFeatures(FeaturesConfig(batch_size=b)).for_device(dev)
            us = 1e6 * timed(stage, videos, dev, a.repeats) / a.moments
            print(f"{dev:<7}{b:>6}  stage overhead (trivial model): {us:.1f} us/moment", flush=True)
            over.append([dev, f"stage run_batch, batch {b}", f"{us:.1f}"])
            if a.extract:
                whole, marginal, n = extract_overhead(dev, a.repeats, a.copies)
                print(f"{dev:<7}  features-only extract (trivial model), {n} moments: "
                      f"{1e6 * whole:.1f} us/moment over the run, {1e6 * marginal:.1f} marginal",
                      flush=True)
                over.append([dev, f"features-only extract, serial, {n} moments: whole run",
                             f"{1e6 * whole:.1f}"])
                over.append([dev, "features-only extract: marginal (all videos - half)",
                             f"{1e6 * marginal:.1f}"])
    body = table(["device", "batch", "precision", "moments/s", "GPU utilisation"], rows)
    body += "\n\n" + table(["device", "what (trivial model)", "us per moment"], over)
    body += (f"\n\n- The student (image + audio ResNet-18, Psi, classifier) via `run_batch` over "
             f"{a.moments} moments of random 112x112 frames and (101, 40) float16 log-mels in "
             f"{a.videos} videos, numpy in and out, best of {a.repeats} after a warm-up; "
             f"{torch.get_num_threads()} torch threads on CPU.  GPU utilisation: nvidia-smi "
             "sampled every 0.2 s during the timed runs (n/a without a GPU).\n"
             "- Overhead rows: the same with a trivial model (a slice of the inputs), so the time "
             "is the stage's own (checks, staging, copies, conversions) and, for extract, the "
             "runner's and the store's (reading frames and log-mels, writing three (N, 512) "
             "float16 arrays, commits).")
    if a.results is not None:
        import _common
        _common.RESULTS = a.results
    if not a.no_record:
        record("Features stage", body)


if __name__ == "__main__":
    main()
