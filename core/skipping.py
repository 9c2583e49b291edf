"""Decoding less than every frame where it changes nothing, on H.264 and HEVC with B-frames.
``skip_plan`` decides from a demux-only first pass (packet pts -> the timeline's picks,
``core.timeline.needed_frames``) two kinds of frames the decoder need not make:

- non-reference frames no moment or clip uses: decoded with ``skip_frame=NONREF``, so the
  decoder drops them (nothing references them);
- every frame after the last needed one (in decode order) before the next IDR picture: not
  sent to the decoder at all.  An IDR picture empties the decoder's reference list, so nothing
  decoded after it can reference what was left out (only an IDR counts, found from the packet's
  own NAL unit types, not from the container's keyframe flag, which open-GOP I-frames carry too).

``frames`` is the decode loop's source of frames with both applied per packet; ``NoSkip`` tells
``core/media.py`` to decode the file again in full (a frame's pts not among the packets', a
needed frame that did not come).

Measured on the realistic set's 120 s 720p x264 file with B-frames (3600 frames, 33 IDR, 226
needed): 1,333 non-reference frames skipped and 259 frames after the last needed one left out.
Not here: which frame a tick gets (``core/timeline.py``), the decode loop (``core/media.py``).
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

from .timeline import Timeline, needed_frames

__all__ = ["NoSkip", "Plan", "SKIP_CODECS", "frames", "idr", "skip_plan"]


class NoSkip(Exception):
    """Skipping frames cannot be trusted on this file: decode it again, every frame."""


SKIP_CODECS = ("h264", "hevc")      # where non-reference frames are common and safe to skip
_IDR = {"h264": (5,), "hevc": (19, 20)}      # NAL unit types of an IDR picture's slices


class Plan(NamedTuple):
    rank: dict      # pts -> rank in presentation order (the frame's index in a full decode)
    keep: set       # pts of the frames some tick needs (decoded in full)
    drop: set       # pts of the frames not sent to the decoder (after the last needed one
                    # before an IDR picture)


def _nal_length_size(codec: str, extradata: bytes | None) -> int:
    """Bytes of each NAL unit's length prefix (avcC / hvcC extradata, as in MP4 and MKV), or 0
    for Annex B start codes (no extradata, or extradata that is itself Annex B)."""
    if not extradata or extradata[0] != 1:
        return 0
    at = 4 if codec == "h264" else 21
    return (extradata[at] & 3) + 1 if len(extradata) > at else 0


def _nal_types(codec: str, data: bytes, length_size: int):
    """The NAL unit types in one packet."""
    shift, mask = (0, 0x1F) if codec == "h264" else (1, 0x3F)
    if length_size:
        i = 0
        while i + length_size < len(data):
            n = int.from_bytes(data[i:i + length_size], "big")
            yield (data[i + length_size] >> shift) & mask
            i += length_size + n
        return
    i = data.find(b"\x00\x00\x01")
    while 0 <= i < len(data) - 3:
        yield (data[i + 3] >> shift) & mask
        i = data.find(b"\x00\x00\x01", i + 3)


def idr(codec: str, data: bytes, length_size: int) -> bool:
    """Whether a packet holds an IDR picture: its first slice's NAL unit is of an IDR type (a
    parameter set or SEI before it is passed over).  False for anything else or a packet this
    cannot read (then no frame before it is left out)."""
    vcl = 6 if codec == "h264" else 32            # H.264 1..5, HEVC 0..31: slices
    for t in _nal_types(codec, data, length_size):
        if (1 <= t < vcl) if codec == "h264" else (t < vcl):
            return t in _IDR[codec]
    return False


def skip_plan(path: Path, vs, line: Timeline) -> Plan | None:
    """Decode less: a first pass that only demuxes the video packets (no decoding) gives every
    frame's pts and which packets are IDR pictures; the timeline run on the pts
    (``core.timeline.needed_frames``) says which frames a tick gets.  None where skipping gains
    nothing or cannot be trusted (another codec, no B-frames, a packet without pts, repeated
    pts).  Nothing references a skipped non-reference frame or a frame left out before an IDR
    picture, so every decoded frame is bit-identical to a full decode's (tests/test_skip.py)."""
    import av
    cc = vs.codec_context
    if cc.name not in SKIP_CODECS or not cc.has_b_frames:
        return None
    codec = cc.name
    size = _nal_length_size(codec, cc.extradata)
    pts, idrs, tb = [], set(), None        # pts in decode order; decode indices of IDR pictures
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        for p in c.demux(s):
            if p.size:
                if p.pts is None:
                    return None
                if p.is_keyframe and idr(codec, bytes(p), size):
                    idrs.add(len(pts))
                pts.append(p.pts)
        tb = s.time_base
    order = sorted(pts)
    if not order or len(set(order)) != len(order) or tb is None:
        return None
    tb = Fraction(tb.numerator, tb.denominator)
    keep = needed_frames(line, order if line.grid == "time" else list(range(len(order))), tb)
    if len(keep) * 10 > len(order) * 9:                 # under 10 % to skip: not worth it
        return None
    keep = {order[i] for i in keep}
    drop, tail = set(), []              # tail: packets since the last needed one
    for i, p in enumerate(pts):
        if i in idrs:                   # nothing from here on references the tail
            drop.update(tail)
            tail = []
        if p in keep:
            tail = []
        else:
            tail.append(p)
    return Plan({p: i for i, p in enumerate(order)}, keep, drop)


def frames(container, vs, aus, plan: Plan | None):
    """Decoded frames of the video (and audio) stream, in demux order; with a ``plan``, each
    video packet whose frame is not needed is decoded with ``skip_frame=NONREF`` (the decoder
    drops it if nothing references it; set per packet, which FFmpeg's frame threads copy from
    the context when the packet is submitted), and the plan's ``drop`` packets are not sent."""
    streams = [vs] if aus is None else [vs, aus]
    if plan is None:
        yield from container.decode(*streams)
        return
    keep, drop, cc, mode = plan.keep, plan.drop, vs.codec_context, None
    for packet in container.demux(*streams):        # one video stream: vs
        if packet.size and packet.stream.type == "video":
            if packet.pts in drop:
                continue
            want = "DEFAULT" if packet.pts in keep else "NONREF"
            if want != mode:
                cc.skip_frame = mode = want
        yield from packet.decode()
