"""``l2l visualize``: the moments the skim model picks, above T uniformly spaced moments of the
same video, as one PNG (like the paper's qualitative figures).

Rows: the image picks in pick order, the audio picks in pick order (two-bank models), then
the T uniform moments; every frame is captioned with its pick number and time.  Frames come
from the store's ``frames`` array when it has one, else they are decoded from the video file
with PyAV (``videos``: the folder holding ``<id>.<ext>`` or ``v_<id>.<ext>``, or the path the
store recorded as the video's source).

What is not here: choosing the moments (``models/skim.py``) or any metric.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from l2l.core.grid import FRAME_SIZE, MOMENT_STRIDE
from l2l.evaluation.baselines import uniform_indices
from l2l.evaluation.featureset import FeatureSet, predict
from l2l.models.skim import SkimError


def moment_frames(store, vid: str, indices: np.ndarray, *, videos=None) -> np.ndarray:
    """(len(indices), H, W, 3) uint8 frames of the given moments of video ``vid``."""
    recs = store.records(vid)
    if "frames" in recs:
        return store.read(vid, ["frames"])["frames"][np.asarray(indices)]
    meta = store.meta(vid)
    path = None
    if videos is not None:
        from l2l.datasets.base import find_video
        path = find_video(Path(videos), vid)
    if path is None and meta.source and Path(meta.source).is_file():
        path = Path(meta.source)
    if path is None:
        where = f"in {videos}" if videos else "(pass --videos DIR)"
        raise SkimError(f"no `frames` in the store for {vid!r} and no video file found {where}")
    if "frame_index" in recs:
        frame_idx = store.read(vid, ["frame_index"])["frame_index"][np.asarray(indices)]
    else:
        frame_idx = np.asarray(indices) * MOMENT_STRIDE
    return decode_frames(path, frame_idx)


def decode_frames(path: Path, frame_idx: np.ndarray, size: int = FRAME_SIZE) -> np.ndarray:
    """(len(frame_idx), size, size, 3) uint8 RGB: the decoded frames with these indices, as the
    decode stage converts them (``core.media.read_frames``: one pass, stops early).
    ``DecodeError`` (one line) for an unreadable file or one with fewer frames."""
    from l2l.core.media import read_frames
    return read_frames(path, frame_idx, size)


def visualize(store, model, vid: str, out, *, videos=None, steps: int | None = None) -> Path:
    """Write the montage of video ``vid`` to ``out`` (PNG); return its path."""
    if vid not in set(store.ids()):
        raise SkimError(f"{store.path}: no video {vid!r} in the store")
    classes = list(store.info().get("classes") or [])
    if len(classes) != model.config.num_classes:
        raise SkimError(f"the model has {model.config.num_classes} classes, the store "
                        f"{len(classes)}: not the checkpoint for this store")
    data = FeatureSet.from_store(store, model.config.features, subset=None, classes=classes,
                                 ids=[vid])
    probs, picks = predict(model, data, steps=steps, device=next(model.parameters()).device)
    n = int(data.lengths[0])
    recs = store.records(vid)
    times = (store.read(vid, ["times"])["times"] if "times" in recs
             else np.arange(n) * MOMENT_STRIDE / max(data.metas[0].fps, 1e-6))
    k = len(next(iter(picks.values()))[0])
    rows = [(f"skim: {name} index", picks[name][0]) for name in picks]
    rows.append(("uniform", uniform_indices(n, k)))
    top = int(probs[0].argmax())
    title = (f"{vid}: predicted {classes[top] if classes else top} ({probs[0, top]:.2f})"
             + (f", labels {', '.join(data.metas[0].labels)}" if data.metas[0].labels else ""))
    frames = [moment_frames(store, vid, idx, videos=videos) for _, idx in rows]
    return draw_montage(rows, frames, times, title, Path(out))


def draw_montage(rows, frames, times, title: str, out: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ncol = max(len(idx) for _, idx in rows)
    fig, axes = plt.subplots(len(rows), ncol, figsize=(1.5 * ncol, 1.75 * len(rows)),
                             squeeze=False)
    for r, ((label, idx), imgs) in enumerate(zip(rows, frames)):
        for c in range(ncol):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(idx):
                ax.imshow(imgs[c])
                prefix = f"#{c + 1} " if label.startswith("skim") else ""
                ax.set_title(f"{prefix}{times[idx[c]]:.1f}s", fontsize=7)
        axes[r, 0].text(-0.08, 0.5, label, transform=axes[r, 0].transAxes, rotation=90,
                        va="center", ha="right", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
