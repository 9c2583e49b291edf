"""The two passes over a subset that ``l2l evaluate`` makes: every skim variant on each batch of
videos, and every baseline on each chunk of videos, so that each video's features are read (or,
streamed, fetched from the store) once per pass, however many curve points there are.

What is here: ``Variant`` (one way of running the skim model: subsampling s, interpolation,
aggregated or argmax inputs), ``skim_pass`` (video probabilities of each variant, and of each
early stop k = 1..T of the main variant from the same run, see ``SkimNet.readout``) and
``baseline_pass`` (video scores of each registered baseline at T and of UNIFORM at each k).
What is not: metrics, costs, files (``report.py``).

Results are those of running each variant separately (``featureset.predict``) and each
baseline over all moments at once (``baselines.run_baseline``): the same batches, the same
order of random draws (a baseline's generator goes through the videos in order).  The skim
variants of a batch share the keys' convolution (``SkimNet.prekeys``), so a subsampled
variant's keys agree with a separate run's to rounding, not bit for bit.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import torch

from l2l.evaluation import baselines as BL
from l2l.evaluation.featureset import FeatureSet, length_batches
from l2l.models.skim import chosen_mask

MOMENTS_PER_CHUNK = 65536        # moments whose class probabilities one baseline chunk holds


@dataclasses.dataclass(frozen=True)
class Variant:
    """One skim inference setting (``SkimNet.forward``'s switches)."""
    stride: int = 1
    interpolate: bool = False
    aggregated: bool = True

    @property
    def key(self) -> str:
        if not self.aggregated:
            return "unaggregated"
        return f"s{self.stride}" + ("-interpolated" if self.interpolate and self.stride > 1 else "")


@torch.inference_mode()
def skim_pass(model, data: FeatureSet, variants: Sequence[Variant], *, batch_size: int,
              device, recognition: str | None = None, progress=None) -> dict:
    """Run every variant on each batch (videos by length, as ``predict``).  Returns
    ``{variant.key: {"probs": (V, C) float32, "chosen": (V,) int64}}`` (chosen: distinct
    moments picked, over the queried banks) and, under ``"k"``, for the first variant each
    early stop: ``{"probs": (T, V, C), "chosen": (T, V)}``."""
    model.eval()
    T, C, V = model.config.steps, model.config.num_classes, len(data)
    names = list(model.config.features) + ([recognition] if recognition else [])
    out = {v.key: {"probs": np.zeros((V, C), np.float32), "chosen": np.zeros(V, np.int64)}
           for v in variants}
    first = variants[0]
    curve = {"probs": np.zeros((T, V, C), np.float32), "chosen": np.zeros((T, V), np.int64)}
    groups = length_batches(data.lengths, batch_size)
    jobs = ((g, None, None) for g in groups)
    for vids, (banks, mask) in zip(groups, data.batches(jobs, names, device=device)):
        rec = banks.pop() if recognition else None
        N = mask.shape[1]
        pre = model.prekeys(banks, mask)          # the keys' convolution, once per batch
        for var in variants:
            o = model(banks, mask, aggregated=var.aggregated, stride=var.stride,
                      interpolate=var.interpolate, recognition_bank=rec, prekeys=pre)
            out[var.key]["probs"][vids] = torch.softmax(o.logits, 1).cpu().numpy()
            out[var.key]["chosen"][vids] = chosen_mask(o.picks, N).sum(1).cpu().numpy()
            if var is first:
                for k in range(1, T + 1):
                    logits = o.logits if k == T else model.readout(o, k, rec)
                    curve["probs"][k - 1, vids] = torch.softmax(logits, 1).cpu().numpy()
                    picks = {n: p[:, :k].contiguous() for n, p in o.picks.items()}
                    curve["chosen"][k - 1, vids] = chosen_mask(picks, N).sum(1).cpu().numpy()
        if progress is not None:
            progress(len(vids))
    out["k"] = curve
    return out


def video_chunks(lengths: np.ndarray, moments: int = MOMENTS_PER_CHUNK) -> list[np.ndarray]:
    """Consecutive videos in chunks of about ``moments`` moments (at least one video each)."""
    out, start, total = [], 0, 0
    for i, n in enumerate(lengths):
        if total and total + n > moments:
            out.append(np.arange(start, i))
            start, total = i, 0
        total += int(n)
    if start < len(lengths):
        out.append(np.arange(start, len(lengths)))
    return out


@torch.no_grad()
def baseline_pass(data: FeatureSet, *, fusion, classifier, banks: Sequence[str], t: int,
                  ks: Sequence[int], seed: int, device, progress=None) -> dict:
    """Every registered baseline at ``t`` moments and UNIFORM at each of ``ks``, on each
    video's per-moment probabilities (``baselines.moment_probs``: the classifier on Psi of the
    moment).  Returns ``{name: {"scores": (V, C) float32, "n_used": (V,) int64}}`` and, under
    ``("uniform", k)``, the UNIFORM curve."""
    fusion = None if fusion is None else fusion.to(device).eval()
    classifier = classifier.to(device).eval()
    C = classifier.out_features
    V = len(data)
    runs = {name: BL.selector(name, t, seed=seed) for name in BL.BASELINES}
    runs.update({("uniform", k): BL.selector("uniform", k) for k in ks})
    out = {key: {"scores": np.zeros((V, C), np.float32), "n_used": np.zeros(V, np.int64)}
           for key in runs}
    chunks = video_chunks(data.lengths)
    jobs = ((c, None, None) for c in chunks)
    for vids, (rows, _) in zip(chunks, data.batches(jobs, list(banks), device=device, flat=True)):
        x = fusion(*rows) if fusion is not None else rows[0]
        probs = torch.softmax(classifier(x), -1).cpu().numpy()
        ends = np.cumsum(data.lengths[vids])
        for key, choose in runs.items():
            res = out[key]
            for r, v in enumerate(vids):
                p = probs[ends[r] - data.lengths[v]:ends[r]]
                idx = choose(p)
                res["scores"][v] = p[idx].mean(0)
                res["n_used"][v] = len(idx)
        if progress is not None:
            progress(len(vids))
    return out
