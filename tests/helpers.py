"""Helpers shared by the tests: small real media files written by the tests themselves.

Import them as ``from helpers import write_video`` (setup.cfg puts ``tests/`` on ``sys.path``
for pytest).  Only writers live here; fixtures live in ``conftest.py``, which imports these.
Nothing here downloads anything.
"""
from __future__ import annotations

import fractions
from pathlib import Path

import av
import numpy as np


def write_video(path: Path, *, frames: int = 48, size: tuple[int, int] = (64, 48), fps: int = 30,
                audio_rate: int | None = 16000, tone_hz: float = 440.0, audio_seconds: float | None = None,
                codec: str = "libx264", pix_fmt: str = "yuv420p", channels: str = "mono",
                lossless: bool = True, vfr_times: list[float] | None = None) -> Path:
    """Write a small real video: frame i is a flat colour whose red channel encodes i (i * 5 % 256),
    plus (unless ``audio_rate`` is None) a sine tone.  ``vfr_times`` gives explicit presentation
    times in seconds for a variable-frame-rate file."""
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


# ---- the moment grid, computed independently of l2l ------------------------------------------
def mux_stereo_tone(out, stream, seconds: float, freqs=(500, 900)) -> None:
    """Encode ``seconds`` of a 44.1 kHz stereo tone (one frequency per channel) into ``stream``
    of the open container ``out``, in 1,024-sample frames, and flush it."""
    m = int(seconds * 44100)
    t = np.arange(m) / 44100
    tone = np.stack([0.4 * np.sin(2 * np.pi * freqs[0] * t), 0.3 * np.sin(2 * np.pi * freqs[1] * t)])
    for s in range(0, m, 1024):
        af = av.AudioFrame.from_ndarray(tone[:, s:s + 1024].astype(np.float32).copy(),
                                        format="fltp", layout="stereo")
        af.sample_rate, af.pts = 44100, s
        for p in stream.encode(af):
            out.mux(p)
    for p in stream.encode():
        out.mux(p)


def fps_filter_picks(path: Path, rate: int = 30, stride: int = 16) -> list[int]:
    """FFmpeg's own choice of frames on the 30 fps timeline: the decoded frames pushed through
    libavfilter's ``fps=30:round=up`` (PyAV's filter graph; output tick u shows the last frame
    at or before u/30 s), every ``stride``-th output tick, identified by decoded index (each frame
    carries its index as ``opaque``, which the filters pass through).  Ticks past the last frame
    (the filter fills the last frame's duration) are dropped: a moment is at or before it."""
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        decoded = list(c.decode(vs))
        g = av.filter.Graph()
        src = g.add_buffer(template=vs)
        f = g.add("fps", f"fps={rate}:round=up")
        sink = g.add("buffersink")
        src.link_to(f)
        f.link_to(sink)
        g.configure()
        last_t = decoded[-1].pts * decoded[-1].time_base
        first_t = decoded[0].pts * decoded[0].time_base
        picks = []
        for i, fr in enumerate(decoded + [None]):         # None: end of stream, flush
            if fr is not None:
                fr.opaque = i
            g.push(fr)
            while True:
                try:
                    out = g.pull()
                except (av.BlockingIOError, av.EOFError):
                    break
                picks.append(out.opaque)
    return [picks[u] for u in range(0, len(picks), stride)
            if fractions.Fraction(u, rate) <= last_t - first_t]


# ---- writers for what write_video cannot make ------------------------------------------------
def remux(src: Path, dst: Path, **options) -> Path:
    """Copy ``src``'s packets into ``dst`` with container ``options`` (e.g. movflags=faststart)."""
    with av.open(str(src)) as i, av.open(str(dst), "w", options=options) as o:
        streams = {s.index: o.add_stream_from_template(s) for s in i.streams}
        for p in i.demux():
            if p.dts is None:
                continue
            p.stream = streams[p.stream.index]
            o.mux(p)
    return dst


