"""Bounded memory (issue 7): decoding streams the file, so a worker's memory does not grow with
the frame size or the length of the video (peak RSS of a subprocess, measured)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from helpers import write_raw

REPO = Path(__file__).resolve().parents[1]


# ---- bounded memory (peak RSS growth of a subprocess) ----------------------------------------
# Peak RSS is the kernel's VmHWM, reset to the current RSS just before decoding (clear_refs 5).
# Not ``getrusage``'s ru_maxrss: a child forked from this (large, torch-holding) pytest process
# starts with the parent's peak, which would hide any growth.
_MEASURE = textwrap.dedent("""
    import json, sys, time
    from l2l.stages.decode import DecodeConfig, decode_video

    def kb(field):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1])

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = kb("VmRSS")
    t = time.perf_counter()
    d = decode_video(sys.argv[1], DecodeConfig(threads=2))
    print(json.dumps({"growth_mb": (kb("VmHWM") - base) / 1024, "seconds": time.perf_counter() - t,
                      "frames": list(d["frames"].shape), "moments": len(d["times"])}))
""")


def _measure(path: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(path)], capture_output=True, text=True,
                         timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_4k_decode_memory_is_bounded_far_below_a_whole_video_load(tmp_path):
    n = 16
    path = write_raw(tmp_path / "uhd.mp4", frames=n, size=(3840, 2160))
    m = _measure(path)
    whole_rgb_mb = n * 3840 * 2160 * 3 / 2**20            # 380 MiB: every frame decoded to RGB
    assert m["frames"] == [1, 112, 112, 3]
    assert m["growth_mb"] > 3840 * 2160 * 1.5 / 2**20, m     # the measure sees a decoded 4K frame
    assert m["growth_mb"] < whole_rgb_mb / 2.5, m          # ~80 MiB measured (decoder + 2 threads)


def test_memory_does_not_grow_with_the_length_of_the_video(tmp_path):
    short = _measure(write_raw(tmp_path / "short.mkv", frames=150, size=(320, 240), audio_seconds=5))
    long = _measure(write_raw(tmp_path / "long.mkv", frames=1600, size=(320, 240), audio_seconds=54))
    whole_mb = 1600 * 320 * 240 * 3 / 2**20                # 352 MiB of RGB frames, had it been loaded
    out_mb = long["moments"] * (112 * 112 * 3 + 16000 * 4) / 2**20   # the output itself: ~10 MiB
    assert long["moments"] == 100
    assert long["growth_mb"] - short["growth_mb"] < out_mb * 2 + 16, (short, long)
    assert long["growth_mb"] < whole_mb / 5


def test_audio_that_outlasts_the_video_by_20_minutes_is_streamed(tmp_path):
    # 20 min of audio after 2 video frames: 73 MiB of 16 kHz float samples were it all kept, and
    # (before the rolling buffer took chunks in O(1)) minutes of quadratic copying.
    path = write_raw(tmp_path / "tail.mkv", frames=2, audio_seconds=1200)
    m = _measure(path)
    assert m["moments"] == 1
    assert m["growth_mb"] < 60, m                     # ~30 MiB measured: 120 s kept at most
    assert m["seconds"] < 20, m
