"""The one media reader: every PyAV decode in l2l goes through here (decode, teacher clips,
visualize).  PyAV is imported inside the functions; nothing here imports torch or another l2l
package.

``read_moments`` is one pass over a file, video and audio demuxed together (FFmpeg's frame
threading on), that returns the moment grid (``core/grid.py``; which frame each moment gets:
``core/timeline.py``: by default moment k is at time t0 + k x 16/30 s and gets the last decoded
frame at or before it; ``grid="frames"``: every ``stride``-th decoded frame).  For each moment
- ``frame_index`` (N,) int64, its frame's index among the decoded frames;
- ``times`` (N,) float64, seconds: the moment's time (time grid: the grid time, exact from the
  first frame's pts; frames grid: the frame's pts times its time base), the container's
  timeline, as the audio's;
- ``frames`` (N, size, size, 3) uint8 RGB: as displayed (``core/picture.py``: display rotation
  and pixel aspect applied unless ``display=False``), short side resized to ``size`` while
  libswscale converts (bilinear), centre crop (offsets rounded down);
- ``waveform`` (N, window * rate) float32: mono audio at ``rate`` Hz from the moment's time,
  zero-padded before the first and past the last sample (``core/audio_windows.py``);
- with ``clips``, ``clips`` (N, length, crop, crop, 3) uint8 RGB, the teacher's input: moment
  k's clip is the frames of ticks 16k, 16k + step, ... (time grid: 2/30 s apart, each the last
  frame at or before its time), each resized to exactly ``resize`` (h, w) as displayed by
  libswscale's bilinear filter (close to, not bit-equal with, torchvision's bilinear resize,
  not antialiased: ``antialias=False`` in its video preset) and centre-cropped (as torchvision's
  ``VideoClassification``: offsets rounded half
  to even), the last decoded frame repeated past the end.  Clip frames are written straight into the
  output, so nothing but the output is held: about 600 KB a moment (16 x 112 x 112 x 3).

Cost: on H.264 and HEVC with B-frames the decoder skips the non-reference frames no moment or
clip uses (``core/skipping.py``; the outputs are bit-identical to a full decode's); only kept
frames (and clip frames) are converted, each by one reused libswscale context
per geometry into a preallocated buffer; the per-frame Python work is a type check and a
counter; audio is resampled in blocks of about 1.5 s, not per packet.  Memory: the output
plus the audio buffer of ``core/audio_windows.py``.

``read_frames`` picks decoded frames by index (video only, stops early), displayed the same
way: visualize's frames.
``container_duration`` reads a file's duration from its header (data-set adapters).
Not here: the decode stage's config and cache key (``stages/decode.py``), spectrograms.
"""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .audio_windows import MAX_AUDIO_AHEAD, AudioWindows, BlockResampler
from .errors import L2LError
from .grid import AUDIO_WINDOW, FRAME_SIZE, GRID_RATE, MOMENT_STRIDE, SAMPLE_RATE
from .picture import ClipSpec, Converter, DisplayError, resize_crop_dims, sample_aspect
from .skipping import NoSkip as _NoSkip, frames as _frames, skip_plan as _skip_plan
from .timeline import Timeline

__all__ = ["ClipSpec", "DecodeError", "MAX_AUDIO_AHEAD", "container_duration", "frame_to_rgb",
           "one_line", "open_video", "pin_thread_reformatter", "read_frames", "read_moments",
           "resize_crop_dims"]
# ClipSpec and resize_crop_dims live in core/picture.py; re-exported for callers of this module


