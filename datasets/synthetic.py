"""A synthetic untrimmed audio-visual data set: real H.264/AAC mp4 files + an ActivityNet v1.3 JSON.

``make_synthetic(out_dir, ...)`` writes ``out_dir/videos/<id>.mp4`` and ``out_dir/annotations.json``;
``--dataset synthetic`` (``load_synthetic``) reads them back through the ActivityNet parser.

Construction (all randomness from ``numpy.random.default_rng((seed, video_index))``, so a seed
fixes every pixel and sample; encoding is single-threaded and bit-exact, so files are identical;
x264's macroblock-tree rate control is off, because with it the same frames encoded twice in one
process came out different in about half of the runs):

- Classes.  Class k has a *visual signature*: a bold, saturated colour ``PALETTE[k]`` and a shape
  ``SHAPES[k]`` (disc, square, triangle, cross, ring, diamond, ...; for more than 6 classes the
  shapes repeat with other colours), drawn large (about 40% of the frame height) near the centre,
  moving slowly.  It has an *audio signature*: a three-note chord (f, 5/4 f, 3/2 f) whose root
  ``f_k`` is log-spaced over 250-4000 Hz (one band per class, all inside the 40 mel bands of a
  16 kHz spectrogram), pulsed at a class-specific rhythm of ``2 + 1.5 k`` beats per second.
- Evidence.  Each video (one class) has 2-3 *evidence segments*, each at least 1 s long, covering
  ``evidence=(0.10, 0.20)`` of its duration in total.  Only there do the visual and the audio
  signature of its class appear (together).  These segments are the video's ActivityNet
  ``annotations`` (``segment`` in seconds, ``label`` = class name).
- Background, everywhere: a smooth, desaturated random texture that pans slowly, with a gentle
  brightness flicker; pink noise plus short random tone blips at random frequencies.
- Distractors, outside the evidence: 1-2 *audio distractors* (another class's chord and rhythm at
  60% loudness, with no visual signature) and 1-3 *visual distractors* (a class shape in grey,
  without class colour or sound).  So no single cue outside the evidence segments gives the class
  away reliably, and a few uniformly picked moments often miss the evidence, while a model that
  previews the whole video can find it.
- Splits: per class, the first ``val_fraction`` of the videos (rounded, at least one and never all
  when a class has two or more) are "validation", the rest "training" (no "testing" subset).
- Class names are "<colour> <shape>" (e.g. "red disc"); like ActivityNet's, they index in sorted order.

Media: H.264 (libx264, yuv420p, a keyframe every ``gop_seconds``, no scene-cut keyframes) at
``fps`` and ``size`` (width, height); AAC mono at ``audio_rate`` Hz; audio and video have the same
length.  Videos are rendered in ``workers`` processes.  The default set (5 classes x 10 videos of
20-40 s, 160x120, 30 fps, 18 MB) takes about 30 s on 2 cores.

This module makes and lists the synthetic set; it does not decode or extract features.
"""
from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import multiprocessing
import os
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..core.errors import ConfigError
from .activitynet import parse_activitynet, write_activitynet_json
from .base import AnnotationError, Dataset, VideoRecord, register

PALETTE = {  # name -> RGB; saturated, mutually distinct, none of them grey
    "red": (230, 30, 30), "green": (30, 200, 40), "blue": (30, 60, 235), "yellow": (245, 225, 20),
    "magenta": (225, 30, 210), "cyan": (20, 220, 225), "orange": (250, 130, 10), "purple": (120, 30, 200),
}
SHAPES = ("disc", "square", "triangle", "cross", "ring", "diamond")
ANNOTATION_FILE = "annotations.json"
VIDEOS_DIR = "videos"


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    classes: int = 5
    videos_per_class: int = 10
    seed: int = 0
    duration: tuple[float, float] = (20.0, 40.0)   # seconds, uniform per video
    fps: int = 30
    size: tuple[int, int] = (160, 120)              # width, height (even numbers)
    audio_rate: int = 16000                         # Hz
    evidence: tuple[float, float] = (0.10, 0.20)    # fraction of the duration holding the signatures
    val_fraction: float = 0.25
    gop_seconds: float = 1.0
    crf: int = 23


