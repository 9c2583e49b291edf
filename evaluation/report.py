"""``l2l evaluate``: skimming and the baselines on one subset of a store, written down.

Writes into ``out``: ``metrics.json`` (the shape below), ``predictions/<method>.json`` (the
ActivityNet classification results format, naming only classes that label a video of the
subset, as the official evaluator requires), ``tradeoff_steps.png`` (accuracy vs early-stop
step k = 1..T, skim and uniform), ``tradeoff_stride.png`` (accuracy vs index subsampling s in
{1, 2, 4, 5, 8, 10, 20}, plain and interpolated: the paper's four points are s = 20, 10, 5, 2),
``tradeoff_gflops.png`` (accuracy vs GFLOPs per video: the authors' metric, scikit-learn macro
AP, beside the paper's ActivityNet points, and the official mAP next to it), ``montage.png``
when the store holds frames, ``curves.json`` and ``report.md`` with the tables and the plots
(``figures.py``).

metrics.json: ``{"dataset", "subset", "num_videos", "num_listed", "listed_from", "units",
"dense_gflops_per_moment", "methods": {name: ROW}, "variants": {"unaggregated": ROW},
"all_listed": {name: {"mAP", "hit@1", "hit@3", "top1"}}}`` with ROW = ``{"mAP", "hit@1",
"hit@3", "top1", "sklearn_macro_ap", "gflops_per_video", "torch_gflops_per_video", "steps"}``,
for skim and every registered baseline.  ``methods`` scores the extracted (labelled) videos;
``variants`` the skim model run unaggregated (the features at argmax w each step, supplement
G.3); ``all_listed`` scores every listed video of the subset, those that failed or were never
extracted counting as misses (no prediction), as the official evaluator counts them; the list
is the data set's (``--annotations``) or else the store's videos and the failures it recorded
with their subset and labels (``listed_from`` says which).
Accuracies in percent; GFLOPs in the paper's unit (1e9 multiply-adds), the torch count (2 per
multiply-add) beside it; ``steps`` is T (a baseline that uses every moment: the mean number of
moments, rounded).

What is here: orchestration and files.  Every skim variant runs in one pass over the videos and
every baseline in another (``passes.py``); each early stop k comes from the one T-step run.
The features are held in memory, or streamed from the store when they would not fit in the
memory budget (``featureset.py``).  What is not: the metrics, baselines, costs and plots
themselves (``metrics.py``, ``baselines.py``, ``cost.py``, ``figures.py``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from l2l.evaluation import baselines as BL
from l2l.evaluation import cost as CO
from l2l.evaluation.featureset import FeatureSet, choose_streaming, labelled_ids, memory_budget
from l2l.evaluation.figures import plot_gflops, plot_steps, plot_stride, write_report
from l2l.evaluation.metrics import results_from_scores, summary
from l2l.evaluation.passes import Variant, baseline_pass, skim_pass
from l2l.models.skim import SkimError, load_skim, resolve_device

STRIDES = (1, 2, 4, 5, 8, 10, 20)
KEYS = ("mAP", "hit@1", "hit@3", "top1")
CURVE_KEYS = ("mAP", "top1", "sklearn_macro_ap")


def _heads(model, ck):
    """Psi and classifier for the baselines: the student's as saved at training time, else
    the skim model's own."""
    from copy import deepcopy
    fusion, classifier = deepcopy(model.fusion), deepcopy(model.classifier)
    head = ck.get("head")
    if head:
        if fusion is not None and head.get("fusion"):
            fusion.load_state_dict(head["fusion"])
        classifier.load_state_dict(head["classifier"])
    return fusion, classifier, ("student" if head else "skim model")


def _listed(store, data: FeatureSet, subset: str, listed):
    """(id -> label names of every listed video, where the list came from).  Without a data
    set's list: the store's labelled videos of the subset and the failures it recorded with
    that subset and labels."""
    if listed is not None:
        return dict(listed), "the data set's list (--dataset/--annotations)"
    out = {m.id: list(m.labels) for m in data.metas}
    fails = store.failures()
    kept = [f for f in fails if f.subset == subset and f.labels and f.id not in out]
    out.update({f.id: list(f.labels) for f in kept})
    src = (f"the store: its {len(data)} labelled {subset!r} videos and the {len(kept)} failed "
           "videos it recorded with their subset and labels")
    unknown = sum(1 for f in fails if not f.subset and f.id not in out)
    if unknown:
        src += (f" ({unknown} failures recorded without a subset, by an older l2l, are not "
                "counted: pass --dataset/--annotations to count them)")
    return out, src


