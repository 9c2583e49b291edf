"""The moment grid's timeline: which decoded frame each moment (and each teacher-clip frame)
gets, decided frame by frame as the decoder hands them over.  Pure Python, no PyAV.

A grid is a sequence of *ticks* u = 0, 1, 2, ...; moment k is tick ``stride * k``; moment k's
clip frame j is tick ``stride * k + step * j``.  Two grids:

- ``"time"`` (the default, the paper's 30 fps timeline): tick u is at time
  ``t0 + u / rate`` seconds (``t0``: the first decoded frame's presentation time, or the start
  of the part of the file used), and gets the
  last decoded frame whose presentation time is at or before that time (as FFmpeg's ``fps``
  filter with ``round=up`` picks; exact, in integer pts units, so variable frame rates are
  right).  A moment exists while its time is at or before the last frame's time: about
  ``duration * rate / stride`` moments whatever the file's frame rate.
- ``"frames"``: tick u is decoded frame u (the old every-``stride``-th decoded frame grid).

``Timeline.feed(position)`` is called once per decoded frame with its position (pts, or the
frame's index on the frames grid) and returns the ticks the *previous* frame settles (every
needed tick whose cutoff lies before this frame); ``Timeline.finish()`` returns the ticks the
last frame gets.  Each settled tick is (u, moment or None, [(moment, clip position), ...]).

Not here: decoding, converting or storing frames (``core/media.py``, ``core/picture.py``).
"""
from __future__ import annotations

from fractions import Fraction

__all__ = ["GRIDS", "Timeline"]

GRIDS = ("time", "frames")


class Timeline:
    """Ticks for ``stride`` (ticks per moment), optional clips (``clip_len`` frames ``clip_step``
    ticks apart) on grid ``grid`` at ``rate`` ticks per second.  ``start(p0, time_base)`` is
    called with the first frame's pts (``time_base``: seconds per pts unit, a Fraction; on the
    frames grid pass p0=0 and the frame index as position)."""

    def __init__(self, grid: str, stride: int, rate: float = 30.0, clip_len: int = 0,
                 clip_step: int = 1):
        if grid not in GRIDS:
            raise ValueError(f"grid must be one of {GRIDS}, not {grid!r}")
        if stride < 1 or rate <= 0:
            raise ValueError(f"stride must be >= 1 and rate > 0, not {stride}, {rate}")
        self.grid, self.stride = grid, stride
        self.rate = Fraction(rate).limit_denominator(1 << 20)
        self.clip_len, self.clip_step = clip_len, clip_step
        self.span = (clip_len - 1) * clip_step if clip_len else 0
        self.p0, self.tb, self.origin = 0, Fraction(1), Fraction(0)
        self.u = 0                      # next needed tick
        self.cut = 0                    # its cutoff position (a frame at or before it qualifies)
        self.moments = 0                # moments settled so far

    def start(self, p0: int, time_base: Fraction, origin: Fraction | None = None) -> None:
        """``origin``: tick 0's time in seconds (default: the first frame's, p0 x time_base)."""
        self.p0, self.tb = int(p0), Fraction(time_base)
        self.origin = self.p0 * self.tb if origin is None else Fraction(origin)
        self.cut = self._cutoff(0)

    def _cutoff(self, u: int) -> int:
        """The largest position that is at or before tick u."""
        if self.grid == "frames":
            return u
        return ((self.origin + Fraction(u) / self.rate) / self.tb).__floor__()

    def tick_time(self, u: int) -> Fraction:
        """Tick u's time in seconds (time grid), relative to pts 0."""
        return self.origin + Fraction(u) / self.rate

    def _next(self, u: int) -> int:
        """The smallest needed tick after u."""
        s = self.stride
        best = s * (u // s + 1)
        if self.clip_len:
            step = self.clip_step
            k0 = max(0, -(-(u + 1 - self.span) // s))
            for k in range(k0, u // s + 1):
                d = u - s * k
                j = d // step + 1
                if j < self.clip_len:
                    best = min(best, s * k + step * j)
        return best

    def _targets(self, u: int) -> tuple[int | None, list[tuple[int, int]]]:
        s = self.stride
        moment = u // s if u % s == 0 else None
        clips = []
        if self.clip_len:
            step = self.clip_step
            for k in range(max(0, -(-(u - self.span) // s)), u // s + 1):
                d = u - s * k
                if d % step == 0 and d // step < self.clip_len:
                    clips.append((k, d // step))
        return moment, clips

    def _settle(self) -> tuple[int, int | None, list[tuple[int, int]]]:
        u = self.u
        moment, clips = self._targets(u)
        if moment is not None:
            self.moments = moment + 1
        self.u = self._next(u)
        self.cut = self._cutoff(self.u)
        return u, moment, clips

    def feed(self, position: int) -> list:
        """The ticks the previous frame settles now that a frame at ``position`` arrived."""
        out = []
        while position > self.cut:
            out.append(self._settle())
        return out

    def reaches(self, u: int, last_position: int) -> bool:
        """Tick u is at or before the last frame (so its moment exists); tick 0 always is."""
        if self.grid == "frames":
            return u <= last_position
        if u == 0:
            return True
        return self.origin + Fraction(u) / self.rate <= last_position * self.tb

    def finish(self, last_position: int) -> list:
        """The ticks the last frame gets: the moments at or before it, and the clip positions of
        every existing moment past the end (the last frame repeated)."""
        out, u, s, more = [], self.u, self.stride, True
        while more or u <= s * (self.moments - 1) + self.span:
            moment, clips = self._targets(u)
            if moment is not None:
                if more and self.reaches(u, last_position):
                    self.moments = moment + 1
                else:
                    moment, more = None, False
            clips = [(k, j) for k, j in clips if k < self.moments]
            if moment is not None or clips:
                out.append((u, moment, clips))
            u = self._next(u)
        self.u = u
        return out


def needed_frames(line: Timeline, positions: list[int], time_base: Fraction) -> set[int]:
    """Which frames (indices into ``positions``, presentation order) some tick of a fresh
    ``line`` gets, plus the first and the last (the decode loop starts from the first and ends on
    the last): the frames a decode must produce; the others may be skipped.  ``positions``: pts
    on the time grid, ``0..n-1`` on the frames grid."""
    n = len(positions)
    if n == 0:
        return set()
    line.start(positions[0] if line.grid == "time" else 0, time_base)
    keep = {0, n - 1}
    for i in range(1, n):
        if positions[i] > line.cut and line.feed(positions[i]):
            keep.add(i - 1)
    if line.finish(positions[-1]):
        keep.add(n - 1)
    return keep