def class_names(k: int) -> tuple[str, ...]:
    colours = list(PALETTE)
    if k > len(colours) * len(SHAPES):
        raise ConfigError(f"at most {len(colours) * len(SHAPES)} synthetic classes")
    # class i: colour i mod 8, shape (i + i // 8) mod 6, so the first 48 (colour, shape) pairs are distinct
    return tuple(f"{colours[i % len(colours)]} {SHAPES[(i + i // len(colours)) % len(SHAPES)]}" for i in range(k))


def chord_root(k: int, n_classes: int) -> float:
    """Root frequency (Hz) of class k's chord, log-spaced over 250-4000 Hz."""
    return 250.0 * 16.0 ** (k / max(n_classes - 1, 1))


def _shape_mask(shape: str, s: int) -> np.ndarray:
    y, x = np.mgrid[0:s, 0:s]
    u, v = (x + 0.5) / s * 2 - 1, (y + 0.5) / s * 2 - 1     # [-1, 1]
    r = np.hypot(u, v)
    if shape == "disc":
        return r <= 0.95
    if shape == "square":
        return (abs(u) <= 0.8) & (abs(v) <= 0.8)
    if shape == "triangle":
        return (v <= 0.85) & (abs(u) <= (v + 0.95) / 1.8 * 0.95)
    if shape == "cross":
        return ((abs(u) <= 0.28) | (abs(v) <= 0.28)) & (abs(u) <= 0.95) & (abs(v) <= 0.95)
    if shape == "ring":
        return (r <= 0.95) & (r >= 0.55)
    if shape == "diamond":
        return abs(u) + abs(v) <= 0.95
    raise ValueError(shape)


