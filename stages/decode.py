"""The decode stage: a media file -> the moment grid, frames, audio windows (and, when the
teacher asks, its clips), in one pass of the one media reader (``core/media.py``, which says
exactly what each array is).

Outputs:
- ``frame_index`` (N,) int64, ``times`` (N,) float64 seconds, ``frames`` (N, 112, 112, 3)
  uint8 RGB: stored (``frames`` transient with ``keep_frames=False``);
- ``waveform`` (N, 16000) float32, 1 s of mono 16 kHz audio per moment: transient (the
  spectrogram stage reads it in memory);
- ``clips`` (N, clip_len, clip_crop, clip_crop, 3) uint8 RGB, only when ``clip_len > 0`` (the
  teacher sets it through ``upstream_options``): transient.  It costs about 600 KB a moment with
  the teacher's defaults (16 x 112 x 112 x 3), held until the teacher has run on the video.

The grid (``grid``: "time", the paper's 30 fps timeline, moment k at k x ``stride`` /
``grid_rate`` s; or "frames", every ``stride``-th decoded frame) and ``display`` (apply the
display rotation and the pixel aspect, as FFmpeg's command line shows the picture) are in the
key: stores made before they existed (coded pixels, frames grid) recompute under the new key
rather than mix grids.  The clip fields, ``threads`` and ``skip_unused`` (let the decoder skip
the non-reference frames no moment or clip uses: the same outputs, bit for bit, with less
decoding) are left out of the cache key: they never change a stored number (the clips are never
stored; thread counts and skipping change only the speed).

This module holds the stage (config, key, run) and names kept for callers (``DecodeError``,
``decode_video``, ``resize_crop_dims``, ``frame_to_rgb``, ``source_fingerprint``) and what a
record's decode reads (``media_source``: the file or the ``Part`` its trim names; ``source_key``).  Not here:
the PyAV loop (``core/media.py``), spectrograms (``stages/spectrogram.py``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any

from ..core.audio_windows import MAX_AUDIO_AHEAD
from ..core.errors import ConfigError
from ..core.grid import AUDIO_WINDOW, FRAME_SIZE, GRID_RATE, MOMENT_STRIDE, SAMPLE_RATE
from ..core.media import (ClipSpec, DecodeError, frame_to_rgb, one_line, read_moments,
                          resize_crop_dims)
from ..core.timeline import GRIDS
from .base import Stage, register

__all__ = ["Decode", "DecodeConfig", "DecodeError", "MAX_AUDIO_AHEAD", "Part", "SAMPLE_RATE",
           "decode_video", "frame_to_rgb", "media_source", "resize_crop_dims", "source_fingerprint",
           "source_key"]

_one_line = one_line          # the old private name, for callers not yet moved to core.media


def _pair(value) -> tuple[int, int]:
    """(h, w) from a tuple, a list (a config read back from JSON) or "128,171" / "128x171"."""
    if isinstance(value, str):
        value = value.lower().replace("x", ",").split(",")
    h, w = (int(v) for v in value)
    return h, w


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
    stride: int = MOMENT_STRIDE      # one moment every `stride` grid ticks
    grid: str = "time"               # "time": ticks at grid_rate per second; "frames": decoded frames
    grid_rate: float = GRID_RATE     # ticks per second of the time grid (the paper's 30 fps)
    display: bool = True             # apply the display matrix (rotation/flips) and pixel aspect
    size: int = FRAME_SIZE           # frames: short side resized to `size`, centre crop size x size
    sample_rate: int = SAMPLE_RATE   # audio resampled once to this rate, mono
    window: float = AUDIO_WINDOW     # seconds of audio per moment
    keep_frames: bool = True         # store the frames (needed to train the student)
    threads: int = 0                 # decoder threads (0: let FFmpeg choose); not in the key
    skip_unused: bool = True         # H.264/HEVC: skip non-reference frames no tick uses; not in the key
    min_decoded_fraction: float = 0.9  # fewer seconds decoded than this x declared -> truncated
    clip_len: int = 0                # teacher clips: frames per clip (0: no clips); not in the key
    clip_step: int = 2               # grid ticks between clip frames (2/30 s on the time grid)
    clip_resize: tuple = (128, 171)  # (h, w) each clip frame is resized to (no aspect kept)
    clip_crop: int = 112             # then centre-cropped to clip_crop x clip_crop

    def __post_init__(self):
        object.__setattr__(self, "clip_resize", _pair(self.clip_resize))
        if self.clip_len < 0:
            raise ConfigError(f"clip_len must be >= 0, not {self.clip_len}")
        if self.grid not in GRIDS:
            raise ConfigError(f"grid must be one of {', '.join(GRIDS)}, not {self.grid!r}")
        if self.stride < 1 or not self.grid_rate > 0:
            raise ConfigError(f"stride must be >= 1 and grid_rate > 0, not {self.stride}, "
                             f"{self.grid_rate}")
        self.clip_spec()                                     # checks the geometry

    def clip_spec(self) -> ClipSpec | None:
        if not self.clip_len:
            return None
        return ClipSpec(length=self.clip_len, step=self.clip_step, resize=self.clip_resize,
                        crop=self.clip_crop)


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


@dataclasses.dataclass(frozen=True)
class Part:
    """The part of a media file a record uses: ``path`` from ``start`` to ``end`` seconds (None:
    its beginning / its end), e.g. a CSV row's trim (``datasets/csv_list.py``)."""
    path: Path
    start: float | None = None
    end: float | None = None

    def __fspath__(self) -> str:
        return str(self.path)


