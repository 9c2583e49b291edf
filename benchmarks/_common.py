"""Shared by the benchmark scripts (not a benchmark): the machine line, the test videos, and
writing one section of ``benchmarks/RESULTS.md``."""
from __future__ import annotations

import os
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
DATA = Path(os.environ.get("L2L_BENCH_DATA", "/tmp/l2l-bench"))


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    gpu = "no GPU"
    try:
        import torch
        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except Exception:
        pass
    load = ""
    try:
        load = f"; load average at start {os.getloadavg()[0]:.1f}"
    except OSError:
        pass
    import av
    import torch
    return (f"{cpu}, {os.cpu_count()} cores{mem}, {gpu}; Linux {platform.release()}; "
            f"Python {platform.python_version()}, torch {torch.__version__}, PyAV {av.__version__}"
            f"{load}")


def command() -> str:
    return "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0])] + sys.argv[1:])


def synthetic_set(name: str = "videos-320x240", *, classes: int = 2, per_class: int = 4,
                  width: int = 320, height: int = 240, dmin: float = 20.0, dmax: float = 40.0) -> Path:
    """A synthetic set (``l2l make-synthetic``), made once and kept under ``$L2L_BENCH_DATA``."""
    out = DATA / name
    if not (out / "annotations.json").exists():
        subprocess.run([sys.executable, "-c", "from l2l.cli.main import main; main()",
                        "make-synthetic", str(out),
                        "--classes", str(classes), "--videos-per-class", str(per_class),
                        "--width", str(width), "--height", str(height),
                        "--duration-min", str(dmin), "--duration-max", str(dmax)], check=True)
    return out


def table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), sep] + [line(r) for r in cells[1:]])


def record(section: str, body: str) -> None:
    """Replace (or append) the ``## section`` of RESULTS.md with ``body``, stamped with the
    command and the machine."""
    stamp = (f"Command: `{command()}`  \nMachine: {machine()}  \n"
             f"Run: {time.strftime('%Y-%m-%d %H:%M')}\n\n")
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    block = f"## {section}\n\n{stamp}{body.strip()}\n"
    pat = re.compile(rf"^## {re.escape(section)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pat.search(text):
        text = pat.sub(lambda m: block + "\n", text, count=1)
    else:
        text = text.rstrip() + "\n\n" + block
    RESULTS.write_text(text.rstrip() + "\n")
    print(f"\n(recorded in {RESULTS}, section '{section}')")


class GpuSampler:
    """GPU utilisation samples (percent, nvidia-smi every 0.2 s) while the block runs; none when
    ``active`` is false or there is no nvidia-smi."""

    def __init__(self, active: bool = True):
        self.active, self.samples, self._stop, self._thread = active, [], None, None

    def __enter__(self):
        import shutil
        import threading
        if not self.active or not shutil.which("nvidia-smi"):
            return self
        self._stop = threading.Event()

        def loop():
            while not self._stop.is_set():
                r = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu",
                                    "--format=csv,noheader,nounits", "-i", "0"],
                                   capture_output=True, text=True)
                if r.returncode == 0 and r.stdout.strip().isdigit():
                    self.samples.append(int(r.stdout.strip()))
                self._stop.wait(0.2)
        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._thread is not None:
            self._stop.set()
            self._thread.join()

    def text(self) -> str:
        return f"{sum(self.samples) / len(self.samples):.0f}%" if self.samples else "n/a"