def _texture(rng, h: int, w: int) -> np.ndarray:
    """A smooth, desaturated (h, w, 3) uint8 texture, bigger than a frame so that it can pan."""
    cell = 12
    low = rng.random((h // cell + 2, w // cell + 2, 3))
    up = np.repeat(np.repeat(low, cell, 0), cell, 1)[:h, :w]
    k = cell  # box blur along both axes, via cumulative sums (wrap-around keeps the size)
    for axis in (0, 1):
        c = np.cumsum(np.concatenate([up, up.take(range(k), axis=axis)], axis=axis), axis=axis)
        up = (c.take(range(k, k + up.shape[axis]), axis=axis) - c.take(range(up.shape[axis]), axis=axis)) / k
    grey = up.mean(axis=2, keepdims=True)
    tint = np.array(rng.uniform(0.85, 1.15, 3))
    img = (0.8 * grey + 0.2 * up) * tint
    img = (img - img.min()) / (np.ptp(img) + 1e-9)
    return (60 + 100 * img).astype(np.uint8)


def _intervals(rng, duration: float, lengths: list[float], min_gap: float = 0.5) -> list[tuple[float, float]]:
    """Non-overlapping intervals of the given lengths, in the given order, at least ``min_gap`` apart."""
    free = duration - sum(lengths) - (len(lengths) + 1) * min_gap
    gaps = min_gap + rng.dirichlet(np.ones(len(lengths) + 1)) * free
    out, t = [], 0.0
    for g, length in zip(gaps, lengths):
        t += g
        out.append((round(float(t), 3), round(float(t + length), 3)))
        t += length
    return out


def _plan(cfg: SyntheticConfig, index: int, label: int) -> dict:
    """Everything random about one video, drawn from its own generator."""
    rng = np.random.default_rng((cfg.seed, index))
    n_frames = int(round(rng.uniform(*cfg.duration) * cfg.fps))
    duration = n_frames / cfg.fps
    n_ev = int(rng.integers(2, 4))
    ev_total = min(max(rng.uniform(*cfg.evidence) * duration, n_ev * 1.0), 0.5 * duration)
    ev_len = [ev_total / n_ev] * n_ev
    others = [c for c in range(cfg.classes) if c != label] or [label]
    events = [("evidence", label, length) for length in ev_len]
    distractors = [("audio", int(rng.choice(others)), float(rng.uniform(0.8, 2.0))) for _ in range(rng.integers(1, 3))]
    distractors += [("visual", int(rng.integers(len(SHAPES))), float(rng.uniform(0.8, 2.0)))
                    for _ in range(rng.integers(1, 4))]
    for d in distractors:   # as many as fit (short videos may get none)
        if sum(e[2] + 0.5 for e in events) + d[2] + 1.0 <= duration:
            events.append(d)
    order = rng.permutation(len(events))
    events = [events[i] for i in order]
    spans = _intervals(rng, duration, [e[2] for e in events])
    return {"rng": rng, "n_frames": n_frames, "duration": duration,
            "events": [(kind, arg, s, e) for (kind, arg, _), (s, e) in zip(events, spans)]}


def _audio(cfg: SyntheticConfig, plan: dict, names: tuple[str, ...]) -> np.ndarray:
    rng, sr = plan["rng"], cfg.audio_rate
    n = int(round(plan["duration"] * sr))
    t = np.arange(n) / sr
    n_fft = 1 << (n - 1).bit_length()                       # pink noise, via a fast FFT size
    spec = np.fft.rfft(rng.standard_normal(n_fft))
    f = np.fft.rfftfreq(n_fft, 1 / sr)
    spec[1:] /= np.sqrt(f[1:])
    spec[0] = 0
    noise = np.fft.irfft(spec, n_fft)[:n]
    x = 0.03 * noise / (noise.std() + 1e-9)
    for _ in range(int(plan["duration"] / 2)):              # short blips at random frequencies
        s = int(rng.integers(0, max(n - sr // 4, 1)))
        m = int(rng.integers(sr // 20, sr // 4))
        seg = slice(s, min(s + m, n))
        x[seg] += 0.05 * np.sin(2 * np.pi * rng.uniform(150, 7000) * t[seg]) * np.hanning(seg.stop - seg.start)

    def signature(k: int, s: float, e: float, gain: float):
        seg = slice(int(s * sr), min(int(e * sr), n))
        tt = t[seg]
        root = chord_root(k, len(names))
        tone = sum(np.sin(2 * np.pi * root * r * tt) for r in (1.0, 1.25, 1.5)) / 3
        beat = (0.5 - 0.5 * np.cos(2 * np.pi * (2 + 1.5 * k) * tt)) ** 2
        fade = np.minimum(1, np.minimum(tt - tt[0], tt[-1] - tt) / 0.02)
        x[seg] += gain * tone * (0.3 + 0.7 * beat) * fade

    for kind, arg, s, e in plan["events"]:
        if kind == "evidence":
            signature(arg, s, e, 0.5)
        elif kind == "audio":
            signature(arg, s, e, 0.3)
    return np.clip(x, -1, 1).astype(np.float32)


def _render(cfg: SyntheticConfig, index: int, label: int, path: str) -> dict:
    """Write one video; returns its plan (duration and events) without the generator."""
    import av
    from av.codec.context import Flags

    names = class_names(cfg.classes)
    plan = _plan(cfg, index, label)
    rng = plan["rng"]
    w, h = cfg.size
    tex = _texture(rng, 2 * h, 2 * w)
    pan = rng.uniform(-1, 1, 2) * np.array([w, h]) / 20        # pixels per second
    phase0 = rng.uniform(0, 2 * np.pi, 4)
    audio = _audio(cfg, plan, names)

    objects = []   # (start, end, mask, colour, size)
    for kind, arg, s, e in plan["events"]:
        size = int(h * rng.uniform(0.35, 0.45))
        if kind == "evidence":
            colour = PALETTE[names[arg].split()[0]]
            objects.append((s, e, _shape_mask(names[arg].split()[1], size), np.array(colour, np.uint8), size))
        elif kind == "visual":
            g = int(rng.integers(90, 220))
            objects.append((s, e, _shape_mask(SHAPES[arg], size), np.array((g, g, g), np.uint8), size))

    tmp = path + ".part"
    with av.open(tmp, "w", format="mp4", options={"fflags": "+bitexact"}) as out:
        vs = out.add_stream("libx264", rate=cfg.fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        gop = max(1, int(round(cfg.gop_seconds * cfg.fps)))
        vs.options = {"preset": "veryfast", "crf": str(cfg.crf),
                      "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:threads=1:no-mbtree=1"}
        vs.codec_context.flags |= Flags.bitexact
        vs.thread_count = 1
        aus = out.add_stream("aac", rate=cfg.audio_rate, layout="mono")
        aus.codec_context.flags |= Flags.bitexact
        for i in range(plan["n_frames"]):
            ts = i / cfg.fps
            ox = int((ts * pan[0]) % w)
            oy = int((ts * pan[1]) % h)
            frame = tex[oy:oy + h, ox:ox + w]
            gain = 1 + 0.06 * np.sin(2 * np.pi * 0.3 * ts + phase0[0])
            frame = np.clip(frame * gain, 0, 255).astype(np.uint8)
            for s, e, mask, colour, size in objects:
                if s <= ts < e:
                    cx = w / 2 + 0.18 * w * np.sin(0.9 * ts + phase0[1]) - size / 2
                    cy = h / 2 + 0.12 * h * np.sin(1.3 * ts + phase0[2]) - size / 2
                    x0, y0 = int(np.clip(cx, 0, w - size)), int(np.clip(cy, 0, h - size))
                    frame[y0:y0 + size, x0:x0 + size][mask] = colour
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            vf.pts = i
            vf.time_base = Fraction(1, cfg.fps)
            for pkt in vs.encode(vf):
                out.mux(pkt)
        for pkt in vs.encode():
            out.mux(pkt)
        step = 1024
        for j in range(0, len(audio), step):
            chunk = audio[j:j + step]
            af = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
            af.sample_rate = cfg.audio_rate
            af.pts = j
            af.time_base = Fraction(1, cfg.audio_rate)
            for pkt in aus.encode(af):
                out.mux(pkt)
        for pkt in aus.encode():
            out.mux(pkt)
    os.replace(tmp, path)
    named = [(kind, SHAPES[arg] if kind == "visual" else names[arg], s, e) for kind, arg, s, e in plan["events"]]
    return {"duration": plan["duration"], "events": named}


@dataclasses.dataclass(frozen=True)
class SyntheticSet:
    """What ``make_synthetic`` wrote."""
    root: Path
    videos_dir: Path
    annotations: Path
    classes: tuple[str, ...]  # sorted, as the activitynet parser orders them
    # video id -> [(kind, name, start s, end s), ...]: kind "evidence" (name = the video's class),
    # "audio" (name = the class whose sound it is) or "visual" (name = the grey shape)
    events: dict


def make_synthetic(
    out_dir,
    *,
    classes: int = 5,
    videos_per_class: int = 10,
    seed: int = 0,
    duration: tuple[float, float] = (20.0, 40.0),
    fps: int = 30,
    size: tuple[int, int] = (160, 120),
    audio_rate: int = 16000,
    evidence: tuple[float, float] = (0.10, 0.20),
    val_fraction: float = 0.25,
    gop_seconds: float = 1.0,
    workers: int | None = None,
    progress=None,
) -> SyntheticSet:
    """Render the set into ``out_dir`` (see the module docstring); ``progress(done, total)`` if given."""
    cfg = SyntheticConfig(classes=classes, videos_per_class=videos_per_class, seed=seed,
                          duration=(float(duration[0]), float(duration[1])), fps=int(fps),
                          size=(int(size[0]), int(size[1])), audio_rate=int(audio_rate),
                          evidence=(float(evidence[0]), float(evidence[1])), val_fraction=val_fraction,
                          gop_seconds=gop_seconds)
    if classes < 1 or videos_per_class < 1:
        raise ConfigError("need at least one class and one video per class")
    if not 6 <= cfg.duration[0] <= cfg.duration[1]:
        raise ConfigError(f"duration must be (min, max) seconds with 6 <= min <= max, got {duration}")
    if not 0 < cfg.evidence[0] <= cfg.evidence[1] <= 0.5:
        raise ConfigError(f"evidence must be (min, max) fractions with 0 < min <= max <= 0.5, got {evidence}")
    if cfg.size[0] % 2 or cfg.size[1] % 2:
        raise ConfigError(f"size must be even (yuv420p), got {size}")
    names = class_names(classes)
    root = Path(out_dir)
    videos_dir = root / VIDEOS_DIR
    videos_dir.mkdir(parents=True, exist_ok=True)
    n_val = int(val_fraction * videos_per_class + 0.5)
    if val_fraction > 0 and videos_per_class >= 2:
        n_val = min(max(n_val, 1), videos_per_class - 1)   # both subsets non-empty
    jobs = []   # (index, id, label, subset)
    for k in range(classes):
        for i in range(videos_per_class):
            jobs.append((len(jobs), f"syn{k:02d}_{i:03d}", k, "validation" if i < n_val else "training"))

    workers = workers or min(len(jobs), os.cpu_count() or 1)
    results = {}
    if workers <= 1:
        for idx, vid, k, _ in jobs:
            results[vid] = _render(cfg, idx, k, str(videos_dir / f"{vid}.mp4"))
            if progress:
                progress(len(results), len(jobs))
    else:
        # spawn: the caller may have torch (and its thread pools) loaded; forking that can hang.
        with cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futs = {pool.submit(_render, cfg, idx, k, str(videos_dir / f"{vid}.mp4")): vid for idx, vid, k, _ in jobs}
            for fut in cf.as_completed(futs):
                results[futs[fut]] = fut.result()
                if progress:
                    progress(len(results), len(jobs))

    records, segments, events = [], {}, {}
    for _, vid, k, subset in jobs:
        r = results[vid]
        records.append(VideoRecord(id=vid, path=None, labels=(names[k],), subset=subset,
                                   duration=round(r["duration"], 3)))
        segments[vid] = [(s, e, name) for kind, name, s, e in r["events"] if kind == "evidence"]
        events[vid] = r["events"]
    ann = write_activitynet_json(root / ANNOTATION_FILE, records, segments, classes=names,
                                 resolution=f"{cfg.size[0]}x{cfg.size[1]}", url="synthetic://")
    return SyntheticSet(root=root, videos_dir=videos_dir, annotations=ann, classes=tuple(sorted(names)),
                        events=events)


@register("synthetic")
def load_synthetic(videos_dir, annotations_path=None) -> Dataset:
    """``--dataset synthetic``: ``videos_dir`` is the set's root or its ``videos/`` folder;
    ``annotations_path`` defaults to the ``annotations.json`` beside ``videos/``."""
    videos_dir = Path(videos_dir)
    if (videos_dir / VIDEOS_DIR).is_dir():
        videos_dir = videos_dir / VIDEOS_DIR
    if annotations_path is None:
        candidates = [videos_dir.parent / ANNOTATION_FILE, videos_dir / ANNOTATION_FILE]
        annotations_path = next((p for p in candidates if p.is_file()), None)
        if annotations_path is None:
            raise AnnotationError(f"{candidates[0]}: synthetic annotation file not found")
    return parse_activitynet(Path(annotations_path), videos_dir, name="synthetic")
