"""Metrics against numbers worked out by hand (see the comments for the arithmetic)."""
from __future__ import annotations

import numpy as np
import pytest

from l2l.evaluation import metrics as M

# Ground truth: v2 is multi-label.  Results include a duplicate prediction (v1, A) and a video
# the ground truth does not know (vX), scored highest of all.
GT = {"v1": ["A"], "v2": ["A", "B"], "v3": ["B"], "v4": ["C"]}
RESULTS = {
    "v1": [{"label": "A", "score": 0.9}, {"label": "B", "score": 0.1}, {"label": "A", "score": 0.5}],
    "v2": [{"label": "A", "score": 0.3}, {"label": "B", "score": 0.8}],
    "v3": [{"label": "B", "score": 0.6}, {"label": "A", "score": 0.7}],
    "v4": [{"label": "C", "score": 0.4}, {"label": "A", "score": 0.2}],
    "vX": [{"label": "A", "score": 0.95}, {"label": "B", "score": 0.99}],
}


def test_activitynet_ap_by_hand():
    ap = M.activitynet_ap(GT, RESULTS)
    # A: positives {v1, v2}; ranked v1 .9 TP, v3 .7 FP, v1 .5 FP (duplicate), v2 .3 TP, v4 .2 FP
    #    precision 1, 1/2, 1/3, 2/4, 2/5; recall .5 .5 .5 1 1 -> envelope 1 at .5, .5 at 1
    #    AP = .5 * 1 + .5 * .5 = .75   (vX ignored; dropping the duplicate instead would give .8333;
    #    counting vX as a false positive would give .45)
    assert ap["A"] == pytest.approx(0.75)
    # B: v2 .8 TP, v3 .6 TP, v1 .1 FP -> 1.0 (vX at .99 ignored, else 2/3)
    assert ap["B"] == pytest.approx(1.0)
    assert ap["C"] == pytest.approx(1.0)
    assert M.activitynet_map(GT, RESULTS) == pytest.approx((0.75 + 1 + 1) / 3)


def test_hit_at_k_by_hand():
    # top-1: v1 A (hit), v2 B (hit, B is one of its labels), v3 A (miss), v4 C (hit)
    assert M.hit_at_k(GT, RESULTS, 1) == pytest.approx(0.75)
    assert M.hit_at_k(GT, RESULTS, 3) == pytest.approx(1.0)
    # a ground-truth video without predictions is a miss
    assert M.hit_at_k({**GT, "v5": ["C"]}, RESULTS, 3) == pytest.approx(0.8)


def test_sklearn_style_macro_ap_by_hand():
    labels = [0, 1, 1, 2]
    scores = np.array([[0.9, 0.05, 0.05, 0.0],
                       [0.2, 0.7, 0.1, 0.0],
                       [0.9, 0.1, 0.0, 0.0],
                       [0.1, 0.3, 0.6, 0.0]])
    # class 0: the positive ties with a negative at .9 -> one threshold, P = .5, R = 1 -> .5
    # class 1: thresholds .7 (P 1, R .5), .3 (P .5, R .5), .1 (P 2/3, R 1), .05 -> 1/2 + 1/3
    # class 2: the positive is ranked first -> 1;  class 3: no positive -> 0
    assert M.binary_average_precision(np.array([1, 0, 0, 0]), scores[:, 0]) == pytest.approx(0.5)
    assert M.binary_average_precision(np.array([0, 1, 1, 0]), scores[:, 1]) == pytest.approx(5 / 6)
    assert M.sklearn_macro_ap(labels, scores) == pytest.approx((0.5 + 5 / 6 + 1 + 0) / 4)


def test_top1_and_summary_percentages():
    classes = ["A", "B", "C"]
    scores = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.5, 0.4, 0.1]])
    labels = [[0], [0, 1], [1]]
    assert M.top1_accuracy(scores, labels) == pytest.approx(2 / 3)
    s = M.summary(["a", "b", "c"], scores, labels, classes)
    assert s["top1"] == pytest.approx(100 * 2 / 3)
    assert s["hit@1"] == pytest.approx(100 * 2 / 3)
    assert s["hit@3"] == pytest.approx(100.0)
    # A: a .7 TP, c .5 FP, b .1 TP -> .5 + .5 * 2/3;  B: b .6 TP, c .4 TP, a .2 -> 1
    assert s["mAP"] == pytest.approx(100 * ((0.5 + 1 / 3) + 1) / 2)
    res = M.results_from_scores(["a"], scores[:1], classes, top_k=2)
    assert [e["label"] for e in res["a"]] == ["A", "B"]


def test_ap_needs_positives():
    with pytest.raises(ValueError):
        M.average_precision_for_class(set(), {"v"}, [("v", 1.0)])


def _slow_summary(ids, scores, labels, classes, missing=None):
    """``summary`` as it was: through ActivityNet results dicts (the official evaluator's way)."""
    gt = {vid: [classes[c] for c in lab] for vid, lab in zip(ids, labels)}
    n_missing = 0
    for vid, lab in (missing or {}).items():
        if vid not in gt:
            gt[vid] = [classes[c] for c in lab]
            n_missing += 1
    res = M.results_from_scores(ids, scores, classes)
    return {"mAP": 100 * M.activitynet_map(gt, res), "hit@1": 100 * M.hit_at_k(gt, res, 1),
            "hit@3": 100 * M.hit_at_k(gt, res, 3),
            "top1": 100 * M.top1_accuracy(scores, labels) * len(ids) / (len(ids) + n_missing)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matrix_summary_equals_the_results_path(seed):
    """The vectorised summary gives exactly the values of the results-dict path: ties (scores
    rounded to 2 decimals), multi-label videos, classes without videos, missing videos."""
    rng = np.random.default_rng(seed)
    V, C = 300, 17
    classes = [f"c{c:02d}" for c in rng.permutation(C)]           # names not in index order
    scores = np.round(rng.random((V, C)), 2).astype(np.float32)
    labels = [list(rng.choice(C - 2, size=rng.integers(1, 3), replace=False)) for _ in range(V)]
    ids = [f"v{i}" for i in range(V)]
    missing = {"gone1": [0], "gone2": [C - 1], "v3": [1]}             # v3 is not missing
    for miss in (None, missing):
        got = M.summary(ids, scores, labels, classes, miss)
        want = _slow_summary(ids, scores, labels, classes, miss)
        for k, v in want.items():
            assert got[k] == v, (k, got[k], v)


def test_macro_ap_equals_scikit_learn():
    """The numpy macro AP is scikit-learn's average_precision_score(average="macro") on one-hot
    labels (scikit-learn is a test extra, not a dependency): ties, a class without videos."""
    from sklearn.metrics import average_precision_score
    rng = np.random.default_rng(3)
    V, C = 400, 12
    labels = rng.integers(0, C - 1, size=V)                  # class C-1 labels no video
    scores = np.round(rng.random((V, C)), 2)
    scores /= scores.sum(1, keepdims=True)
    y = np.zeros((V, C), int)
    y[np.arange(V), labels] = 1
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                     # its no-positive-class warning
        want = average_precision_score(y, scores, average="macro")
    assert M.sklearn_macro_ap(labels, scores) == pytest.approx(want, abs=1e-12)
