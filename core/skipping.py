"""Decoding less than every frame where it changes nothing: on H.264 and HEVC with B-frames,
the frames no moment or clip uses are decoded with ``skip_frame=NONREF``, so the decoder drops
the non-reference ones.  ``skip_plan`` decides from a demux-only first pass (packet pts -> the
timeline's picks, ``core.timeline.needed_frames``); ``frames`` is the decode loop's source of
frames with the setting applied per packet; ``NoSkip`` tells ``core/media.py`` to decode the file
again in full (a frame's pts not among the packets', a needed frame that did not come).

Measured on a 720p x264 file with B-frames: about a third of the frames skipped.  Not here:
which frame a tick gets (``core/timeline.py``), the decode loop (``core/media.py``).
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

from .timeline import Timeline, needed_frames

__all__ = ["NoSkip", "SKIP_CODECS", "frames", "skip_plan"]


class NoSkip(Exception):
    """Skipping frames cannot be trusted on this file: decode it again, every frame."""


SKIP_CODECS = ("h264", "hevc")      # where non-reference frames are common and safe to skip


def skip_plan(path: Path, vs, line: Timeline) -> tuple[dict, set] | None:
    """Decode less: a first pass that only demuxes the video packets (no decoding) gives every
    frame's pts; the timeline run on them (``core.timeline.needed_frames``) says which frames a
    tick gets.  Returns ({pts: rank in presentation order}, {pts of the needed frames}), or None
    where skipping gains nothing or cannot be trusted (another codec, no B-frames, a packet
    without pts, repeated pts).  Nothing references a non-reference frame, so skipping the ones
    no tick needs leaves every decoded frame bit-identical (tests/test_skip.py)."""
    import av
    cc = vs.codec_context
    if cc.name not in SKIP_CODECS or not cc.has_b_frames:
        return None
    pts, tb = [], None
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        for p in c.demux(s):
            if p.size:
                if p.pts is None:
                    return None
                pts.append(p.pts)
        tb = s.time_base
    order = sorted(pts)
    if not order or len(set(order)) != len(order) or tb is None:
        return None
    tb = Fraction(tb.numerator, tb.denominator)
    keep = needed_frames(line, order if line.grid == "time" else list(range(len(order))), tb)
    if len(keep) * 10 > len(order) * 9:                 # under 10 % to skip: not worth it
        return None
    return {p: i for i, p in enumerate(order)}, {order[i] for i in keep}


def frames(container, vs, aus, plan):
    """Decoded frames of the video (and audio) stream, in demux order; with a ``plan``, each
    video packet whose frame is not needed is decoded with ``skip_frame=NONREF`` (the decoder
    drops it if nothing references it; set per packet, which FFmpeg's frame threads copy from
    the context when the packet is submitted)."""
    streams = [vs] if aus is None else [vs, aus]
    if plan is None:
        yield from container.decode(*streams)
        return
    keep, cc, mode = plan[1], vs.codec_context, None
    for packet in container.demux(*streams):        # one video stream: vs
        if packet.size and packet.stream.type == "video":
            want = "DEFAULT" if packet.pts in keep else "NONREF"
            if want != mode:
                cc.skip_frame = mode = want
        yield from packet.decode()
