"""How far the model stages' numbers move with the device and precision (part of
``gpu_check.sh``; not a test).  The same random student and teacher, the same inputs, through
``run_batch``: CPU fp32 is the reference; compared with it: CPU fp32 with another batch size, and
on CUDA fp32 and bf16.  Prints, per output, the largest absolute difference and the relative one
(norm of the difference over the norm of the reference), as stored (float16); appends rows to
``$L2L_GPU_ROWS`` when set.  Usage: python benchmarks/gpu_compare.py [--moments 256] [--clips 16]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from l2l.models.students import build_student, save_student
from l2l.models.teacher import teacher
from l2l.stages.features import Features, FeaturesConfig
from l2l.stages.teacher import TeacherConfig, TeacherStage


def diff(ref: dict, got: dict) -> dict[str, tuple[float, float]]:
    out = {}
    for k, r in ref.items():
        r, g = r.astype(np.float64), got[k].astype(np.float64)
        out[k] = (float(np.abs(r - g).max()), float(np.linalg.norm(r - g) / max(np.linalg.norm(r), 1e-30)))
    return out


def report(what: str, d: dict) -> None:
    for k, (mx, rel) in d.items():
        print(f"{what:<34} {k:<15} max |diff| {mx:9.2e}   relative {rel:9.2e}", flush=True)
        if os.environ.get("L2L_GPU_ROWS"):
            with open(os.environ["L2L_GPU_ROWS"], "a") as f:
                f.write(json.dumps({"step": f"numbers vs CPU fp32: {what}, {k}", "max_abs": mx,
                                    "relative": rel}) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--moments", type=int, default=256)
    ap.add_argument("--clips", type=int, default=16)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    x = [{"frames": rng.integers(0, 256, (a.moments, 112, 112, 3), dtype=np.uint8),
          "logmel": rng.normal(-6, 2, (a.moments, 101, 40)).astype(np.float16)}]
    clips = [{"clips": rng.integers(0, 256, (a.clips, 16, 112, 112, 3), dtype=np.uint8)}]
    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as d:
        torch.manual_seed(0)
        ck = Path(d) / "student.pt"
        save_student(build_student(num_classes=400), ck, config={}, classes=[str(i) for i in range(400)])
        tw = Path(d) / "teacher.pt"
        torch.save(teacher().state_dict(), tw)
        models = {}                  # one model per config, as a run shares it (process.Run)

        def placed(stage, device):
            stage = stage.for_device(device)
            stage.setup(device, models=models)
            return stage
        for name, make, inputs, batches in (
                ("features", lambda **kw: Features(FeaturesConfig(checkpoint=str(ck), **kw)), x, (64, 16)),
                ("teacher", lambda **kw: TeacherStage(TeacherConfig(weights=str(tw), **kw)), clips, (8, 2))):
            ref = placed(make(batch_size=batches[0]), "cpu").run_batch(inputs)[0]
            report(f"{name} CPU fp32 batch {batches[1]}",
                   diff(ref, placed(make(batch_size=batches[1]), "cpu").run_batch(inputs)[0]))
            if cuda:
                for prec in ("fp32", "bf16"):
                    got = placed(make(precision=prec), "cuda").run_batch(inputs, device="cuda")[0]
                    report(f"{name} CUDA {prec}", diff(ref, got))


if __name__ == "__main__":
    main()
