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

The clip fields and ``threads`` are left out of the cache key: they never change a stored
number (the clips are never stored; thread counts change only the speed).

This module holds the stage (config, key, run) and names kept for callers (``DecodeError``,
``decode_video``, ``resize_crop_dims``, ``frame_to_rgb``, ``source_fingerprint``).  Not here:
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
from ..core.grid import AUDIO_WINDOW, FRAME_SIZE, MOMENT_STRIDE, SAMPLE_RATE
from ..core.media import (ClipSpec, DecodeError, frame_to_rgb, one_line, read_moments,
                          resize_crop_dims)
from .base import Stage, register

__all__ = ["Decode", "DecodeConfig", "DecodeError", "MAX_AUDIO_AHEAD", "SAMPLE_RATE",
           "decode_video", "frame_to_rgb", "resize_crop_dims", "source_fingerprint"]

_one_line = one_line          # the old private name, for callers not yet moved to core.media


def _pair(value) -> tuple[int, int]:
    """(h, w) from a tuple, a list (a config read back from JSON) or "128,171" / "128x171"."""
    if isinstance(value, str):
        value = value.lower().replace("x", ",").split(",")
    h, w = (int(v) for v in value)
    return h, w


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
    stride: int = MOMENT_STRIDE      # one moment every `stride` decoded frames
    size: int = FRAME_SIZE           # frames: short side resized to `size`, centre crop size x size
    sample_rate: int = SAMPLE_RATE   # audio resampled once to this rate, mono
    window: float = AUDIO_WINDOW     # seconds of audio per moment
    keep_frames: bool = True         # store the frames (needed to train the student)
    threads: int = 0                 # decoder threads (0: let FFmpeg choose); not in the key
    min_decoded_fraction: float = 0.9  # fewer seconds decoded than this x declared -> truncated
    clip_len: int = 0                # teacher clips: frames per clip (0: no clips); not in the key
    clip_step: int = 2               # decoded frames between clip frames
    clip_resize: tuple = (128, 171)  # (h, w) each clip frame is resized to (no aspect kept)
    clip_crop: int = 112             # then centre-cropped to clip_crop x clip_crop

    def __post_init__(self):
        object.__setattr__(self, "clip_resize", _pair(self.clip_resize))
        if self.clip_len < 0:
            raise ConfigError(f"clip_len must be >= 0, not {self.clip_len}")
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


def decode_video(path: os.PathLike | str, config: DecodeConfig = DecodeConfig()) -> dict[str, Any]:
    """Decode ``path`` into the moment grid (``core.media.read_moments``): ``frames``,
    ``times``, ``frame_index``, ``waveform`` (and ``clips`` when ``config.clip_len > 0``) plus
    ``fps``, ``duration``, ``has_audio``, ``width``, ``height``.  ``DecodeError`` for a file with
    no video stream, an unreadable, truncated or empty one."""
    return read_moments(path, stride=config.stride, size=config.size, rate=config.sample_rate,
                        window=config.window, threads=config.threads,
                        min_decoded_fraction=config.min_decoded_fraction,
                        clips=config.clip_spec())


@register
class Decode(Stage):
    """Media file -> ``frames``, ``times``, ``frame_index`` (stored), ``waveform`` and, when
    asked, ``clips`` (transient)."""

    name = "decode"
    Config = DecodeConfig
    inputs = ("source",)
    hash_exclude = ("threads", "keep_frames", "clip_len", "clip_step", "clip_resize", "clip_crop")

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
