"""Shared fixtures: tiny real media files written by the tests themselves (with a real tone)."""
from __future__ import annotations

import fractions
from pathlib import Path

import numpy as np
import pytest


def write_video(path: Path, *, frames: int = 48, size: tuple[int, int] = (64, 48), fps: int = 30,
                audio_rate: int | None = 16000, tone_hz: float = 440.0, audio_seconds: float | None = None,
                codec: str = "libx264", pix_fmt: str = "yuv420p", channels: str = "mono",
                lossless: bool = True, vfr_times: list[float] | None = None) -> Path:
    """Write a small real video: frame i is a flat colour whose red channel encodes i (i * 5 % 256),
    plus (unless ``audio_rate`` is None) a sine tone.  ``vfr_times`` gives explicit presentation
    times in seconds for a variable-frame-rate file."""
    import av

    w, h = size
    with av.open(str(path), "w") as out:
        vs = out.add_stream(codec, rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, pix_fmt
        if codec == "libx264":
            vs.options = {"qp": "0", "preset": "ultrafast"} if lossless else {"preset": "ultrafast"}
        if vfr_times is not None:
            vs.codec_context.time_base = fractions.Fraction(1, 1000)
        aus = None
        if audio_rate is not None:
            aus = out.add_stream("aac", rate=audio_rate, layout=channels)
        for i in range(frames):
            img = np.zeros((h, w, 3), np.uint8)
            img[..., 0] = (i * 5) % 256
            img[..., 1] = 100
            img[..., 2] = 200
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            if vfr_times is not None:
                frame.pts = int(round(vfr_times[i] * 1000))
                frame.time_base = fractions.Fraction(1, 1000)
            for pkt in vs.encode(frame):
                out.mux(pkt)
        for pkt in vs.encode():
            out.mux(pkt)
        if aus is not None:
            secs = audio_seconds if audio_seconds is not None else frames / fps
            n = int(secs * audio_rate)
            t = np.arange(n) / audio_rate
            sig = (0.5 * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)
            nch = {"mono": 1, "stereo": 2, "5.1": 6}[channels]
            step = 1024
            for s in range(0, n, step):
                chunk = np.tile(sig[s:s + step], (nch, 1))
                af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=channels)
                af.sample_rate = audio_rate
                af.pts = s
                af.time_base = fractions.Fraction(1, audio_rate)
                for pkt in aus.encode(af):
                    out.mux(pkt)
            for pkt in aus.encode():
                out.mux(pkt)
    return path


@pytest.fixture
def make_video(tmp_path):
    """Factory: ``make_video("name.mp4", frames=..., ...)`` -> path of a written file."""
    def _make(name: str = "v.mp4", **kw) -> Path:
        return write_video(tmp_path / name, **kw)
    return _make


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small matrices: one torch thread is faster than two fighting for 2 busy cores."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
