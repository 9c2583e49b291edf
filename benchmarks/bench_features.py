"""Throughput of the features stage: student moments per second on CPU (and GPU when present).

Runs ``stages.features.Features`` on one video of random moments (a randomly initialised
student: the weights do not change the cost) for each batch size and precision, after one
warm-up run, and prints a table.  Not a test: no pass/fail, just figures.

    python benchmarks/bench_features.py [--moments 128] [--batch-sizes 16,64] [--device auto]
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from l2l.models.students import build_student, save_student

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import record, table  # noqa: E402
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


class GpuSampler:
    """Mean GPU utilisation (nvidia-smi, every 0.2 s) while the block runs; n/a on CPU."""

    def __init__(self, device: str):
        self.device, self.samples, self._stop = device, [], None

    def __enter__(self):
        import shutil
        import threading
        if self.device != "cuda" or not shutil.which("nvidia-smi"):
            return self
        self._stop = threading.Event()

        def loop():
            import subprocess
            while not self._stop.is_set():
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu",
                                      "--format=csv,noheader,nounits", "-i", "0"],
                                     capture_output=True, text=True)
                if out.returncode == 0 and out.stdout.strip().isdigit():
                    self.samples.append(int(out.stdout.strip()))
                self._stop.wait(0.2)
        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._stop is not None:
            self._stop.set()
            self._thread.join()

    def text(self) -> str:
        return f"{sum(self.samples) / len(self.samples):.0f}%" if self.samples else "n/a"


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
    rows = []
    with tempfile.TemporaryDirectory() as d:
        ck = Path(d) / "student.pt"
        save_student(build_student(num_classes=400), ck, config={"bench": True}, classes=[
            str(i) for i in range(400)])
        for dev in devices:
            precisions = [False, True] if dev == "cuda" else [False]
            for b in batches:
                for amp in precisions:
                    prec = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if amp else "fp32"
                    with GpuSampler(dev) as util:
                        rate = bench(ck, dev, b, amp, a.moments, a.repeats)
                    print(f"{dev:<8}{b:>6}  {prec:<10}{rate:>10.1f}  {util.text()}", flush=True)
                    rows.append([dev, b, prec, f"{rate:.1f}", util.text()])
    body = table(["device", "batch", "precision", "moments/s", "GPU utilisation"], rows)
    body += (f"\n\n- The student (image + audio ResNet-18, Psi, classifier) over {a.moments} moments "
             "of random 112x112 frames and (101, 40) log-mels, best of "
             f"{a.repeats}; torch {torch.get_num_threads()} threads on CPU.  GPU utilisation: "
             "nvidia-smi sampled every 0.2 s during the timed runs (n/a without a GPU).")
    record("Features stage", body)


if __name__ == "__main__":
    main()
