"""Video-classification metrics: ActivityNet's official ones, top-1 accuracy, and (named apart)
the scikit-learn style macro average precision the paper's authors report.

What is here: pure numpy functions on ground truth, scores and ActivityNet-format results.
What is not: running models (``evaluation/baselines.py``), costs, plots or files.

Conventions: ``ground_truth`` maps video id -> its labels (class names, several for a
multi-label video); ``results`` is the ``"results"`` field of an ActivityNet classification
submission, video id -> list of ``{"label": name, "score": float}``.  Functions return
fractions in [0, 1]; ``summary`` turns them into the percentages that ``metrics.json`` holds.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


# ---- ActivityNet (eval_classification.py) -------------------------------------------------
def interpolated_ap(precision: np.ndarray, recall: np.ndarray) -> float:
    """All-point interpolated AP (VOC style, ActivityNet's ``interpolated_prec_rec``): the
    precision envelope integrated over the recall steps."""
    mprec = np.concatenate([[0.0], precision, [0.0]])
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mprec = np.maximum.accumulate(mprec[::-1])[::-1]
    idx = np.nonzero(mrec[1:] != mrec[:-1])[0] + 1
    return float(np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx]))


def average_precision_for_class(positives: set[str], known: set[str],
                                predictions: Sequence[tuple[str, float]]) -> float:
    """ActivityNet's ``compute_average_precision_classification`` for one class.

    positives: ids of the videos labelled with the class; known: every video id in the ground
    truth; predictions: (video id, score) pairs for this class, duplicates allowed.  Predictions
    for unknown videos are dropped; the rest are sorted by decreasing score (ties keep input
    order); a positive video matches its first prediction only, so repeats and predictions for
    videos without the class are false positives."""
    preds = [(v, s) for v, s in predictions if v in known]
    if not positives:
        raise ValueError("a class without ground-truth videos has no AP")
    order = sorted(range(len(preds)), key=lambda i: -preds[i][1])
    tp = np.zeros(len(preds))
    matched: set[str] = set()
    for rank, i in enumerate(order):
        vid = preds[i][0]
        if vid in positives and vid not in matched:
            tp[rank] = 1.0
            matched.add(vid)
    ctp = np.cumsum(tp)
    cfp = np.cumsum(1.0 - tp)
    recall = ctp / len(positives)
    precision = ctp / np.maximum(ctp + cfp, 1e-12)
    return interpolated_ap(precision, recall)


def activitynet_ap(ground_truth: Mapping[str, Sequence[str]],
                   results: Mapping[str, Sequence[Mapping]]) -> dict[str, float]:
    """Per-class AP, for every class that labels at least one ground-truth video (as the
    official script, whose class index is built from the ground truth)."""
    known = set(ground_truth)
    positives: dict[str, set[str]] = {}
    for vid, labels in ground_truth.items():
        for lab in set(labels):
            positives.setdefault(lab, set()).add(vid)
    per_class: dict[str, list[tuple[str, float]]] = {lab: [] for lab in positives}
    for vid, entries in results.items():
        for e in entries:
            if e["label"] in per_class:
                per_class[e["label"]].append((vid, float(e["score"])))
    return {lab: average_precision_for_class(positives[lab], known, per_class[lab])
            for lab in sorted(positives)}


def activitynet_map(ground_truth: Mapping[str, Sequence[str]],
                    results: Mapping[str, Sequence[Mapping]]) -> float:
    """ActivityNet classification mAP: the mean of ``activitynet_ap`` over classes."""
    ap = activitynet_ap(ground_truth, results)
    return float(np.mean(list(ap.values()))) if ap else float("nan")


def hit_at_k(ground_truth: Mapping[str, Sequence[str]],
             results: Mapping[str, Sequence[Mapping]], k: int) -> float:
    """Fraction of ground-truth videos with at least one of their labels among their k
    best-scored predictions (ActivityNet's ``compute_video_hit_at_k``, ``avg=False``); a video
    without predictions is a miss."""
    if not ground_truth:
        return float("nan")
    hits = 0
    for vid, labels in ground_truth.items():
        entries = sorted(results.get(vid, ()), key=lambda e: -float(e["score"]))[:k]
        top = {e["label"] for e in entries}
        hits += any(lab in top for lab in labels)
    return hits / len(ground_truth)


# ---- plain accuracy and the authors' macro AP ---------------------------------------------
def top1_accuracy(scores: np.ndarray, labels: Sequence[Sequence[int]]) -> float:
    """scores (V, C); labels: each video's class indices.  A video counts as right when its
    arg-max class is one of its labels."""
    scores = np.asarray(scores)
    pred = scores.argmax(1)
    y = label_matrix(labels, scores.shape[1])
    return float(np.mean(y[np.arange(len(pred)), pred]))


def binary_average_precision(y_true: np.ndarray, score: np.ndarray) -> float:
    """Non-interpolated AP as ``sklearn.metrics.average_precision_score`` computes it for one
    column: sum_n (R_n - R_{n-1}) P_n over the distinct score thresholds (tied scores enter
    together).  A column without positives gives 0 (scikit-learn >= 1.3 warns and does so)."""
    y_true = np.asarray(y_true, bool)
    if not y_true.any():
        return 0.0
    order = np.argsort(-np.asarray(score, float), kind="mergesort")
    s, y = np.asarray(score, float)[order], y_true[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]   # last index of each distinct score
    tps = np.cumsum(y)[last]
    fps = (last + 1) - tps
    precision = tps / (tps + fps)
    recall = tps / y.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def sklearn_macro_ap(labels: Sequence[int], scores: np.ndarray) -> float:
    """What ``average_precision_score(one_hot(labels), scores, average="macro")`` gives: the
    plain mean over all C columns of ``binary_average_precision``, one label per video.  This
    is the number the authors' code reports; it is not ActivityNet's mAP."""
    scores = np.asarray(scores, float)
    y = np.zeros(scores.shape, bool)
    y[np.arange(len(labels)), np.asarray(labels, int)] = True
    return float(np.mean([binary_average_precision(y[:, c], scores[:, c])
                          for c in range(scores.shape[1])]))


# ---- glue ---------------------------------------------------------------------------------
def results_from_scores(ids: Sequence[str], scores: np.ndarray, classes: Sequence[str],
                        top_k: int | None = None, only: set[str] | None = None
                        ) -> dict[str, list[dict]]:
    """ActivityNet ``results``: per video, its classes by decreasing score (all, or top_k).
    ``only``: keep just these class names (the official evaluator rejects a file naming a
    class that no ground-truth video of the subset has)."""
    scores = np.asarray(scores, float)
    keep = np.array([only is None or c in only for c in classes], bool)
    out = {}
    for vid, row in zip(ids, scores):
        order = [c for c in np.argsort(-row, kind="mergesort") if keep[c]][:top_k]
        out[vid] = [{"label": classes[c], "score": float(row[c])} for c in order]
    return out


def label_matrix(labels: Sequence[Sequence[int]], num_classes: int) -> np.ndarray:
    """(V, C) bool: video v has class c."""
    y = np.zeros((len(labels), num_classes), bool)
    for v, lab in enumerate(labels):
        y[v, list(lab)] = True
    return y


def activitynet_ap_matrix(y: np.ndarray, scores: np.ndarray, n_missing_pos: np.ndarray
                          ) -> np.ndarray:
    """``activitynet_ap`` on a score matrix, without building results: y (V, C) bool labels of
    the predicted videos, scores (V, C) (every video scores every class, as
    ``results_from_scores`` writes them), n_missing_pos (C,) positives of each class among
    listed videos without a prediction.  Returns (C,) AP, NaN for a class without positives.
    Same values as ``activitynet_ap`` on ``results_from_scores`` (ties ranked in video order)."""
    V, C = y.shape
    scores = np.asarray(scores, float)
    order = np.argsort(-scores, axis=0, kind="stable")              # (V, C): per class, ranks
    tp = np.take_along_axis(y, order, 0).astype(float)
    ctp = np.cumsum(tp, 0)
    cfp = np.cumsum(1.0 - tp, 0)
    npos = y.sum(0) + np.asarray(n_missing_pos)
    out = np.full(C, np.nan)
    for c in np.nonzero(npos)[0]:
        recall = ctp[:, c] / npos[c]
        precision = ctp[:, c] / np.maximum(ctp[:, c] + cfp[:, c], 1e-12)
        out[c] = interpolated_ap(precision, recall)
    return out


def summary(ids: Sequence[str], scores: np.ndarray, labels: Sequence[Sequence[int]],
            classes: Sequence[str], missing: Mapping[str, Sequence[int]] | None = None
            ) -> dict[str, float]:
    """mAP, hit@1, hit@3, top1 (percentages) and sklearn_macro_ap (percentage, on each
    video's first label) for video-level scores (V, C) (softmax probabilities).

    ``missing``: listed videos (id -> class indices) with no prediction at all (failed or not
    extracted).  They join the ground truth with no results, as the official evaluator counts
    them: never retrieved for AP, a miss for hit@k and top-1; sklearn_macro_ap stays over the
    predicted videos (it needs a score row per video).

    Computed on the matrices (no per-video or per-prediction Python work), with the values of
    ``activitynet_map``/``hit_at_k``/``top1_accuracy`` on ``results_from_scores`` (a test
    checks they agree)."""
    scores = np.asarray(scores)
    C = len(classes)
    known = set(ids)
    extra = [lab for vid, lab in (missing or {}).items() if vid not in known]
    n_missing = len(extra)
    y = label_matrix(labels, C)
    miss_pos = label_matrix(extra, C).sum(0) if extra else np.zeros(C, np.int64)
    ap = activitynet_ap_matrix(y, scores, miss_pos)
    n_gt = len(ids) + n_missing
    ranked = np.argsort(-np.asarray(scores, float), axis=1, kind="mergesort")  # results' order
    rows = np.arange(len(ids))[:, None]
    hit = {k: float(y[rows, ranked[:, :k]].any(1).sum()) / n_gt if n_gt else float("nan")
           for k in (1, 3)}
    top1 = top1_accuracy(scores, labels) if len(ids) else 0.0
    by_name = [ap[c] for c in sorted(range(C), key=lambda c: classes[c]) if np.isfinite(ap[c])]
    return {"mAP": 100 * (float(np.mean(by_name)) if by_name else float("nan")),
            "hit@1": 100 * hit[1],
            "hit@3": 100 * hit[3],
            "top1": 100 * top1 * len(ids) / max(n_gt, 1),
            "sklearn_macro_ap": 100 * sklearn_macro_ap([lab[0] for lab in labels], scores)}