def media_source(video) -> Path | Part:
    """What the decode stage reads for a ``VideoRecord``: its path, or the ``Part`` of it that
    its ``start``/``end`` name."""
    if getattr(video, "start", None) is None and getattr(video, "end", None) is None:
        return video.path
    return Part(Path(video.path), video.start, video.end)


def source_key(video) -> str:
    """The cache identity of what a record's decode reads: the file's ``source_fingerprint``,
    plus the trim when it has one (another part of the same file is another source)."""
    fp = source_fingerprint(video.path)
    start, end = getattr(video, "start", None), getattr(video, "end", None)
    if start is None and end is None:
        return fp
    return f"{fp}@{start!r}-{end!r}"


def decode_video(path: os.PathLike | str | Part, config: DecodeConfig = DecodeConfig()) -> dict[str, Any]:
    """Decode ``path`` (or a ``Part`` of a file) into the moment grid
    (``core.media.read_moments``): ``frames``, ``times``, ``frame_index``, ``waveform`` (and
    ``clips`` when ``config.clip_len > 0``) plus ``fps``, ``duration``, ``has_audio``,
    ``width``, ``height``.  ``DecodeError`` for a file with no video stream, an unreadable,
    truncated or empty one."""
    start = end = None
    if isinstance(path, Part):
        path, start, end = path.path, path.start, path.end
    return read_moments(path, stride=config.stride, size=config.size, rate=config.sample_rate,
                        window=config.window, threads=config.threads,
                        min_decoded_fraction=config.min_decoded_fraction,
                        clips=config.clip_spec(), grid=config.grid, grid_rate=config.grid_rate,
                        display=config.display, start=start, end=end,
                        skip_unused=config.skip_unused)


@register
class Decode(Stage):
    """Media file -> ``frames``, ``times``, ``frame_index`` (stored), ``waveform`` and, when
    asked, ``clips`` (transient)."""

    name = "decode"
    Config = DecodeConfig
    inputs = ("source",)
    hash_exclude = ("threads", "skip_unused", "keep_frames", "clip_len", "clip_step", "clip_resize",
                    "clip_crop")

    @property
    def outputs(self) -> tuple[str, ...]:
        base = ("frames", "times", "frame_index", "waveform")
        return base + (("clips",) if self.config.clip_len else ())

    @property
    def transient(self) -> tuple[str, ...]:
        t = ("waveform",) + (() if self.config.keep_frames else ("frames",))
        return t + (("clips",) if self.config.clip_len else ())

    def run(self, inputs: dict[str, Any], *, source=None, device: str = "cpu") -> dict[str, Any]:
        return decode_video(source, self.config)
