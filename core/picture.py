"""Pictures as FFmpeg's command line shows them: a decoded ``av.VideoFrame`` -> small uint8 RGB
arrays, with the stream's display orientation and pixel aspect applied.  Used by the one media
reader (``core/media.py``); PyAV is imported inside the functions.

Display orientation: a file may carry a display matrix (side data, e.g. a phone's portrait clip
coded 1920x1080 with a 90 degree rotation).  FFmpeg's command line (``autorotate``, on by default)
turns it into at most two filters: ``transpose`` (clock, cclock, clock_flip, cclock_flip) for
90/270 degrees, ``hflip``/``vflip`` for 180 degrees or a bare flip.  ``display_ops`` makes exactly
that choice from the matrix (same rounding of the angle, same sign tests), and
``apply_ops`` applies those filters as pixel permutations of an (H, W, 3) array.  A matrix that
rotates by an angle that is not a multiple of 90 degrees (FFmpeg's ``rotate`` filter, with black
corners) is refused with a ``DisplayError``.

Pixel aspect: a non-square sample aspect ratio ``sar`` (width of a pixel / its height) makes
the picture ``width * sar`` x ``height`` on screen; the short-side resize and the centre crop
are computed on that display geometry (after the rotation), as ``scale=iw*sar:ih`` would.

Order: the geometry (which pixels end up where) is that of rotate, then resize, then crop.
The pixels are made by resizing the coded frame to the rotated target's transposed size in
libswscale (bilinear, while converting to RGB) and permuting the small result: the same picture
as rotating first, up to the scaler's last-bit rounding (its horizontal and vertical filters and
the chroma siting differ in the last bits).  With no display matrix and square pixels the
output is bit-identical to the plain resize + crop.

Not here: which frames are picked (``core/timeline.py``), opening files (``core/media.py``).
"""
from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import numpy as np

from .errors import ConfigError
from .grid import CLIP_LEN

__all__ = ["ClipSpec", "Converter", "DisplayError", "apply_ops", "display_matrix", "display_ops",
           "resize_crop_dims", "sample_aspect"]

_TRANSPOSES = ("clock", "cclock", "clock_flip", "cclock_flip")


class DisplayError(ValueError):
    """A display matrix l2l does not apply (an angle that is not a multiple of 90 degrees);
    ``core/media.py`` turns it into a one-line ``DecodeError`` naming the file."""


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """The teacher's clips: ``length`` frames ``step`` grid ticks apart, resized to ``resize``
    (h, w) pixels, centre-cropped to ``crop`` x ``crop``."""
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


def resize_crop_dims(width: float, height: float, size: int) -> tuple[int, int, int, int]:
    """(resized width, resized height, crop x0, crop y0) for short-side resize + centre crop.
    ``width`` may be fractional (a display width, ``coded width * sar``)."""
    scale = size / min(width, height)
    rw, rh = max(size, round(width * scale)), max(size, round(height * scale))
    return rw, rh, (rw - size) // 2, (rh - size) // 2


def display_matrix(frame) -> np.ndarray | None:
    """The frame's display matrix, (9,) int32 (16.16 fixed point, FFmpeg's layout), or None."""
    # by name: iterating the container yields SideData up to PyAV 18 and its Type keys from 19
    sd = frame.side_data.get("DISPLAYMATRIX")
    if sd is None:
        return None
    m = np.frombuffer(bytes(sd), np.int32)
    return m if len(m) == 9 else None


def _rotation_get(m: np.ndarray) -> float:
    """libavutil's ``av_display_rotation_get``: degrees counter-clockwise (NaN if degenerate)."""
    a, b, c, d = (float(m[i]) / 65536.0 for i in (0, 1, 3, 4))
    s0, s1 = math.hypot(a, c), math.hypot(b, d)
    if s0 == 0.0 or s1 == 0.0:
        return math.nan
    return -math.degrees(math.atan2(b / s1, a / s0))


def display_ops(matrix: np.ndarray | None) -> tuple[str, ...]:
    """The filters FFmpeg's command line inserts for this display matrix (fftools' autorotate):
    () for none, or ``("transpose:<dir>",)``, ``("hflip",)``, ``("vflip",)``, ``("hflip",
    "vflip")``.  ``DisplayError`` for a rotation that is not a multiple of 90 degrees."""
    if matrix is None:
        return ()
    m = matrix
    theta = -round(_rotation_get(m)) if not math.isnan(_rotation_get(m)) else math.nan
    if not math.isnan(theta):
        theta -= 360 * math.floor(theta / 360 + 0.9 / 360)
    if abs(theta - 90) < 1.0:
        return ("transpose:" + ("cclock_flip" if m[3] > 0 else "clock"),)
    if abs(theta - 180) < 1.0:
        return tuple(op for op, on in (("hflip", m[0] < 0), ("vflip", m[4] < 0)) if on)
    if abs(theta - 270) < 1.0:
        return ("transpose:" + ("clock_flip" if m[3] < 0 else "cclock"),)
    if abs(theta) > 1.0:
        raise DisplayError(f"display matrix rotates by {theta:g} degrees (only multiples of 90 "
                         "are applied; --set decode.display=false keeps the coded picture)")
    if abs(theta) < 1.0 and m[4] < 0:
        return ("vflip",)
    return ()


