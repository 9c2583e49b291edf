"""The decode stage: one PyAV pass over a media file -> the moment grid, frames and audio windows.

A moment is every 16th decoded video frame (frame index 0, 16, 32, ...).  For each moment:
- ``frame_index`` (N,) int64: its index among the decoded frames;
- ``times`` (N,) float64: its presentation time in seconds, from the frame's pts (so variable
  frame rates are right); the container's timeline, as the audio's;
- ``frames`` (N, 112, 112, 3) uint8 RGB: resized so the short side is 112, centre-cropped;
- ``waveform`` (N, 16000) float32: 1 s of mono 16 kHz audio starting at the moment's time,
  zero-padded before the first and past the last sample (transient: handed to the spectrogram
  stage in memory, not stored by default).

Video and audio are demuxed together and decoded with threading on; only the kept frames are
converted to RGB (libswscale resizes while converting).  Memory is bounded by the output plus a
rolling audio buffer of a few seconds (at most ``MAX_AUDIO_AHEAD`` past the latest frame), however
long the video.

Not here: spectrograms (``stages/spectrogram.py``), teacher clips (``stages/teacher.py``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import L2LError
from .base import Stage, register

SAMPLE_RATE = 16000
MAX_AUDIO_AHEAD = 120.0      # seconds of audio kept past the latest video frame (bounds memory)


class DecodeError(L2LError, RuntimeError):
    """A media file that cannot be used; ``str(e)`` is one line naming the file and the reason."""

    def __init__(self, path: os.PathLike | str, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
    stride: int = 16                 # one moment every `stride` decoded frames
    size: int = 112                  # frames: short side resized to `size`, centre crop size x size
    sample_rate: int = SAMPLE_RATE   # audio resampled once to this rate, mono
    window: float = 1.0              # seconds of audio per moment
    keep_frames: bool = True         # store the frames (needed to train the student)
    threads: int = 0                 # decoder threads (0: let FFmpeg choose)
    min_decoded_fraction: float = 0.9  # fewer seconds decoded than this x declared -> truncated


def resize_crop_dims(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """(resized width, resized height, crop x0, crop y0) for short-side resize + centre crop."""
    scale = size / min(width, height)
    rw, rh = max(size, round(width * scale)), max(size, round(height * scale))
    return rw, rh, (rw - size) // 2, (rh - size) // 2


def frame_to_rgb(frame, size: int) -> np.ndarray:
    """One ``av.VideoFrame`` -> (size, size, 3) uint8 RGB, short side resized then centre crop."""
    rw, rh, x0, y0 = resize_crop_dims(frame.width, frame.height, size)
    # threads=1: libswscale's threaded reformat costs more than it saves on frames this small
    # (measured: ~0.8 vs ~1.6 ms per 160x120 frame; identical output).
    rgb = frame.to_ndarray(width=rw, height=rh, format="rgb24", threads=1)
    return np.ascontiguousarray(rgb[y0:y0 + size, x0:x0 + size])


def source_fingerprint(path: os.PathLike | str) -> str:
    """A cheap identity of a media file: size plus sha256 of its first and last 64 KiB."""
    p = Path(path)
    size = p.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(p, "rb") as f:
        h.update(f.read(65536))
        if size > 65536:
            f.seek(max(65536, size - 65536))
            h.update(f.read(65536))
    return h.hexdigest()[:16]


class _AudioWindows:
    """Cuts 1 s windows at given times out of a stream of resampled mono chunks, keeping only a
    rolling buffer.  Sample s of the stream is at time ``t0 + s / rate``.  Appending is O(1)
    (chunks are joined only to cut a window), and at most ``max_ahead`` seconds past the latest
    video frame are stored: audio that outlasts the video by hours costs neither time nor memory.
    Samples past that are counted, not kept; a window that would need them sets ``overrun``."""

    def __init__(self, rate: int, window: float, max_ahead: float = MAX_AUDIO_AHEAD):
        self.rate, self.n = rate, int(round(rate * window))
        self.t0: float | None = None
        self.buf = np.zeros(0, np.float32)
        self.buf_start = 0                      # stream sample index of buf[0]
        self.tail: list[np.ndarray] = []        # chunks stored after buf, not yet joined to it
        self.stored = 0                         # stream samples stored (buf_start + buf + tail)
        self.seen = 0                           # stream samples received (>= stored)
        self.max_ahead = max(self.n, int(round(rate * max_ahead)))
        self.overrun = False
        self.pending: list[tuple[int, float]] = []   # (moment number, time)
        self.out: dict[int, np.ndarray] = {}
        self.last_time: float | None = None     # latest video time seen

    def add_moment(self, k: int, t: float) -> None:
        self.pending.append((k, t))
        self._cut(final=False)

    def add_samples(self, samples: np.ndarray, t: float | None) -> None:
        if self.t0 is None:
            self.t0 = 0.0 if t is None else t
        if self.stored == self.seen:            # contiguous so far: store up to max_ahead
            ref = self.buf_start
            if self.last_time is not None:
                ref = max(ref, int(round((self.last_time - self.t0) * self.rate)))
            part = samples[:max(0, ref + self.max_ahead - self.stored)].astype(np.float32, copy=False)
            self.tail.append(part)
            self.stored += len(part)
        self.seen += len(samples)
        self._cut(final=False)

    def _join(self) -> None:
        if self.tail:
            self.buf = np.concatenate([self.buf, *self.tail])
            self.tail = []

    def _cut(self, final: bool) -> None:
        if self.t0 is None:
            if final:
                for k, _ in self.pending:
                    self.out[k] = np.zeros(self.n, np.float32)
                self.pending = []
            return
        end = self.seen                          # stream samples seen so far
        keep = []
        for k, t in self.pending:
            s0 = int(round((t - self.t0) * self.rate))
            if s0 + self.n <= end or final:
                self._join()
                w = np.zeros(self.n, np.float32)
                a, b = max(s0, self.buf_start), min(s0 + self.n, self.stored)
                if b > a:
                    w[a - s0:b - s0] = self.buf[a - self.buf_start:b - self.buf_start]
                if min(s0 + self.n, end) > max(s0, self.stored):
                    self.overrun = True          # needed samples were past max_ahead: not kept
                self.out[k] = w
            else:
                keep.append((k, t))
        self.pending = keep
        # Drop samples no pending window needs; later moments start no earlier than the latest.
        starts = [int(round((t - self.t0) * self.rate)) for _, t in keep]
        if self.last_time is not None:
            starts.append(int(round((self.last_time - self.t0) * self.rate)))
        if starts:
            drop = min(min(starts), self.stored) - self.buf_start
            if drop > 0:
                if drop > len(self.buf):
                    self._join()
                self.buf = self.buf[drop:]
                self.buf_start += drop

    def finish(self) -> None:
        self._cut(final=True)


def decode_video(path: os.PathLike | str, config: DecodeConfig = DecodeConfig()) -> dict[str, Any]:
    """Decode ``path`` into the moment grid.  Returns the arrays described in the module
    docstring plus ``fps``, ``duration``, ``has_audio``, ``width``, ``height``.
    Raises ``DecodeError`` for a file with no video stream, an unreadable, truncated or empty one."""
    import av

    path = Path(path)
    if not path.is_file():
        raise DecodeError(path, "file not found")
    if path.stat().st_size == 0:
        raise DecodeError(path, "empty file (0 bytes)")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as e:
        raise DecodeError(path, f"cannot open (corrupt, truncated or not media): {_one_line(e)}") from None
    with container:
        if not container.streams.video:
            raise DecodeError(path, "no video stream")
        vs = container.streams.video[0]
        vs.thread_type = "AUTO"
        if config.threads:
            vs.codec_context.thread_count = config.threads
        aus = container.streams.audio[0] if container.streams.audio else None
        streams = [vs] + ([aus] if aus is not None else [])
        resampler = (av.AudioResampler(format="flt", layout="mono", rate=config.sample_rate)
                     if aus is not None else None)
        audio = _AudioWindows(config.sample_rate, config.window)

        frames, times, index = [], [], []
        n_decoded, last_time = 0, None
        rate = vs.average_rate or vs.guessed_rate
        fps = float(rate) if rate else 0.0
        got_audio, audio_end = False, None
        try:
            for packet in container.demux(*streams):
                if packet.stream.type == "video":
                    for frame in packet.decode():
                        t = _frame_time(frame, n_decoded, fps)
                        last_time = t
                        audio.last_time = t
                        if n_decoded % config.stride == 0:
                            frames.append(frame_to_rgb(frame, config.size))
                            times.append(t)
                            index.append(n_decoded)
                            audio.add_moment(len(times) - 1, t)
                        n_decoded += 1
                elif resampler is not None:
                    for aframe in packet.decode():
                        got_audio = True
                        t = float(aframe.time) if aframe.time is not None else None
                        if t is not None and aframe.sample_rate:
                            audio_end = max(audio_end or t, t + aframe.samples / aframe.sample_rate)
                        for rf in resampler.resample(aframe):
                            audio.add_samples(rf.to_ndarray().reshape(-1), t)
                            t = None
            if resampler is not None:
                for rf in resampler.resample(None):
                    audio.add_samples(rf.to_ndarray().reshape(-1), None)
        except av.error.FFmpegError as e:
            if n_decoded == 0:
                raise DecodeError(path, f"cannot decode: {_one_line(e)}") from None
            raise DecodeError(path, f"decode error after {n_decoded} frames: {_one_line(e)}") from None
        audio.finish()
        if n_decoded == 0:
            raise DecodeError(path, "no decodable video frames")
        if audio.overrun:
            raise DecodeError(path, f"audio runs more than {MAX_AUDIO_AHEAD:g} s ahead of the video "
                                    "(late video start or bad interleaving); not windowed")
        declared = _declared_duration(container, vs)

    first = times[0] if times else 0.0
    decoded = (last_time - first) + (1.0 / fps if fps else 0.0)
    if audio_end is not None:      # audio that outlasts the video is not truncation (FFmpeg
        decoded = max(decoded, audio_end - first)      # often declares the longest stream's end)
    if declared and declared > 2.0 and decoded < config.min_decoded_fraction * declared - 1.0:
        raise DecodeError(path, f"truncated: decoded {decoded:.1f} s of {declared:.1f} s declared")
    n = len(times)
    waveform = np.stack([audio.out[k] for k in range(n)]) if n else np.zeros((0, audio.n), np.float32)
    return {
        "frames": np.stack(frames).astype(np.uint8, copy=False),
        "times": np.asarray(times, np.float64),
        "frame_index": np.asarray(index, np.int64),
        "waveform": waveform,
        "fps": fps,
        "duration": float(declared or decoded),
        "has_audio": bool(got_audio),
        "width": vs.codec_context.width,
        "height": vs.codec_context.height,
    }


def _frame_time(frame, n: int, fps: float) -> float:
    if frame.pts is not None and frame.time_base is not None:
        return float(frame.pts * Fraction(frame.time_base))
    return n / fps if fps else float(n)


def _declared_duration(container, vs) -> float | None:
    if vs.duration is not None and vs.time_base is not None:
        return float(vs.duration * vs.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None


def _one_line(e: BaseException) -> str:
    """FFmpeg's message without the errno and the repeated file name, on one line."""
    import av
    if isinstance(e, av.error.FFmpegError) and e.strerror:
        return e.strerror
    return " ".join(str(e).split()) or type(e).__name__


@register
class Decode(Stage):
    """Media file -> ``frames``, ``times``, ``frame_index`` (stored) and ``waveform`` (transient)."""

    name = "decode"
    Config = DecodeConfig
    inputs = ("source",)
    outputs = ("frames", "times", "frame_index", "waveform")
    transient = ("waveform",)
    hash_exclude = ("threads", "keep_frames")

    def __init__(self, config: DecodeConfig | None = None):
        super().__init__(config)
        if not self.config.keep_frames:
            self.transient = ("waveform", "frames")

    def run(self, inputs: dict[str, Any], *, source=None, device: str = "cpu") -> dict[str, Any]:
        return decode_video(source, self.config)