def evaluate(features, checkpoint, out, *, subset: str = "validation", seed: int = 0,
             batch_size: int = 256, device: str = "auto", montage: bool = True,
             listed: Mapping[str, Sequence[str]] | None = None, progress: bool = False,
             memory_budget_gb: float | None = None) -> dict:
    """Evaluate the skim checkpoint and the baselines on ``subset`` of store ``features``
    (a path or open store); write everything into ``out``; return the metrics.json dict.
    ``listed``: every video the data set lists in ``subset`` (id -> label names), for the
    "all listed videos" row; None: the store's videos of the subset and its recorded
    failures.  ``memory_budget_gb``: the features are streamed from the store when the
    subset's would not fit in it (None: a quarter of the machine's RAM)."""
    from tqdm.auto import tqdm
    from l2l.store import Store, StoreError, open_store
    out = Path(out)
    model, ck = load_skim(checkpoint)
    try:
        store = features if isinstance(features, Store) else open_store(features)
        info = store.info()
    except StoreError as e:
        raise SkimError(str(e)) from None
    classes = list(info.get("classes") or [])
    if classes != list(ck["classes"]):
        raise SkimError(f"checkpoint {ck['path']} was trained on {len(ck['classes'])} classes "
                        f"that differ from the store's {len(classes)}")
    budget = memory_budget(memory_budget_gb)
    dev = resolve_device(device)
    model.to(dev)
    cfg = model.config
    T = cfg.steps
    fusion, classifier, head_src = _heads(model, ck)
    base_banks = ("image", "audio") if fusion is not None else cfg.features[:1]
    rec = (ck.get("recognizer") or {}).get("features") or None
    extra = [*base_banks, *([rec] if rec else [])]
    names = list(dict.fromkeys([*cfg.features, *extra]))
    ids = labelled_ids(store, subset)
    stream = choose_streaming(store, [(names, ids)], budget)[0]
    data = FeatureSet.from_store(store, cfg.features, subset=subset, classes=classes, ids=ids,
                                 extra=extra, stream=stream)
    if len(data) == 0:
        raise SkimError(f"{store.path}: no labelled {subset!r} videos to evaluate on")
    C = len(classes)
    index = {c: i for i, c in enumerate(classes)}
    listed, listed_src = _listed(store, data, subset, listed)
    unknown = sorted({lab for labs in listed.values() for lab in labs if lab not in index})
    if unknown:
        raise SkimError(f"the listed {subset!r} videos have label(s) {unknown[:3]} outside the "
                        "store's classes: not the annotations of this store")
    have = set(data.ids)
    missing = {v: [index[lab] for lab in labs] for v, labs in listed.items()
               if labs and v not in have}
    in_gt = {lab for labs in listed.values() for lab in labs} | \
        {classes[c] for lab in data.labels for c in lab}
    costs, cost_src = CO.per_moment_costs(info, num_classes=C)
    moment_cost = sum(CO.bank_cost(costs, b) for b in base_banks) + \
        (costs["fusion"] if fusion is not None else 0) + costs["classifier"]
    index_cost = sum(CO.bank_cost(costs, b) for b in cfg.features)
    rec_cost = (CO.bank_cost(costs, rec) + 2 * model.recognizer.in_features * C) if rec else 0.0
    lengths = data.lengths

    # one pass of every skim variant, one of every baseline (see passes.py)
    variants = [Variant()] + [Variant(s, interp) for s in STRIDES[1:] for interp in (False, True)] \
        + [Variant(aggregated=False)]
    bar = tqdm(total=2 * len(data), desc="evaluate", unit="video", disable=not progress,
               leave=False)
    sk = skim_pass(model, data, variants, batch_size=batch_size, device=dev, recognition=rec,
                   progress=bar.update)
    ks = list(range(1, T + 1))
    bl = baseline_pass(data, fusion=fusion, classifier=classifier, banks=base_banks, t=T, ks=ks,
                       seed=seed, device=dev, progress=bar.update)
    bar.close()

    fits: dict = {}                     # the skim network's cost fit, per (steps, aggregated)

    def skim_g(chosen, k=T, stride=1, aggregated=True):
        """Per video GFLOPs (paper's unit) of skimming with these settings."""
        if (k, aggregated) not in fits:
            fits[k, aggregated] = CO.skim_cost(model, steps=k, aggregated=aggregated)
        g = CO.skim_gflops(lengths, index_cost=index_cost, stride=stride, skim=fits[k, aggregated],
                           chosen=chosen if rec else None, recognition_cost=rec_cost)
        return CO.paper_gflops(g)

    def score(probs, all_listed=False):
        return summary(data.ids, probs, data.labels, classes, missing if all_listed else None)

    def row(probs, g, steps):
        s = score(probs)
        return {**{k: s[k] for k in KEYS}, "gflops_per_video": g, "torch_gflops_per_video": 2 * g,
                "steps": steps, "sklearn_macro_ap": s["sklearn_macro_ap"]}

    main = sk[Variant().key]
    methods, scores = {}, {"skim": main["probs"]}
    methods["skim"] = row(main["probs"], float(skim_g(main["chosen"]).mean()), T)
    un = sk[Variant(aggregated=False).key]
    variants_out = {"unaggregated": row(un["probs"], float(skim_g(un["chosen"], aggregated=False).mean()), T)}
    for name, b in BL.BASELINES.items():
        r = bl[name]
        n_used = lengths if b.scores_all else r["n_used"]
        g = CO.paper_gflops(float(CO.sampled_gflops(n_used, moment_cost=moment_cost).mean()))
        scores[name] = r["scores"]
        methods[name] = row(r["scores"], g, int(round(lengths.mean())) if b.all_steps else T)
    all_listed = {name: {k: score(sc, True)[k] for k in KEYS} for name, sc in scores.items()}

    # trade-off curves (GFLOPs in the paper's unit)
    curve_k = {"k": ks, "skim": [], "uniform": [], "skim_gflops": [], "uniform_gflops": []}
    for k in ks:
        curve_k["skim"].append({m: score(sk["k"]["probs"][k - 1])[m] for m in CURVE_KEYS})
        curve_k["skim_gflops"].append(float(skim_g(sk["k"]["chosen"][k - 1], k=k).mean()))
        u = bl["uniform", k]
        curve_k["uniform"].append({m: score(u["scores"])[m] for m in CURVE_KEYS})
        curve_k["uniform_gflops"].append(
            float(CO.paper_gflops(CO.sampled_gflops(u["n_used"], moment_cost=moment_cost)).mean()))
    curve_s = {"s": list(STRIDES), "skim": [], "interpolated": [], "gflops": []}
    for s in STRIDES:
        for key, interp in (("skim", False), ("interpolated", True)):
            r = sk[Variant(s, interp).key]
            curve_s[key].append({m: score(r["probs"])[m] for m in CURVE_KEYS})
        curve_s["gflops"].append(float(skim_g(sk[Variant(s).key]["chosen"], stride=s).mean()))

    out.mkdir(parents=True, exist_ok=True)
    (out / "predictions").mkdir(exist_ok=True)
    for name, sc in scores.items():
        doc = {"version": "VERSION 1.3",
               "results": results_from_scores(data.ids, sc, classes, only=in_gt),
               "external_data": {"used": True, "details": f"cached per-moment features of "
                                 f"{store.path.name}; l2l method {name}"}}
        (out / "predictions" / f"{name}.json").write_text(json.dumps(doc))
    metrics = {"dataset": str(info.get("dataset") or store.path.stem), "subset": subset,
               "num_videos": len(data), "num_listed": len(data) + len(missing),
               "listed_from": listed_src, "units": CO.UNIT_NOTE,
               "dense_gflops_per_moment": CO.paper_gflops(moment_cost / 1e9),
               "methods": methods, "variants": variants_out, "all_listed": all_listed}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out / "curves.json").write_text(json.dumps({"steps": curve_k, "stride": curve_s}, indent=2))
    plot_steps(curve_k, out / "tradeoff_steps.png")
    plot_stride(curve_s, out / "tradeoff_stride.png")
    plot_gflops(methods, curve_k, curve_s, out / "tradeoff_gflops.png")
    montage_note = "no `frames` in the store: run `l2l visualize --videos DIR` for a montage"
    if montage and data.metas:
        try:
            from l2l.evaluation.visualize import visualize
            vid = data.ids[0]
            visualize(store, model, vid, out / "montage.png")
            montage_note = f"![montage](montage.png)\n\nPicks of the skim model on `{vid}`."
        except SkimError as e:
            montage_note = f"no montage: {e}"
    write_report(out / "report.md", metrics, curve_k, curve_s,
                 notes={"head": head_src, "costs": cost_src, "recognition": rec,
                        "checkpoint": ck["path"], "montage": montage_note})
    return metrics
