"""The pipeline's own overhead for features-only extraction, in microseconds per moment.

A store holding ``frames`` and ``logmel`` (decode + spectrogram of generated videos, made once) is
copied, then ``extract`` runs the features stage over it, serially, in this process: decode and
spectrogram are cached, so the run reads the stored inputs, runs the model and stages the
features.  Beside it, over the very same moments (read into memory beforehand, not timed), the
features stage's ``run_batch`` alone: the model's forward time.  Overhead per moment = (extract
wall - forward) / moments; also shown without the one-off set-up (opening the store, loading the
model).  The two alternate, median of ``--reps``.  Target: <= 50 us per moment (issue 11).

The model is, by default, a trivial stand-in (outputs sliced from the inputs: next to free), so
that the difference is not lost in the noise of a CPU forward pass of the real student (about
0.1 s a moment on 2 cores, 2,000 times the target); ``--student`` uses a randomly initialised
real student instead (the weights do not change the cost).

    python benchmarks/bench_overhead.py [--videos 8] [--seconds 60] [--reps 3] [--model-wait-us 30]

With ``--model-wait-us``, the stand-in model waits with the CPU idle, as a host waits for a GPU:
the overhead then shows what is not hidden behind the model (reading the next group's inputs
runs in the read step meanwhile).
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import record, table  # noqa: E402
from bench_cli import make_set  # noqa: E402

from l2l.datasets.base import load_dataset  # noqa: E402
from l2l.pipeline.extract import extract, plan_stages  # noqa: E402
from l2l.stages.features import Features  # noqa: E402
from l2l.store import open_store  # noqa: E402


class TrivialFeatures(Features):
    """The features stage with a stand-in model: (B, 512) outputs from a slice of the inputs;
    with ``WAIT_US``, it also waits that many microseconds per moment without using the CPU, as
    a host waits for a GPU's forward pass (``--model-wait-us``)."""

    WAIT_US = 0.0

    def load_model(self, device):
        import torch
        wait = self.WAIT_US

        class Trivial(torch.nn.Module):
            def forward(self, frames, logmel):
                if wait:
                    time.sleep(wait * 1e-6 * len(frames))
                y = (frames[:, 0, 0, :1].float() + logmel[:, 0, :1]).expand(-1, 512)
                return {"image": y, "audio": y, "imageaudio": y}
        return Trivial().to(device)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--student", action="store_true", help="the real student (slow on CPU)")
    ap.add_argument("--model-wait-us", type=float, default=0.0,
                    help="the stand-in model also waits this long per moment, CPU idle (a GPU's "
                         "forward pass, as the host sees it): what reading ahead can hide")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    TrivialFeatures.WAIT_US = args.model_wait_us
    import torch
    from l2l.models.cost import flops_per_moment
    from l2l.models.students import build_student, save_student

    root = make_set(f"cli-{args.videos}x{args.seconds:.0f}s", args.videos, args.seconds)
    ds = load_dataset("activitynet", root / "videos", root / "annotations.json")
    work = Path(tempfile.mkdtemp(prefix="l2l-overhead-"))
    try:
        torch.manual_seed(0)
        save_student(build_student(num_classes=len(ds.classes)).eval(), work / "student" / "student.pt",
                     config={"seed": 0}, classes=list(ds.classes))
        base = work / "base"
        s = extract(ds, base, stages=plan_stages(["decode", "spectrogram"]), device="cpu",
                    progress=False)
        assert s.failed == 0, s.line()
        st = open_store(base)
        st.set_info("flops_per_moment", flops_per_moment(num_classes=len(ds.classes)))
        opts = {"features": {"checkpoint": str(work / "student")}}
        stages = plan_stages(["decode", "spectrogram", "features"], opts)
        if not args.student:
            stages[-1] = TrivialFeatures(stages[-1].config)
        feats = stages[-1].for_device("cpu")
        batch = st.read_many(["frames", "logmel"], [v.id for v in ds.videos])
        inputs = [{"frames": batch.video(i, "frames"), "logmel": batch.video(i, "logmel")}
                  for i in range(len(batch.ids))]
        moments = int(batch.offsets[-1])
        feats.run_batch(inputs[:1], device="cpu")                  # load the model, warm up
        walls, setups, forwards, parts = [], [], [], []
        for rep in range(args.reps):
            for what in (("extract", "forward") if rep % 2 == 0 else ("forward", "extract")):
                if what == "forward":
                    t = time.perf_counter()
                    feats.run_batch(inputs, device="cpu")
                    forwards.append(time.perf_counter() - t)
                    continue
                store = work / f"s{rep}"
                shutil.copytree(base, store)
                t = time.perf_counter()
                s = extract(ds, store, stages=stages, device="cpu", progress=False)
                walls.append(time.perf_counter() - t)
                setups.append(s.timings.get("setup", 0.0))
                parts.append(s.timings)
                assert s.failed == 0 and s.done == len(ds.videos) and s.moments == moments, s.line()
                shutil.rmtree(store)
            print(f"rep {rep + 1}: extract {walls[-1]:.2f} s, forward {forwards[-1]:.2f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    wall, setup, fwd = (statistics.median(x) for x in (walls, setups, forwards))
    over = (wall - fwd) / moments * 1e6
    steady = (wall - setup - fwd) / moments * 1e6
    part = {k: statistics.median([t.get(k, 0.0) for t in parts]) for k in ("read", "write", "commit")}
    rows = [["features-only extract (wall)", f"{wall:.3f}", f"{wall / moments * 1e6:.0f}"],
            ["model forward alone (run_batch)", f"{fwd:.3f}", f"{fwd / moments * 1e6:.0f}"],
            ["overhead = extract - forward", f"{wall - fwd:.3f}", f"{over:.0f}"],
            ["- one-off set-up (store, model)", f"{setup:.3f}", f"{setup / moments * 1e6:.0f}"],
            ["- reading frames + logmel (read_many)", f"{part['read']:.3f}", f"{part['read'] / moments * 1e6:.0f}"],
            ["- staging writes (put_many)", f"{part['write']:.3f}", f"{part['write'] / moments * 1e6:.0f}"],
            ["- commits (checksums, index)", f"{part['commit']:.3f}", f"{part['commit'] / moments * 1e6:.0f}"],
            ["overhead without one-off set-up", f"{wall - setup - fwd:.3f}", f"{steady:.0f}"]]
    out = table(["", "seconds", "us per moment"], rows)
    notes = [("Real student (random weights). " if args.student else "Trivial stand-in model "
              "(see the docstring)" + (f", waiting {args.model_wait_us:g} us per moment with the CPU "
                                       "idle, as for a GPU. " if args.model_wait_us else ". ")) + f"{len(ds.videos)} videos of {args.seconds:.0f} s, {moments} moments; CPU, fp32, "
             f"torch threads {torch.get_num_threads()}; median of {args.reps} alternating runs.",
             f"One-off set-up (store, model load) {setup:.3f} s. Target: <= 50 us per moment of "
             f"pipeline overhead: {'met' if over <= 50 else 'not met'} ({over:.0f} us with "
             f"set-up, {steady:.0f} us without)."]
    print(out)
    print("\n".join(notes))
    if not args.no_record:
        record(f"Pipeline overhead, features-only extraction (bench_overhead, {len(ds.videos)} x "
               f"{args.seconds:.0f} s)" + (", student" if args.student else "")
               + (", model waiting as for a GPU" if args.model_wait_us else ""),
               out + "\n\n" + "\n".join(f"- {n}" for n in notes) +
               f"\n\n<!-- data: {json.dumps({'moments': moments, 'wall': walls, 'forward': forwards, 'setup': setups})} -->")


if __name__ == "__main__":
    main()
