"""The one media reader: every PyAV decode in l2l goes through here (decode, teacher clips,
visualize).  PyAV is imported inside the functions; nothing here imports torch or another l2l
package.

``read_moments`` is one pass over a file, video and audio demuxed together (FFmpeg's frame
threading on), that returns the moment grid (``core/grid.py``): every ``stride``-th decoded
frame is a moment; for each moment
- ``frame_index`` (N,) int64, its index among the decoded frames;
- ``times`` (N,) float64, seconds: the frame's pts times its time base, exact (variable frame
  rates are right; the container's timeline, as the audio's);
- ``frames`` (N, size, size, 3) uint8 RGB: short side resized to ``size`` while libswscale
  converts (bilinear), centre crop (offsets rounded down);
- ``waveform`` (N, window * rate) float32: mono audio at ``rate`` Hz from the moment's time,
  zero-padded before the first and past the last sample (``core/audio_windows.py``);
- with ``clips``, ``clips`` (N, length, crop, crop, 3) uint8 RGB, the teacher's input: moment
  i's clip is decoded frames f_i, f_i + step, ..., each resized to exactly ``resize`` (h, w)
  by libswscale's bilinear filter (close to, not bit-equal with, torchvision's antialiased
  resize) and centre-cropped (as torchvision's ``VideoClassification``: offsets rounded half
  to even), the last decoded frame repeated past the end.  Clip frames are written straight into the
  output, so nothing but the output is held: about 600 KB a moment (16 x 112 x 112 x 3).

Cost: only kept frames (and clip frames) are converted, each by one reused libswscale context
per geometry into a preallocated buffer; the per-frame Python work is a type check and a
counter; audio is resampled in blocks of about 1.5 s, not per packet.  Memory: the output
plus the audio buffer of ``core/audio_windows.py``.

``read_frames`` picks decoded frames by index (video only, stops early): visualize's frames.
``container_duration`` reads a file's duration from its header (data-set adapters).
Not here: the decode stage's config and cache key (``stages/decode.py``), spectrograms.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .audio_windows import MAX_AUDIO_AHEAD, AudioWindows, BlockResampler
from .errors import ConfigError, L2LError
from .grid import AUDIO_WINDOW, CLIP_LEN, FRAME_SIZE, MOMENT_STRIDE, SAMPLE_RATE

__all__ = ["ClipSpec", "DecodeError", "MAX_AUDIO_AHEAD", "container_duration", "frame_to_rgb",
           "one_line", "open_video", "read_frames", "read_moments", "resize_crop_dims"]


class DecodeError(L2LError, RuntimeError):
    """A media file that cannot be used; ``str(e)`` is one line naming the file and the reason."""

    def __init__(self, path: os.PathLike | str, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """The teacher's clips: ``length`` frames ``step`` apart, resized to ``resize`` (h, w)
    pixels, centre-cropped to ``crop`` x ``crop``."""
    length: int = CLIP_LEN
    step: int = 2
    resize: tuple = (128, 171)
    crop: int = 112

    def __post_init__(self):
        h, w = (int(v) for v in self.resize)
        object.__setattr__(self, "resize", (h, w))
        if self.length < 1 or self.step < 1 or not 0 < self.crop <= min(h, w):
            raise ConfigError(f"bad clip geometry: {self}")

    def origin(self) -> tuple[int, int]:
        """(y0, x0) of the centre crop, rounded as torchvision's ``center_crop``."""
        h, w = self.resize
        return int(round((h - self.crop) / 2.0)), int(round((w - self.crop) / 2.0))


def one_line(e: BaseException) -> str:
    """FFmpeg's message without the errno and the repeated file name, on one line."""
    import av
    if isinstance(e, av.error.FFmpegError) and e.strerror:
        return e.strerror
    return " ".join(str(e).split()) or type(e).__name__


