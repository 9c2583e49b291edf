"""Upper bound for the features stage: the student's forward pass alone on device-resident
inputs (no host copies, no numpy).  Modes: eager fp32; eager bf16 autocast + channels-last at
batch 1024 and 4096; ``torch.compile`` bf16 at 1024.  Prints moments/s per mode and, when
``$L2L_GPU_ROWS`` names a file, appends one JSON row per mode to it (``gpu_steps.py report``
turns them into RESULTS.md).  Not a test.  Usage: python benchmarks/gpu_raw_student.py [cuda|cpu]
(on CPU: batch 16, two iterations, no compile: a dry run of the script itself).
"""
from __future__ import annotations

import json
import os
import sys
import time

import torch

from l2l.models.students import build_student


def row(what: str, rate: float, batch: int) -> None:
    print(f"raw student {what:<28} batch {batch:5d}: {rate:10,.0f} moments/s", flush=True)
    if os.environ.get("L2L_GPU_ROWS"):
        with open(os.environ["L2L_GPU_ROWS"], "a") as f:
            f.write(json.dumps({"step": f"raw student forward, {what}, batch {batch}",
                                "rate": rate, "unit": "moments/s"}) + "\n")


def timeit(model, dev, b: int, amp: bool, iters: int) -> float:
    f = torch.randint(0, 256, (b, 112, 112, 3), dtype=torch.uint8, device=dev)
    m = torch.randn(b, 101, 40, device=dev)
    with torch.inference_mode(), torch.autocast(dev.type, torch.bfloat16, enabled=amp):
        for _ in range(3):
            model(f, m)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(iters):
            model(f, m)
        if dev.type == "cuda":
            torch.cuda.synchronize()
    return b * iters / (time.perf_counter() - t)


def main() -> None:
    dev = torch.device(sys.argv[1] if len(sys.argv) > 1 else "cuda")
    cuda = dev.type == "cuda"
    torch.backends.cudnn.benchmark = True
    m = build_student(num_classes=400).to(dev).eval()
    print(f"student params {sum(p.numel() for p in m.parameters()) / 1e6:.2f} M", flush=True)
    iters = 10 if cuda else 2
    b = 1024 if cuda else 16
    row("eager fp32", timeit(m, dev, b, False, iters), b)
    if not cuda:
        return
    cl = m.to(memory_format=torch.channels_last)
    for b in (1024, 4096):
        row("eager bf16 channels-last", timeit(cl, dev, b, True, iters), b)
    t0 = time.perf_counter()
    try:
        mc = torch.compile(cl, dynamic=False)
        rate = timeit(mc, dev, 1024, True, iters)
        row(f"compiled bf16 (compile+run {time.perf_counter() - t0:.0f} s)", rate, 1024)
    except Exception as e:            # report it and go on: the other figures stand
        print("compile failed:", type(e).__name__, " ".join(str(e).split())[:200], flush=True)


if __name__ == "__main__":
    main()