def transposes(ops: tuple[str, ...]) -> bool:
    """True if ``ops`` swap width and height."""
    return any(op.startswith("transpose:") for op in ops)


def apply_ops(rgb: np.ndarray, ops: tuple[str, ...]) -> np.ndarray:
    """(H, W, C) -> the picture after FFmpeg's ``transpose``/``hflip``/``vflip`` filters (a view;
    (W, H, C) after a transpose).  transpose dir: cclock_flip (0) maps (x, y) -> (y, x); clock
    (1) rotates 90 degrees clockwise; cclock (2) counter-clockwise; clock_flip (3) is clock then
    a vertical flip."""
    for op in ops:
        if op == "hflip":
            rgb = rgb[:, ::-1]
        elif op == "vflip":
            rgb = rgb[::-1]
        elif op == "transpose:cclock_flip":
            rgb = rgb.transpose(1, 0, 2)
        elif op == "transpose:clock":
            rgb = rgb.transpose(1, 0, 2)[:, ::-1]
        elif op == "transpose:cclock":
            rgb = rgb.transpose(1, 0, 2)[::-1]
        elif op == "transpose:clock_flip":
            rgb = rgb.transpose(1, 0, 2)[::-1, ::-1]
        else:
            raise ValueError(f"unknown display op {op!r}")
    return rgb


def sample_aspect(stream) -> Fraction:
    """The stream's sample aspect ratio as FFmpeg guesses it (the container's if set, else the
    codec's); 1 when unknown or invalid."""
    for sar in (getattr(stream, "sample_aspect_ratio", None),
                getattr(stream.codec_context, "sample_aspect_ratio", None)):
        if sar is not None and sar.numerator > 0 and sar.denominator > 0:
            return Fraction(sar.numerator, sar.denominator)
    return Fraction(1)


class Converter:
    """One output geometry with its own libswscale context, reused frame after frame: either a
    short-side resize to ``short_side`` + centre crop (on the display geometry: ``sar`` and the
    display matrix of the first frame it sees, when ``display``), or a clip frame (``clip``:
    resize to exactly ``clip.resize`` (h, w) as displayed, torchvision's centre crop).
    ``threads=1``: threaded reformat costs more than it saves on frames this small.  A new
    source geometry recomputes the crop.  ``DisplayError`` from ``display_ops`` for an odd angle."""

    def __init__(self, short_side: int | None = None, clip: ClipSpec | None = None, *,
                 display: bool = True, sar: Fraction = Fraction(1)):
        from av.video.reformatter import VideoReformatter
        self.short_side, self.clip, self.src = short_side, clip, None
        self.display, self.sar = display, (Fraction(sar) if display else Fraction(1))
        self.ops: tuple[str, ...] | None = None if display else ()
        self.reformatter = VideoReformatter()

    def _geometry(self, frame) -> None:
        width, height = frame.width, frame.height
        if self.ops is None:
            self.ops = display_ops(display_matrix(frame))
        swap = transposes(self.ops)
        if self.clip is not None:
            (h, w), (y0, x0), c = self.clip.resize, self.clip.origin(), self.clip.crop
            rw, rh, ys, xs = w, h, slice(y0, y0 + c), slice(x0, x0 + c)
        else:
            dw, dh = float(width * self.sar), float(height)
            if swap:
                dw, dh = dh, dw
            s = self.short_side
            rw, rh, x0, y0 = resize_crop_dims(dw, dh, s)
            ys, xs = slice(y0, y0 + s), slice(x0, x0 + s)
        self.dims = (rh, rw, ys, xs) if swap else (rw, rh, ys, xs)   # the coded-side resize
        self.src = (width, height)

    def __call__(self, frame, out: np.ndarray | None = None) -> np.ndarray:
        if self.src != (frame.width, frame.height):
            self._geometry(frame)
        rw, rh, ys, xs = self.dims
        rgb = self.reformatter.reformat(frame, width=rw, height=rh, format="rgb24",
                                        threads=1).to_ndarray()
        if self.ops:
            rgb = apply_ops(rgb, self.ops)
        if out is None:
            return np.ascontiguousarray(rgb[ys, xs])
        out[...] = rgb[ys, xs]
        return out
