"""``l2l evaluate``: skimming and the baselines on one subset of a store, written down.

Writes into ``out``: ``metrics.json`` (the shape below), ``predictions/<method>.json``
(ActivityNet classification results format, every class scored), ``tradeoff_steps.png``
(accuracy vs early-stop step k = 1..T, skim and uniform), ``tradeoff_stride.png`` (accuracy
vs index subsampling s in {1, 2, 4, 8}), ``montage.png`` when the store holds frames, and
``report.md`` with the table and the plots.

metrics.json: ``{"dataset", "subset", "num_videos", "methods": {name: {"mAP", "hit@1",
"hit@3", "top1", "gflops_per_video", "steps"}}}`` for skim, uniform, random, dense, saliency;
mAP and accuracies in percent; ``steps`` is T (dense: the mean number of moments, rounded).

What is here: orchestration, plots and files.  What is not: the metrics, baselines and costs
themselves (``metrics.py``, ``baselines.py``, ``cost.py``).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from l2l.evaluation import baselines as BL
from l2l.evaluation import cost as CO
from l2l.evaluation.metrics import results_from_scores, summary
from l2l.training.skim import FeatureSet, SkimError, load_skim, predict, resolve_device

STRIDES = (1, 2, 4, 8)
KEYS = ("mAP", "hit@1", "hit@3", "top1")


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


def evaluate(features, checkpoint, out, *, subset: str = "validation", seed: int = 0,
             batch_size: int = 256, device: str = "auto", montage: bool = True) -> dict:
    """Evaluate the skim checkpoint and the baselines on ``subset`` of store ``features``
    (a path or open store); write everything into ``out``; return the metrics.json dict."""
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
    dev = resolve_device(device)
    model.to(dev)
    cfg = model.config
    T = cfg.steps
    fusion, classifier, head_src = _heads(model, ck)
    base_banks = ("image", "audio") if fusion is not None else cfg.features[:1]
    rec = (ck.get("recognizer") or {}).get("features") or None
    data = FeatureSet.from_store(store, cfg.features, subset=subset, classes=classes,
                                 extra=[*base_banks, *([rec] if rec else [])]).labelled()
    if len(data) == 0:
        raise SkimError(f"{store.path}: no labelled {subset!r} videos to evaluate on")
    C = len(classes)
    costs, cost_src = CO.per_moment_costs(info, num_classes=C)
    moment_cost = sum(CO.bank_cost(costs, b) for b in base_banks) + \
        (costs["fusion"] if fusion is not None else 0) + costs["classifier"]
    index_cost = sum(CO.bank_cost(costs, b) for b in cfg.features)
    rec_cost = (CO.bank_cost(costs, rec) + 2 * model.recognizer.in_features * C) if rec else 0.0
    lengths = data.lengths

    def run_skim(steps=None, stride=1):
        probs, picks = predict(model, data, batch_size=batch_size, device=dev, steps=steps,
                               stride=stride, recognition=rec)
        chosen = np.array([len(set(np.concatenate([picks[n][v] for n in picks]).tolist()))
                           for v in range(len(data))])
        g = CO.skim_gflops(lengths, index_cost=index_cost, stride=stride,
                           skim=CO.skim_cost(model, steps=steps),
                           chosen=chosen if rec else None, recognition_cost=rec_cost)
        return probs, picks, g

    def score(probs):
        return summary(data.ids, probs, data.labels, classes)

    methods, scores, extra = {}, {}, {}
    probs, picks, g = run_skim()
    scores["skim"] = probs
    s = score(probs)
    methods["skim"] = {**{k: s[k] for k in KEYS}, "gflops_per_video": float(g.mean()), "steps": T}
    extra["skim"] = s["sklearn_macro_ap"]
    mprobs = BL.moment_probs(data, fusion=fusion, classifier=classifier, banks=base_banks,
                             device=dev)
    for name in BL.METHODS:
        sc, chosen = BL.run_baseline(mprobs, data.offsets, name, T, seed=seed)
        n_used = lengths if name in ("dense", "saliency") else np.array([len(c) for c in chosen])
        s = score(sc)
        scores[name] = sc
        methods[name] = {**{k: s[k] for k in KEYS},
                         "gflops_per_video": float(CO.sampled_gflops(n_used, moment_cost=moment_cost).mean()),
                         "steps": int(round(lengths.mean())) if name == "dense" else T}
        extra[name] = s["sklearn_macro_ap"]

    # trade-off curves
    curve_k = {"k": list(range(1, T + 1)), "skim": [], "uniform": [], "skim_gflops": []}
    for k in curve_k["k"]:
        p, _, gk = run_skim(steps=k)
        curve_k["skim"].append({m: score(p)[m] for m in ("mAP", "top1")})
        curve_k["skim_gflops"].append(float(gk.mean()))
        sc, _ = BL.run_baseline(mprobs, data.offsets, "uniform", k)
        curve_k["uniform"].append({m: score(sc)[m] for m in ("mAP", "top1")})
    curve_s = {"s": list(STRIDES), "skim": [], "gflops": []}
    for s in STRIDES:
        p, _, gs = run_skim(stride=s)
        curve_s["skim"].append({m: score(p)[m] for m in ("mAP", "top1")})
        curve_s["gflops"].append(float(gs.mean()))

    out.mkdir(parents=True, exist_ok=True)
    (out / "predictions").mkdir(exist_ok=True)
    for name, sc in scores.items():
        doc = {"version": "l2l skim evaluation, ActivityNet classification results format",
               "results": results_from_scores(data.ids, sc, classes),
               "external_data": {"used": True, "details": f"cached per-moment features of "
                                 f"{store.path.name}; method {name}"}}
        (out / "predictions" / f"{name}.json").write_text(json.dumps(doc))
    metrics = {"dataset": str(info.get("dataset") or store.path.stem), "subset": subset,
               "num_videos": len(data), "methods": methods}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out / "curves.json").write_text(json.dumps({"steps": curve_k, "stride": curve_s}, indent=2))
    plot_steps(curve_k, out / "tradeoff_steps.png")
    plot_stride(curve_s, out / "tradeoff_stride.png")
    montage_note = "no `frames` in the store: run `l2l visualize --videos DIR` for a montage"
    if montage and data.metas:
        try:
            from l2l.evaluation.visualize import visualize
            vid = data.ids[0]
            visualize(store, model, vid, out / "montage.png")
            montage_note = f"![montage](montage.png)\n\nPicks of the skim model on `{vid}`."
        except SkimError as e:
            montage_note = f"no montage: {e}"
    write_report(out / "report.md", metrics, extra, curve_k, curve_s,
                 notes={"head": head_src, "costs": cost_src, "recognition": rec,
                        "checkpoint": ck["path"], "montage": montage_note})
    return metrics


# ---- plots and the report ------------------------------------------------------------------
def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_steps(curve: dict, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, style in (("skim", "o-"), ("uniform", "s--")):
        for m, color in (("mAP", "C0"), ("top1", "C1")):
            ax.plot(curve["k"], [r[m] for r in curve[name]], style, color=color,
                    label=f"{name} {m}")
    ax.set_xlabel("steps k (moments looked at)")
    ax.set_ylabel("%")
    ax.set_title("Early stop: accuracy vs steps")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_stride(curve: dict, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for m, color in (("mAP", "C0"), ("top1", "C1")):
        ax.plot(curve["s"], [r[m] for r in curve["skim"]], "o-", color=color, label=f"skim {m}")
    for s, g, r in zip(curve["s"], curve["gflops"], curve["skim"]):
        ax.annotate(f"{g:.2f} GF", (s, r["mAP"]), textcoords="offset points", xytext=(0, 6),
                    fontsize=7, ha="center")
    ax.set_xscale("log", base=2)
    ax.set_xticks(curve["s"], [str(s) for s in curve["s"]])
    ax.set_xlabel("index subsampling factor s")
    ax.set_ylabel("%")
    ax.set_title("Sparse indexing features: accuracy vs s")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(path: Path, metrics: dict, sk_ap: dict, curve_k: dict, curve_s: dict,
                 notes: dict) -> None:
    lines = [f"# Skimming vs baselines: {metrics['dataset']} / {metrics['subset']}", "",
             f"{metrics['num_videos']} labelled videos.  mAP is ActivityNet's classification "
             "mAP; top-1 counts a video right when its best class is one of its labels; "
             "\"macro AP (sklearn)\" is scikit-learn's macro average precision on each video's "
             "first label, the number the authors' code reports (not ActivityNet's mAP).", "",
             "| method | steps | mAP | hit@1 | hit@3 | top-1 | macro AP (sklearn) | GFLOPs / video |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in metrics["methods"].items():
        lines.append(f"| {name} | {r['steps']} | {r['mAP']:.2f} | {r['hit@1']:.2f} | "
                     f"{r['hit@3']:.2f} | {r['top1']:.2f} | {sk_ap[name]:.2f} | "
                     f"{r['gflops_per_video']:.3f} |")
    lines += ["", "## Trade-offs", "", "![accuracy vs steps](tradeoff_steps.png)", "",
              "| k | skim mAP | skim top-1 | skim GFLOPs | uniform mAP | uniform top-1 |",
              "|---:|---:|---:|---:|---:|---:|"]
    for k, s, g, u in zip(curve_k["k"], curve_k["skim"], curve_k["skim_gflops"], curve_k["uniform"]):
        lines.append(f"| {k} | {s['mAP']:.2f} | {s['top1']:.2f} | {g:.3f} | {u['mAP']:.2f} | "
                     f"{u['top1']:.2f} |")
    lines += ["", "![accuracy vs subsampling](tradeoff_stride.png)", "",
              "| s | skim mAP | skim top-1 | GFLOPs |", "|---:|---:|---:|---:|"]
    for s, r, g in zip(curve_s["s"], curve_s["skim"], curve_s["gflops"]):
        lines.append(f"| {s} | {r['mAP']:.2f} | {r['top1']:.2f} | {g:.3f} |")
    lines += ["", "## Montage", "", notes["montage"], "", "## Notes", "",
              f"- checkpoint: `{notes['checkpoint']}`",
              f"- baselines classify with the {notes['head']}'s Psi and classifier",
              f"- per-moment costs: {'the store' if notes['costs'] == 'store' else 'counted on fresh models (the store has no flops_per_moment)'}",
              "- GFLOPs: computed moments x index-feature cost + skim network (flop counter) "
              "+ chosen moments x recognition cost; baselines: moments used x (image + audio "
              "+ Psi + classifier); saliency scores every moment, so it costs as dense",
              f"- skim recognises with {('a classifier on `' + notes['recognition'] + '` at the picked moments') if notes['recognition'] else 'its own classifier on the aggregated inputs'}",
              ""]
    path.write_text("\n".join(lines))