class DecodeError(L2LError, RuntimeError):
    """A media file that cannot be used; ``str(e)`` is one line naming the file and the reason."""

    def __init__(self, path: os.PathLike | str, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


def one_line(e: BaseException) -> str:
    """FFmpeg's message without the errno and the repeated file name, on one line."""
    import av
    if isinstance(e, av.error.FFmpegError) and e.strerror:
        return e.strerror
    return " ".join(str(e).split()) or type(e).__name__


def frame_to_rgb(frame, size: int = FRAME_SIZE) -> np.ndarray:
    """One ``av.VideoFrame`` -> (size, size, 3) uint8 RGB, short side resized then centre crop
    (coded pixels: no display matrix or pixel aspect).  (A one-off: loops use one
    ``core.picture.Converter`` for all their frames.)"""
    return Converter(short_side=size, display=False)(frame)


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


_PINNED: list = []        # PyAV's per-thread reformatters, never freed (``pin_thread_reformatter``)


def pin_thread_reformatter() -> None:
    """Keep the calling thread's PyAV reformatter alive for the life of the process.  PyAV 19
    gives every thread one ``VideoReformatter`` (``av.video.frame._thread_local``, made by
    ``VideoFrame.reformat`` and by an encoder fed RGB frames), whose libswscale context has
    worker threads.  When another thread forks (a dask nanny starting a worker), the child
    clears this thread's locals and frees it there, where its worker threads do not exist: the
    child waits for them for ever.  Pinned here, it is not freed.  (l2l's own decoding uses its
    own single-threaded reformatters, ``core.picture.Converter``.)"""
    import av
    local = getattr(getattr(av.video, "frame", None), "_thread_local", None)
    r = getattr(local, "reformatter", None)
    if r is not None and not any(p is r for p in _PINNED):
        _PINNED.append(r)


def _time(frame, n: int, fps: float) -> float:
    """Seconds: pts x time base, exactly rounded once (as ``float(Fraction)``)."""
    tb = frame.time_base
    if frame.pts is not None and tb is not None:
        return (frame.pts * tb.numerator) / tb.denominator
    return n / fps if fps else float(n)


def _converter(vs, display: bool, **kw) -> Converter:
    return Converter(display=display, sar=sample_aspect(vs) if display else Fraction(1), **kw)


def read_moments(path: os.PathLike | str, *, stride: int = MOMENT_STRIDE, size: int = FRAME_SIZE,
                 rate: int = SAMPLE_RATE, window: float = AUDIO_WINDOW, threads: int = 0,
                 min_decoded_fraction: float = 0.9, clips: ClipSpec | None = None,
                 grid: str = "time", grid_rate: float = GRID_RATE, display: bool = True,
                 start: float | None = None, end: float | None = None,
                 skip_unused: bool = True) -> dict[str, Any]:
    """Decode ``path`` into the moment grid (module docstring): ``frames``, ``times``,
    ``frame_index``, ``waveform`` (and ``clips`` when asked) plus ``fps``, ``duration`` (s),
    ``has_audio``, ``width``, ``height`` (coded pixels).  ``grid``: "time" (moment k at
    t0 + k * stride / grid_rate s) or "frames" (every ``stride``-th decoded frame); clip steps
    count the same ticks.  ``display``: apply the display matrix and the pixel aspect.
    ``start``/``end`` (seconds): use only that part of the file, as if cut there (the time grid
    starts at ``start``, the frames grid at the first frame at or after it; no frame after
    ``end``, no sound past it: windows are zero there; ``duration`` is the part's).
    ``skip_unused``: on H.264 and HEVC, let the decoder skip the non-reference frames no moment
    or clip uses (``_skip_plan``; every output is the same as with a full decode).
    ``threads``: decoder threads, 0 lets FFmpeg choose (never changes a number).
    ``DecodeError`` for a file with no video stream, an unreadable, truncated or empty one, or
    a display rotation that is not a multiple of 90 degrees."""
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
        per_s = grid_rate if grid == "time" else (fps or 30)
        hint = int((declared or 0) * per_s / stride) + 2
        line = Timeline(grid, stride, grid_rate, clip_len=clips.length if clips else 0,
                        clip_step=clips.step if clips else 1)
        out = _Moments(line, size, hint, clips, _converter(vs, display, short_side=size),
                       _converter(vs, display, clip=clips) if clips else None)
        audio = out.audio = AudioWindows(rate, window)
        resampler = (BlockResampler(rate, audio, av.AudioResampler(format="flt", layout="mono",
                                                                   rate=rate), av.AudioFifo)
                     if aus is not None else None)
        VideoFrame = av.VideoFrame
        trim = start is not None or end is not None
        t_start = Fraction(start).limit_denominator(1 << 30) if start is not None else None
        n, fed, last, last_n, pos, by_index, video_done = 0, 0, None, -1, 0, True, False
        plan = (_skip_plan(path, vs, Timeline(grid, stride, grid_rate, clip_len=line.clip_len,
                                              clip_step=line.clip_step))
                if skip_unused and not trim else None)
        kept = 0
        try:
            for frame in _frames(container, vs, aus, plan):
                if type(frame) is VideoFrame:
                    if video_done:
                        continue
                    if plan is not None:        # frames may be skipped: count by pts rank
                        r = plan.rank.get(frame.pts)
                        if r is None:
                            raise _NoSkip
                        n = fed = r
                        kept += frame.pts in plan.keep
                    if trim:
                        t = _time(frame, n, fps)
                        if end is not None and t > end:       # past the part used: stop video
                            video_done = True
                            if aus is None:
                                break
                            continue
                        if grid != "time" and start is not None and t < start:
                            n += 1                           # frames grid: counts from start
                            continue
                    if fed == 0:      # time grid: positions are pts (frame indices if none)
                        tb = frame.time_base
                        by_index = grid != "time" or frame.pts is None or tb is None
                        tb = (1 / Fraction(fps or 30).limit_denominator(1 << 20) if by_index
                              else Fraction(tb.numerator, tb.denominator))
                        p0 = 0 if by_index else frame.pts
                        origin = None
                        if t_start is not None and grid == "time":
                            origin = max(t_start, p0 * tb if not by_index else t_start)
                        line.start(p0, tb, origin)
                    pos = fed if by_index else (frame.pts if frame.pts is not None else pos)
                    if fed and pos > line.cut:
                        out.settle(line.feed(pos), last, last_n, _time(frame, n, fps))
                    last, last_n = frame, n
                    n += 1
                    fed += 1
                else:
                    if video_done and end is not None and frame.time is not None and frame.time > end:
                        break                                # the audio is past the part used too
                    if not resampler.push(frame):            # near the buffer's bound: exact path
                        audio.last_time = _time(last, last_n, fps) if last is not None else None
                        resampler.push_one(frame)
            if plan is not None and kept != len(plan.keep):
                raise _NoSkip                   # a needed frame did not come: decode them all
            if last is not None:
                out.settle(line.finish(pos), last, last_n, _time(last, last_n, fps))
            if resampler is not None:
                if last is not None:
                    audio.last_time = _time(last, last_n, fps)
                resampler.finish()
        except _NoSkip:
            return read_moments(path, stride=stride, size=size, rate=rate, window=window,
                                threads=threads, min_decoded_fraction=min_decoded_fraction,
                                clips=clips, grid=grid, grid_rate=grid_rate, display=display,
                                skip_unused=False)
        except av.error.FFmpegError as e:
            if n == 0:
                raise DecodeError(path, f"cannot decode: {one_line(e)}") from None
            raise DecodeError(path, f"decode error after {n} frames: {one_line(e)}") from None
        except DisplayError as e:                   # an odd display rotation
            raise DecodeError(path, str(e)) from None
        audio.finish()
        declared = _declared_duration(container, vs)
        if n == 0:
            raise DecodeError(path, "no decodable video frames")
        if last is None or (start is not None and _time(last, last_n, fps) < start):
            raise DecodeError(path, f"no video frame at or after start {start:g} s")
        if audio.overrun:
            raise DecodeError(path, f"audio runs more than {MAX_AUDIO_AHEAD:g} s ahead of the video "
                                    "(late video start or bad interleaving); not windowed")
        width, height = vs.codec_context.width, vs.codec_context.height

    times = out.times
    last_time = _time(last, last_n, fps)
    first = out.first_time
    decoded = (last_time - first) + (1.0 / fps if fps else 0.0)
    audio_end = resampler.audio_end if resampler is not None else None
    if audio_end is not None:      # audio that outlasts the video is not truncation (FFmpeg
        decoded = max(decoded, audio_end - first)      # often declares the longest stream's end)
    if (not trim and declared and declared > 2.0
            and decoded < min_decoded_fraction * declared - 1.0):
        raise DecodeError(path, f"truncated: decoded {decoded:.1f} s of {declared:.1f} s declared")
    m = len(times)
    if end is not None:                 # no sound past the end of the part used
        for k in range(m):
            cut = int(round((end - times[k]) * rate))
            audio.out[k][max(0, cut):] = 0.0
    if trim:
        declared = (end if end is not None else (declared or last_time)) - (start or 0.0)
    result = {
        "frames": out.frames.view(),
        "times": np.asarray(times, np.float64),
        "frame_index": np.asarray(out.picked, np.int64),
        "waveform": np.stack([audio.out[k] for k in range(m)]) if m else np.zeros((0, audio.n), np.float32),
        "fps": fps,
        "duration": float(declared or decoded),
        "has_audio": bool(resampler is not None and resampler.got_audio),
        "width": width,
        "height": height,
    }
    if clips is not None:
        result["clips"] = out.clips.view()
    return result


class _Moments:
    """The outputs, filled as the timeline settles ticks: a moment tick appends the moment (its
    time, frame index, converted frame, audio window); a clip tick writes its frame straight into
    every clip slot it fills.  A frame that settles several ticks is converted once."""

    def __init__(self, line: Timeline, size: int, hint: int, spec: ClipSpec | None,
                 convert: Converter, clip_convert: Converter | None):
        self.line, self.convert, self.clip_convert = line, convert, clip_convert
        self.frames = _Grow((size, size, 3), hint)
        self.clips = _Grow((spec.length, spec.crop, spec.crop, 3), hint) if spec else None
        self.times: list[float] = []
        self.picked: list[int] = []         # decoded index of each moment's frame
        self.audio: AudioWindows | None = None
        self.first_time = 0.0

    def settle(self, ticks: list, frame, i: int, now: float) -> None:
        """``ticks`` (from the timeline) all get ``frame``, decoded frame ``i``; ``now``: the
        latest decoded video time (bounds the audio buffer)."""
        if not ticks:
            return
        clip_src = None
        by_time = self.line.grid == "time"
        for u, moment, slots in ticks:
            if moment is not None:
                t = float(self.line.tick_time(u)) if by_time else _time(frame, i, 0.0)
                if moment == 0:
                    self.first_time = t
                self.audio.last_time = now
                self.convert(frame, self.frames.slot())
                self.times.append(t)
                self.picked.append(i)
                self.audio.add_moment(moment, t)
                if self.clips is not None:
                    self.clips.slot()
            for k, j in slots:
                if clip_src is None:
                    clip_src = self.clip_convert(frame, self.clips.a[k, j])
                else:
                    self.clips.a[k, j] = clip_src


def read_frames(path: os.PathLike | str, indices: Sequence[int], size: int = FRAME_SIZE,
                display: bool = True) -> np.ndarray:
    """(len(indices), size, size, 3) uint8 RGB: the decoded frames with these indices (among
    all decoded frames, as ``frame_index``), converted as the moments' ``frames`` (``display``:
    rotation and pixel aspect applied, as the decode stage's default).  One pass
    over the video stream that stops after the last wanted frame.  ``DecodeError`` if the file
    cannot be read or has fewer frames."""
    import av
    want = {int(i) for i in indices}
    if not want:
        return np.zeros((0, size, size, 3), np.uint8)
    got: dict[int, np.ndarray] = {}
    with open_video(path) as container:
        vs = container.streams.video[0]
        vs.thread_type = "AUTO"
        convert = _converter(vs, display, short_side=size)
        try:
            for n, frame in enumerate(container.decode(vs)):
                if n in want:
                    got[n] = convert(frame)
                    if len(got) == len(want):
                        break
        except av.error.FFmpegError as e:
            raise DecodeError(path, f"decode error after {len(got)} wanted frames: {one_line(e)}") from None
        except DisplayError as e:                   # an odd display rotation
            raise DecodeError(path, str(e)) from None
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
