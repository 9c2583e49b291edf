"""Audio for the moment grid: decoded audio frames -> mono float32 at one rate, cut into one
window per moment (``core/media.py`` drives it and hands it PyAV's resampler and fifo).

- ``BlockResampler`` feeds one ``av.AudioResampler`` (libswresample, through FFmpeg's filter
  graph) with blocks of about 1.5 s of decoded audio gathered in an ``av.AudioFifo``, instead of
  one call per packet.  libswresample's output depends only on the input samples (timestamp
  compensation is off by default), so blocks give the same samples as frame-by-frame calls.
- ``AudioWindows`` cuts ``window`` s windows at the moments' times out of that stream, keeping
  only a rolling buffer: at most ``MAX_AUDIO_AHEAD`` s past the latest video frame are stored.

The bound is applied exactly as when audio was resampled frame by frame: a block is only formed
while the whole of it would have been stored anyway (the audio is far below the bound); near the
bound each frame is resampled alone and cut against the latest video time, as before.

Not here: opening files or video (``core/media.py``), spectrograms (``stages/spectrogram.py``).
"""
from __future__ import annotations

import numpy as np

MAX_AUDIO_AHEAD = 120.0      # seconds of audio kept past the latest video frame (bounds memory)
AUDIO_BLOCK = 1 << 16        # input samples resampled at once (1.5 s at 44.1 kHz)


class AudioWindows:
    """Cuts windows of ``n = rate * window`` samples at given times out of a stream of resampled
    mono chunks, keeping only a rolling buffer.  Sample s of the stream is at time
    ``t0 + s / rate`` (``t0``: the time of the first audio frame that gave samples).  Appending is
    O(1) (chunks are joined only to cut a window), and at most ``max_ahead`` s past the latest
    video frame (``last_time``) are stored: audio that outlasts the video by hours costs neither
    time nor memory.  Samples past that are counted, not kept; a window that would need them sets
    ``overrun``.  ``out[k]``: moment k's (n,) float32 window."""

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

    def add_samples(self, samples: np.ndarray, t: float | None, store_all: bool = False) -> None:
        """Append a chunk; ``t``: its time (only the first chunk's counts).  ``store_all``: the
        caller knows the whole chunk is within the bound (``BlockResampler``)."""
        if self.t0 is None:
            self.t0 = 0.0 if t is None else t
        if self.stored == self.seen:            # contiguous so far: store up to max_ahead
            if not store_all:
                ref = self.buf_start
                if self.last_time is not None:
                    ref = max(ref, int(round((self.last_time - self.t0) * self.rate)))
                samples_kept = samples[:max(0, ref + self.max_ahead - self.stored)]
            else:
                samples_kept = samples
            part = samples_kept.astype(np.float32, copy=False)
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


class BlockResampler:
    """Decoded audio frames -> ``windows`` as mono float32 at ``rate`` Hz.  ``resampler``: an
    ``av.AudioResampler`` to mono float32 at ``rate``; ``fifo``: the ``av.AudioFifo`` class
    (``core/media.py`` passes both, so that PyAV is opened in one module).

    ``push(frame)`` takes a frame into the current block and returns True, or returns False
    when the frame must go through ``push_one`` instead (before the first samples came out, so
    that ``t0`` is that frame's time; near the buffer's bound; on a change of format).  The
    caller sets ``windows.last_time`` before ``push_one``.  ``got_audio`` and ``audio_end``
    (seconds, the end of the latest audio frame) are kept for every frame."""

    def __init__(self, rate: int, windows: AudioWindows, resampler, fifo):
        self.res, self.new_fifo = resampler, fifo
        self.win, self.rate = windows, rate
        self.fifo = None
        self.key = None                 # (format, rate, channels) of the first frame
        self.block = 0                  # input samples in the fifo
        self.in_rate = 0
        self.got_audio = False
        self.audio_end: float | None = None
        self.slack = rate // 4          # output samples the resampler may still hold

    def _note(self, frame) -> float | None:
        self.got_audio = True
        t = frame.time
        if t is not None and frame.sample_rate:
            self.audio_end = max(self.audio_end or t, t + frame.samples / frame.sample_rate)
        return t

    def push(self, frame) -> bool:
        w = self.win
        if w.t0 is None:
            return False
        key = (frame.format.name, frame.sample_rate, frame.layout.nb_channels)
        if key != self.key:
            self.flush()
            return False
        if w.stored == w.seen:          # not truncated: would the old rule store all of it?
            out = (self.block + frame.samples) * self.rate // self.in_rate + 1
            if w.stored + out + self.slack > w.buf_start + w.max_ahead:
                self.flush()
                return False
        self._note(frame)
        if self.fifo is None:
            self.fifo = self.new_fifo()
        frame.pts = None                # the fifo checks pts continuity; only samples matter
        self.fifo.write(frame)
        self.block += frame.samples
        if self.block >= AUDIO_BLOCK:
            self.flush()
        return True

    def push_one(self, frame) -> None:
        """Resample one frame on its own (the rule for every frame before blocks existed)."""
        t = self._note(frame)
        if self.key is None:
            self.key = (frame.format.name, frame.sample_rate, frame.layout.nb_channels)
            self.in_rate = frame.sample_rate or self.rate
        for rf in self.res.resample(frame):
            self.win.add_samples(rf.to_ndarray().reshape(-1), t)
            t = None

    def flush(self) -> None:
        """Resample the block; all of it is stored (``push`` checked each frame)."""
        if self.block:
            big = self.fifo.read()
            self.block = 0
            for rf in self.res.resample(big):
                self.win.add_samples(rf.to_ndarray().reshape(-1), None, store_all=True)

    def finish(self) -> None:
        """Flush the block, then the resampler's own delay (``windows.last_time`` set)."""
        self.flush()
        for rf in self.res.resample(None):
            self.win.add_samples(rf.to_ndarray().reshape(-1), None)