def write_raw(path: Path, *, frames: int, size=(64, 48), fps: int = 30, video_offset: int = 0,
              audio_seconds: float = 0.0, audio_rate: int = 16000, audio_first: bool = False,
              tone_hz: float = 440.0) -> Path:
    """Fast writer: yuv420p frames given directly (no colour conversion; 4K stays cheap), luma =
    frame index * 5; optional pcm audio (a tone) muxed interleaved, or all before the video
    (``audio_first``).  ``video_offset``: first video pts, in frames."""
    w, h = size
    samples = int(audio_seconds * audio_rate)
    tone = (0.5 * np.sin(2 * np.pi * tone_hz * np.arange(samples) / audio_rate) * 32767).astype(np.int16)
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.options = {"preset": "ultrafast"}
        aus = out.add_stream("pcm_s16le", rate=audio_rate, layout="mono") if samples else None
        step, done = audio_rate // 4, 0

        def audio_until(t: float) -> None:
            nonlocal done
            while aus is not None and done < samples and done / audio_rate <= t:
                af = av.AudioFrame.from_ndarray(tone[None, done:done + step], format="s16", layout="mono")
                af.sample_rate, af.pts = audio_rate, done
                af.time_base = fractions.Fraction(1, audio_rate)
                for p in aus.encode(af):
                    out.mux(p)
                done += step

        if audio_first:
            audio_until(float("inf"))
        yuv = np.full((h * 3 // 2, w), 128, np.uint8)
        for i in range(frames):
            yuv[:h] = (i * 5) % 256
            f = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
            f.pts = video_offset + i
            for p in vs.encode(f):
                out.mux(p)
            audio_until((i + 1) / fps)
        for p in vs.encode():
            out.mux(p)
        audio_until(float("inf"))
        if aus is not None:
            for p in aus.encode():
                out.mux(p)
    return path


def write_audio_only(path: Path) -> Path:
    with av.open(str(path), "w", format="mp4") as out:
        s = out.add_stream("aac", rate=16000, layout="mono")
        t = np.arange(16000) / 16000
        af = av.AudioFrame.from_ndarray((0.5 * np.sin(2 * np.pi * 440 * t))[None].astype(np.float32),
                                        format="fltp", layout="mono")
        af.sample_rate, af.pts = 16000, 0
        for pkt in s.encode(af):
            out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)
    return path


def write_vp9_opus(path: Path, frames: int = 40) -> Path:
    """What YouTube serves: VP9 + Opus in WebM."""
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libvpx-vp9", rate=30)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        vs.options = {"lossless": "1", "deadline": "realtime", "cpu-used": "8"}
        aus = out.add_stream("libopus", rate=48000, layout="mono")
        for i in range(frames):
            img = np.zeros((48, 64, 3), np.uint8)
            img[..., 0], img[..., 1], img[..., 2] = (i * 5) % 256, 100, 200
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = i
            for p in vs.encode(f):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
        n = int(frames / 30 * 48000)
        sig = (0.5 * np.sin(2 * np.pi * 700 * np.arange(n) / 48000)).astype(np.float32)
        for s in range(0, n, 960):
            af = av.AudioFrame.from_ndarray(sig[None, s:s + 960], format="flt", layout="mono")
            af.sample_rate, af.pts = 48000, s
            af.time_base = fractions.Fraction(1, 48000)
            for p in aus.encode(af):
                out.mux(p)
        for p in aus.encode():
            out.mux(p)
    return path


def random_moments(seed: int, n: int) -> dict[str, np.ndarray]:
    """``n`` moments of stage inputs: frames (n, 112, 112, 3) uint8 and logmel (n, 101, 40)
    float16 with log-mel-like values, from a seeded generator."""
    rng = np.random.default_rng(seed)
    return {"frames": rng.integers(0, 256, (n, 112, 112, 3), dtype=np.uint8),
            "logmel": rng.normal(-6, 2, (n, 101, 40)).astype(np.float16)}
