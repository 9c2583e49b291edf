"""The per-moment features of one store subset in memory, and a skim model run over them.

What is here: ``FeatureSet`` (a subset's features read from the store once, into contiguous
arrays, and padded batches cut from them by indexing) and ``predict`` (a skim model over a
FeatureSet: video probabilities and picks).  Training (``training/skim.py``) and evaluation
(``report.py``, ``visualize.py``) both read through it; it imports neither of them.  What is
not: the network (``models/skim.py``), metrics, baselines, files.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from l2l.models.skim import SkimError, SkimNet


class FeatureSet:
    """One subset's per-moment arrays, read from the store with a single ``read_many``.

    ``arrays[name]``: (M, D) float16/float32, all videos' moments back to back; video i is
    rows ``offsets[i]:offsets[i+1]``.  ``labels[i]``: class indices of video i (empty when
    unlabelled)."""

    def __init__(self, ids, offsets, arrays, labels, metas=()):
        self.ids = list(ids)
        self.offsets = np.asarray(offsets, np.int64)
        self.lengths = np.diff(self.offsets)
        self.arrays = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
        self.labels = [list(lab) for lab in labels]
        self.metas = list(metas)

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_store(cls, store, names: Sequence[str], *, subset: str | None, classes: Sequence[str],
                   ids: Sequence[str] | None = None, extra: Sequence[str] = ()) -> "FeatureSet":
        from l2l.store import StoreError
        ids = list(store.ids(subset) if ids is None else ids)
        names = list(dict.fromkeys([*names, *extra]))
        try:
            batch = store.read_many(names, ids)
        except StoreError as e:        # the hint only where arrays are missing (not damaged)
            stored = set(store.ids())
            lacking = sorted({n for v in ids if v in stored
                              for n in names if n not in store.records(v)})
            hint = (f" (skimming needs the {', '.join(names)} features: run `l2l extract` with "
                    "the student features first)") if lacking else ""
            raise SkimError(f"{e.line()}{hint}") from None
        index = {c: i for i, c in enumerate(classes)}
        labels = []
        for m in batch.metas:
            unknown = [lab for lab in m.labels if lab not in index]
            if unknown:
                raise SkimError(f"video {m.id!r} has label(s) {unknown} outside the store's classes")
            labels.append([index[lab] for lab in m.labels])
        return cls(batch.ids, batch.offsets, batch.arrays, labels, batch.metas)

    def labelled(self) -> "FeatureSet":
        keep = [i for i, lab in enumerate(self.labels) if lab]
        return self.subset(keep)

    def subset(self, keep: Sequence[int]) -> "FeatureSet":
        rows = np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in keep]) \
            if len(keep) else np.zeros(0, np.int64)
        offsets = np.r_[0, np.cumsum(self.lengths[list(keep)])]
        return FeatureSet([self.ids[i] for i in keep], offsets,
                          {k: v.numpy()[rows] for k, v in self.arrays.items()},
                          [self.labels[i] for i in keep],
                          [self.metas[i] for i in keep] if self.metas else ())

    def batch(self, videos: np.ndarray, names: Sequence[str], starts: np.ndarray | None = None,
              lengths: np.ndarray | None = None, device="cpu"):
        """Banks (one (B, L, D) float32 tensor per name) and mask (B, L) bool for ``videos``,
        each the window [start, start + length) of its moments (default: all of them)."""
        videos = np.asarray(videos)
        if lengths is None:
            lengths = self.lengths[videos]
        if starts is None:
            starts = np.zeros(len(videos), np.int64)
        L = int(lengths.max())
        pos = np.arange(L)[None, :]
        mask = pos < lengths[:, None]
        rows = np.where(mask, self.offsets[videos][:, None] + starts[:, None] + pos, 0)
        rows_t = torch.from_numpy(rows)
        banks = [self.arrays[n][rows_t].to(device=device, dtype=torch.float32) for n in names]
        return banks, torch.from_numpy(mask).to(device)

    def targets(self, videos: np.ndarray, num_classes: int) -> torch.Tensor:
        """(B, C) float: each video's labels, weight 1/len(labels) each."""
        t = torch.zeros(len(videos), num_classes)
        for r, v in enumerate(videos):
            t[r, self.labels[v]] = 1.0 / len(self.labels[v])
        return t


@torch.no_grad()
def predict(model: SkimNet, data: FeatureSet, *, batch_size: int = 256, device="cpu",
            steps: int | None = None, aggregated: bool = True, stride: int = 1,
            interpolate: bool = False, recognition: str | None = None
            ) -> tuple[np.ndarray, dict[str, list[np.ndarray]]]:
    """Video-level probabilities (V, C) and, per queried bank, each video's picks (k,) in step
    order.  ``stride``/``interpolate``: the subsampled index (see ``SkimNet.forward``);
    ``recognition``: a bank name classified by ``model.recognizer`` at the picks."""
    model.eval()
    names = list(model.config.features)
    order = np.argsort(data.lengths, kind="stable")       # similar lengths share a batch
    probs = np.zeros((len(data), model.config.num_classes), np.float32)
    picks = {n: [None] * len(data) for n in model.queried}
    for s in range(0, len(order), batch_size):
        vids = order[s:s + batch_size]
        banks, mask = data.batch(vids, names + ([recognition] if recognition else []), device=device)
        rec = banks.pop() if recognition else None
        out = model(banks, mask, steps=steps, aggregated=aggregated, stride=stride,
                    interpolate=interpolate, recognition_bank=rec)
        probs[vids] = torch.softmax(out.logits, 1).cpu().numpy()
        for n, p in out.picks.items():
            for r, v in enumerate(vids):
                picks[n][v] = p[r].cpu().numpy()
    return probs, picks
