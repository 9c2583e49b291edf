"""Throughput of the features stage: student moments per second on CPU (and GPU when present).

Runs ``stages.features.Features`` on one video of random moments (a randomly initialised
student: the weights do not change the cost) for each batch size and precision, after one
warm-up run, and prints a table.  Not a test: no pass/fail, just figures.

    python benchmarks/bench_features.py [--moments 128] [--batch-sizes 16,64] [--device auto]
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from l2l.models.students import build_student, save_student
from l2l.stages.features import Features, FeaturesConfig


def bench(checkpoint: Path, device: str, batch: int, amp: bool, n: int, repeats: int) -> float:
    rng = np.random.default_rng(0)
    x = {"frames": rng.integers(0, 256, (n, 112, 112, 3), dtype=np.uint8),
         "logmel": rng.normal(-6, 2, (n, 101, 40)).astype(np.float16)}
    stage = Features(FeaturesConfig(checkpoint=str(checkpoint), batch_size=batch, amp=amp))
    stage.setup(device)
    stage.run({k: v[:batch] for k, v in x.items()}, device=device)      # warm-up
    best = float("inf")
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        stage.run(x, device=device)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return n / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--moments", type=int, default=128, help="moments per timed run")
    ap.add_argument("--batch-sizes", default="16,64")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--repeats", type=int, default=2, help="timed runs; the best is reported")
    a = ap.parse_args()
    devices = ["cpu"]
    if a.device in ("auto", "cuda") and torch.cuda.is_available():
        devices = ["cuda"] if a.device == "cuda" else ["cpu", "cuda"]
    batches = [int(b) for b in a.batch_sizes.split(",")]
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}"
          + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
    print(f"{'device':<8}{'batch':>6}  {'precision':<10}{'moments/s':>10}")
    with tempfile.TemporaryDirectory() as d:
        ck = Path(d) / "student.pt"
        save_student(build_student(num_classes=400), ck, config={"bench": True}, classes=[
            str(i) for i in range(400)])
        for dev in devices:
            precisions = [False, True] if dev == "cuda" else [False]
            for b in batches:
                for amp in precisions:
                    prec = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if amp else "fp32"
                    rate = bench(ck, dev, b, amp, a.moments, a.repeats)
                    print(f"{dev:<8}{b:>6}  {prec:<10}{rate:>10.1f}", flush=True)


if __name__ == "__main__":
    main()