def resize_crop_dims(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """(resized width, resized height, crop x0, crop y0) for short-side resize + centre crop."""
    scale = size / min(width, height)
    rw, rh = max(size, round(width * scale)), max(size, round(height * scale))
    return rw, rh, (rw - size) // 2, (rh - size) // 2


class _Converter:
    """One geometry (resize to w x h, crop (y0, x0) size (ch, cw)) with its own libswscale
    context, reused frame after frame.  ``threads=1``: threaded reformat costs more than it
    saves on frames this small.  A new source geometry recomputes the crop."""

    def __init__(self, short_side: int | None = None, clip: ClipSpec | None = None):
        from av.video.reformatter import VideoReformatter
        self.short_side, self.clip, self.src = short_side, clip, None
        self.reformatter = VideoReformatter()

    def _geometry(self, width: int, height: int) -> None:
        if self.clip is not None:
            (h, w), (y0, x0), c = self.clip.resize, self.clip.origin(), self.clip.crop
            self.dims = (w, h, slice(y0, y0 + c), slice(x0, x0 + c))
        else:
            rw, rh, x0, y0 = resize_crop_dims(width, height, self.short_side)
            s = self.short_side
            self.dims = (rw, rh, slice(y0, y0 + s), slice(x0, x0 + s))
        self.src = (width, height)

    def __call__(self, frame, out: np.ndarray | None = None) -> np.ndarray:
        if self.src != (frame.width, frame.height):
            self._geometry(frame.width, frame.height)
        rw, rh, ys, xs = self.dims
        rgb = self.reformatter.reformat(frame, width=rw, height=rh, format="rgb24",
                                        threads=1).to_ndarray()
        if out is None:
            return np.ascontiguousarray(rgb[ys, xs])
        out[...] = rgb[ys, xs]
        return out


def frame_to_rgb(frame, size: int = FRAME_SIZE) -> np.ndarray:
    """One ``av.VideoFrame`` -> (size, size, 3) uint8 RGB, short side resized then centre crop.
    (A one-off: loops use one ``_Converter`` for all their frames.)"""
    return _Converter(short_side=size)(frame)


class _Grow:
    """A uint8 array filled along axis 0 that grows by doubling; ``view()`` is what was filled."""

    def __init__(self, shape: tuple, hint: int):
        cap = max(1, (64 << 20) // int(np.prod(shape)))          # at most 64 MiB up front
        self.a = np.empty((max(1, min(hint, cap)),) + shape, np.uint8)
        self.n = 0

    def slot(self) -> np.ndarray:
        if self.n == len(self.a):
            a = np.empty((2 * len(self.a),) + self.a.shape[1:], np.uint8)
            a[:self.n] = self.a
            self.a = a
        self.n += 1
        return self.a[self.n - 1]

    def view(self) -> np.ndarray:
        return self.a[:self.n] if self.n * 8 >= len(self.a) * 7 else self.a[:self.n].copy()


def open_video(path: os.PathLike | str):
    """Open a media file for reading: the PyAV container.  ``DecodeError`` for a missing,
    empty or unreadable file or one with no video stream."""
    import av
    path = Path(path)
    if not path.is_file():
        raise DecodeError(path, "file not found")
    if path.stat().st_size == 0:
        raise DecodeError(path, "empty file (0 bytes)")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as e:
        raise DecodeError(path, f"cannot open (corrupt, truncated or not media): {one_line(e)}") from None
    if not container.streams.video:
        container.close()
        raise DecodeError(path, "no video stream")
    return container


def _time(frame, n: int, fps: float) -> float:
    """Seconds: pts x time base, exactly rounded once (as ``float(Fraction)``)."""
    tb = frame.time_base
    if frame.pts is not None and tb is not None:
        return (frame.pts * tb.numerator) / tb.denominator
    return n / fps if fps else float(n)


def read_moments(path: os.PathLike | str, *, stride: int = MOMENT_STRIDE, size: int = FRAME_SIZE,
                 rate: int = SAMPLE_RATE, window: float = AUDIO_WINDOW, threads: int = 0,
                 min_decoded_fraction: float = 0.9, clips: ClipSpec | None = None) -> dict[str, Any]:
    """Decode ``path`` into the moment grid (module docstring): ``frames``, ``times``,
    ``frame_index``, ``waveform`` (and ``clips`` when asked) plus ``fps``, ``duration`` (s),
    ``has_audio``, ``width``, ``height`` (source pixels).  ``threads``: decoder threads, 0 lets
    FFmpeg choose (never changes a number).  ``DecodeError`` for a file with no video stream,
    an unreadable, truncated or empty one."""
    import av

    path = Path(path)
    container = open_video(path)
    with container:
        vs = container.streams.video[0]
        vs.thread_type = "AUTO"
        if threads:
            vs.codec_context.thread_count = threads
        aus = container.streams.audio[0] if container.streams.audio else None
        rate_q = vs.average_rate or vs.guessed_rate
        fps = float(rate_q) if rate_q else 0.0
        declared = _declared_duration(container, vs)
        hint = int((declared or 0) * (fps or 30) / stride) + 2
        frames = _Grow((size, size, 3), hint)
        times: list[float] = []
        index: list[int] = []
        audio = AudioWindows(rate, window)
        resampler = (BlockResampler(rate, audio, av.AudioResampler(format="flt", layout="mono",
                                                                   rate=rate), av.AudioFifo)
                     if aus is not None else None)
        convert = _Converter(short_side=size)
        clipper = _Clips(clips, stride, hint) if clips is not None else None
        VideoFrame = av.VideoFrame
        n, last = 0, None
        try:
            for frame in container.decode(*([vs] if aus is None else [vs, aus])):
                if type(frame) is VideoFrame:
                    if n % stride == 0:
                        t = _time(frame, n, fps)
                        audio.last_time = t
                        convert(frame, frames.slot())
                        times.append(t)
                        index.append(n)
                        audio.add_moment(len(times) - 1, t)
                    if clipper is not None:
                        clipper.add(frame, n)
                    last = frame
                    n += 1
                elif not resampler.push(frame):          # near the buffer's bound: exact path
                    audio.last_time = _time(last, n - 1, fps) if last is not None else None
                    resampler.push_one(frame)
            if resampler is not None:
                if last is not None:
                    audio.last_time = _time(last, n - 1, fps)
                resampler.finish()
        except av.error.FFmpegError as e:
            if n == 0:
                raise DecodeError(path, f"cannot decode: {one_line(e)}") from None
            raise DecodeError(path, f"decode error after {n} frames: {one_line(e)}") from None
        audio.finish()
        declared = _declared_duration(container, vs)
        if n == 0:
            raise DecodeError(path, "no decodable video frames")
        if audio.overrun:
            raise DecodeError(path, f"audio runs more than {MAX_AUDIO_AHEAD:g} s ahead of the video "
                                    "(late video start or bad interleaving); not windowed")
        width, height = vs.codec_context.width, vs.codec_context.height

    last_time = _time(last, n - 1, fps)
    first = times[0] if times else 0.0
    decoded = (last_time - first) + (1.0 / fps if fps else 0.0)
    audio_end = resampler.audio_end if resampler is not None else None
    if audio_end is not None:      # audio that outlasts the video is not truncation (FFmpeg
        decoded = max(decoded, audio_end - first)      # often declares the longest stream's end)
    if declared and declared > 2.0 and decoded < min_decoded_fraction * declared - 1.0:
        raise DecodeError(path, f"truncated: decoded {decoded:.1f} s of {declared:.1f} s declared")
    m = len(times)
    out = {
        "frames": frames.view(),
        "times": np.asarray(times, np.float64),
        "frame_index": np.asarray(index, np.int64),
        "waveform": np.stack([audio.out[k] for k in range(m)]) if m else np.zeros((0, audio.n), np.float32),
        "fps": fps,
        "duration": float(declared or decoded),
        "has_audio": bool(resampler is not None and resampler.got_audio),
        "width": width,
        "height": height,
    }
    if clipper is not None:
        out["clips"] = clipper.finish(last, n - 1)
    return out


class _Clips:
    """Writes each clip frame straight into the output as it is decoded: frame i goes to moment
    m's clip at position (i - m) / step for every moment m <= i within reach; at the end, the
    positions past the last decoded frame get the last frame."""

    def __init__(self, spec: ClipSpec, stride: int, hint: int):
        self.spec, self.stride = spec, stride
        self.span = (spec.length - 1) * spec.step
        self.out = _Grow((spec.length, spec.crop, spec.crop, 3), hint)
        self.convert = _Converter(clip=spec)

    def add(self, frame, i: int) -> None:
        stride, step = self.stride, self.spec.step
        if i % stride == 0:
            self.out.slot()
        first = max(0, -(-(i - self.span) // stride)) * stride
        targets = [(m // stride, (i - m) // step) for m in range(first, i + 1, stride)
                   if (i - m) % step == 0]
        if targets:
            (k0, p0), rest = targets[0], targets[1:]
            src = self.convert(frame, self.out.a[k0, p0])
            for k, p in rest:
                self.out.a[k, p] = src

    def finish(self, last_frame, last_i: int) -> np.ndarray:
        tail = None
        step, stride = self.spec.step, self.stride
        for k in range(self.out.n):
            m = k * stride
            for p in range(self.spec.length):
                if m + p * step > last_i:
                    if tail is None:
                        tail = self.convert(last_frame)
                    self.out.a[k, p] = tail
        return self.out.view()


def read_frames(path: os.PathLike | str, indices: Sequence[int], size: int = FRAME_SIZE) -> np.ndarray:
    """(len(indices), size, size, 3) uint8 RGB: the decoded frames with these indices (among
    all decoded frames, as ``frame_index``), converted as the moments' ``frames``.  One pass
    over the video stream that stops after the last wanted frame.  ``DecodeError`` if the file
    cannot be read or has fewer frames."""
    import av
    want = {int(i) for i in indices}
    if not want:
        return np.zeros((0, size, size, 3), np.uint8)
    got: dict[int, np.ndarray] = {}
    convert = _Converter(short_side=size)
    with open_video(path) as container:
        vs = container.streams.video[0]
        vs.thread_type = "AUTO"
        try:
            for n, frame in enumerate(container.decode(vs)):
                if n in want:
                    got[n] = convert(frame)
                    if len(got) == len(want):
                        break
        except av.error.FFmpegError as e:
            raise DecodeError(path, f"decode error after {len(got)} wanted frames: {one_line(e)}") from None
    missing = want - set(got)
    if missing:
        raise DecodeError(path, f"has no decoded frame(s) {sorted(missing)[:3]}")
    return np.stack([got[int(i)] for i in indices])


def container_duration(path: os.PathLike | str) -> float | None:
    """Seconds, from the container header (no decoding); None if the file cannot be read."""
    import av
    try:
        with av.open(str(path)) as c:
            if c.duration is not None:
                return c.duration / av.time_base
            ds = [float(s.duration * s.time_base) for s in c.streams if s.duration and s.time_base]
            return max(ds) if ds else None
    except (av.FFmpegError, OSError):
        return None


def _declared_duration(container, vs) -> float | None:
    if vs.duration is not None and vs.time_base is not None:
        return float(vs.duration * vs.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None
