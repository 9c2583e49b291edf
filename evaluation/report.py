"""``l2l evaluate``: skimming and the baselines on one subset of a store, written down.

Writes into ``out``: ``metrics.json`` (the shape below), ``predictions/<method>.json`` (the
ActivityNet classification results format, naming only classes that label a video of the
subset, as the official evaluator requires), ``tradeoff_steps.png`` (accuracy vs early-stop
step k = 1..T, skim and uniform), ``tradeoff_stride.png`` (accuracy vs index subsampling s in
{1, 2, 4, 8}, plain and interpolated), ``tradeoff_gflops.png`` (mAP vs GFLOPs per video, with
the paper's ActivityNet points for reference), ``montage.png`` when the store holds frames,
``curves.json`` and ``report.md`` with the tables and the plots.

metrics.json: ``{"dataset", "subset", "num_videos", "num_listed", "units",
"dense_gflops_per_moment", "methods": {name: {"mAP", "hit@1", "hit@3", "top1",
"gflops_per_video", "torch_gflops_per_video", "steps"}}, "all_listed": {name: {"mAP", "hit@1",
"hit@3", "top1"}}}`` for skim and every registered baseline.  ``methods`` scores the extracted
(labelled) videos; ``all_listed`` scores every listed video of the subset, those that failed or
were never extracted counting as misses (no prediction), as the official evaluator counts them.
Accuracies in percent; GFLOPs in the paper's unit (1e9 multiply-adds), the torch count (2 per
multiply-add) beside it; ``steps`` is T (a baseline that uses every moment: the mean number of
moments, rounded).

What is here: orchestration, plots and files.  What is not: the metrics, baselines and costs
themselves (``metrics.py``, ``baselines.py``, ``cost.py``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from l2l.evaluation import baselines as BL
from l2l.evaluation import cost as CO
from l2l.evaluation.featureset import FeatureSet, predict
from l2l.evaluation.metrics import results_from_scores, summary
from l2l.models.skim import SkimError, load_skim, resolve_device

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
             batch_size: int = 256, device: str = "auto", montage: bool = True,
             listed: Mapping[str, Sequence[str]] | None = None, progress: bool = False) -> dict:
    """Evaluate the skim checkpoint and the baselines on ``subset`` of store ``features``
    (a path or open store); write everything into ``out``; return the metrics.json dict.
    ``listed``: every video the data set lists in ``subset`` (id -> label names), for the
    "all listed videos" row; None: the store's videos of the subset."""
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
    index = {c: i for i, c in enumerate(classes)}
    listed_src = "the data set's list" if listed is not None else "the store"
    if listed is None:
        listed = {m.id: list(m.labels) for m in data.metas}
    unknown = sorted({lab for labs in listed.values() for lab in labs if lab not in index})
    if unknown:
        raise SkimError(f"the listed {subset!r} videos have label(s) {unknown[:3]} outside the "
                        "store's classes: not the annotations of this store")
    missing = {v: [index[lab] for lab in labs] for v, labs in listed.items()
               if labs and v not in set(data.ids)}
    in_gt = {lab for labs in listed.values() for lab in labs} | \
        {classes[c] for lab in data.labels for c in lab}
    costs, cost_src = CO.per_moment_costs(info, num_classes=C)
    moment_cost = sum(CO.bank_cost(costs, b) for b in base_banks) + \
        (costs["fusion"] if fusion is not None else 0) + costs["classifier"]
    index_cost = sum(CO.bank_cost(costs, b) for b in cfg.features)
    rec_cost = (CO.bank_cost(costs, rec) + 2 * model.recognizer.in_features * C) if rec else 0.0
    lengths = data.lengths
    jobs = 2 + len(BL.BASELINES) + 2 * T + 2 * len(STRIDES)
    bar = tqdm(total=jobs, desc="evaluate", unit="run", disable=not progress, leave=False)

    fits: dict = {}                     # the skim network's cost fit, per number of steps

    def run_skim(steps=None, stride=1, interpolate=False):
        probs, picks = predict(model, data, batch_size=batch_size, device=dev, steps=steps,
                               stride=stride, interpolate=interpolate, recognition=rec)
        chosen = np.array([len(set(np.concatenate([picks[n][v] for n in picks]).tolist()))
                           for v in range(len(data))])
        k = T if steps is None else steps
        if k not in fits:
            fits[k] = CO.skim_cost(model, steps=k)
        g = CO.skim_gflops(lengths, index_cost=index_cost, stride=stride, skim=fits[k],
                           chosen=chosen if rec else None, recognition_cost=rec_cost)
        bar.update()
        return probs, picks, CO.paper_gflops(g)

    def score(probs, all_listed=False):
        return summary(data.ids, probs, data.labels, classes, missing if all_listed else None)

    def row(probs, torch_g, steps):
        s = score(probs)
        return ({**{k: s[k] for k in KEYS}, "gflops_per_video": torch_g / 2,
                 "torch_gflops_per_video": torch_g, "steps": steps}, s["sklearn_macro_ap"])

    methods, scores, extra = {}, {}, {}
    probs, picks, g = run_skim()
    scores["skim"] = probs
    methods["skim"], extra["skim"] = row(probs, float(g.mean()) * 2, T)
    mprobs = BL.moment_probs(data, fusion=fusion, classifier=classifier, banks=base_banks,
                             device=dev)
    bar.update()
    for name, b in BL.BASELINES.items():
        sc, chosen = BL.run_baseline(mprobs, data.offsets, name, T, seed=seed)
        n_used = lengths if b.scores_all else np.array([len(c) for c in chosen])
        torch_g = float(CO.sampled_gflops(n_used, moment_cost=moment_cost).mean())
        scores[name] = sc
        methods[name], extra[name] = row(sc, torch_g, int(round(lengths.mean())) if b.all_steps else T)
        bar.update()
    all_listed = {name: {k: score(sc, True)[k] for k in KEYS} for name, sc in scores.items()}

    # trade-off curves (GFLOPs in the paper's unit)
    curve_k = {"k": list(range(1, T + 1)), "skim": [], "uniform": [], "skim_gflops": [],
               "uniform_gflops": []}
    for k in curve_k["k"]:
        p, _, gk = run_skim(steps=k)
        curve_k["skim"].append({m: score(p)[m] for m in ("mAP", "top1")})
        curve_k["skim_gflops"].append(float(gk.mean()))
        sc, chosen = BL.run_baseline(mprobs, data.offsets, "uniform", k)
        curve_k["uniform"].append({m: score(sc)[m] for m in ("mAP", "top1")})
        n_used = np.array([len(c) for c in chosen])
        curve_k["uniform_gflops"].append(
            float(CO.paper_gflops(CO.sampled_gflops(n_used, moment_cost=moment_cost)).mean()))
        bar.update()
    curve_s = {"s": list(STRIDES), "skim": [], "interpolated": [], "gflops": []}
    for s in STRIDES:
        for key, interp in (("skim", False), ("interpolated", True)):
            p, _, gs = run_skim(stride=s, interpolate=interp)
            curve_s[key].append({m: score(p)[m] for m in ("mAP", "top1")})
        curve_s["gflops"].append(float(gs.mean()))
    bar.close()

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
               "units": CO.UNIT_NOTE,
               "dense_gflops_per_moment": CO.paper_gflops(moment_cost / 1e9),
               "methods": methods, "all_listed": all_listed}
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
    write_report(out / "report.md", metrics, extra, curve_k, curve_s,
                 notes={"head": head_src, "costs": cost_src, "recognition": rec,
                        "checkpoint": ck["path"], "montage": montage_note,
                        "listed": listed_src})
    return metrics


# ---- plots and the report ------------------------------------------------------------------
def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, ax, path: Path) -> None:
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)


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
    _save(fig, ax, path)


def plot_stride(curve: dict, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for key, style in (("skim", "o-"), ("interpolated", "^:")):
        for m, color in (("mAP", "C0"), ("top1", "C1")):
            ax.plot(curve["s"], [r[m] for r in curve[key]], style, color=color,
                    label=f"{'every s-th moment' if key == 'skim' else 'interpolated'} {m}")
    for s, g, r in zip(curve["s"], curve["gflops"], curve["skim"]):
        ax.annotate(f"{g:.2f} GF", (s, r["mAP"]), textcoords="offset points", xytext=(0, 6),
                    fontsize=7, ha="center")
    ax.set_xscale("log", base=2)
    ax.set_xticks(curve["s"], [str(s) for s in curve["s"]])
    ax.set_xlabel("index subsampling factor s (GF: GFLOPs per video, multiply-adds)")
    ax.set_ylabel("%")
    ax.set_title("Sparse indexing features: accuracy vs s")
    _save(fig, ax, path)


def plot_gflops(methods: dict, curve_k: dict, curve_s: dict, path: Path) -> None:
    """mAP vs GFLOPs per video (multiply-adds): skim over s and k, uniform over k, every
    method's point, and the paper's ActivityNet skimming points for reference."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(curve_s["gflops"], [r["mAP"] for r in curve_s["skim"]], "o-", color="C0",
            label="skim, subsampling s")
    ax.plot(curve_k["skim_gflops"], [r["mAP"] for r in curve_k["skim"]], "o:", color="C2",
            label="skim, early stop k")
    ax.plot(curve_k["uniform_gflops"], [r["mAP"] for r in curve_k["uniform"]], "s--",
            color="C1", label="uniform, k moments")
    for name, r in methods.items():
        ax.scatter([r["gflops_per_video"]], [r["mAP"]], marker="x", color="k", zorder=3)
        ax.annotate(name, (r["gflops_per_video"], r["mAP"]), textcoords="offset points",
                    xytext=(3, 3), fontsize=7)
    ref = CO.PAPER_ACTIVITYNET
    ax.plot(ref["gflops"], ref["mAP"], "D-", color="0.6",
            label="paper, ActivityNet (reference)")
    ax.set_xscale("log")
    ax.set_xlabel("GFLOPs per video (1e9 multiply-adds, the paper's unit)")
    ax.set_ylabel("mAP %")
    ax.set_title("Accuracy vs cost")
    _save(fig, ax, path)


def write_report(path: Path, metrics: dict, sk_ap: dict, curve_k: dict, curve_s: dict,
                 notes: dict) -> None:
    n, n_all = metrics["num_videos"], metrics["num_listed"]
    lines = [f"# Skimming vs baselines: {metrics['dataset']} / {metrics['subset']}", "",
             f"{n} extracted labelled videos of {n_all} listed ({notes['listed']}).  mAP is "
             "ActivityNet's classification mAP; top-1 counts a video right when its best class "
             "is one of its labels; \"macro AP (sklearn)\" is scikit-learn's macro average "
             "precision on each video's first label, the number the authors' code reports (not "
             f"ActivityNet's mAP).  {CO.UNIT_NOTE}.", "",
             "| method | videos | steps | mAP | hit@1 | hit@3 | top-1 | macro AP (sklearn) | GFLOPs / video |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in metrics["methods"].items():
        a = metrics["all_listed"][name]
        lines.append(f"| {name} | extracted ({n}) | {r['steps']} | {r['mAP']:.2f} | "
                     f"{r['hit@1']:.2f} | {r['hit@3']:.2f} | {r['top1']:.2f} | "
                     f"{sk_ap[name]:.2f} | {r['gflops_per_video']:.3f} |")
        lines.append(f"| {name} | all listed ({n_all}) | {r['steps']} | {a['mAP']:.2f} | "
                     f"{a['hit@1']:.2f} | {a['hit@3']:.2f} | {a['top1']:.2f} | | |")
    lines += ["", f"Dense cost per moment: {metrics['dense_gflops_per_moment']:.3f} GFLOPs.",
              "", "## Trade-offs", "", "![accuracy vs cost](tradeoff_gflops.png)", "",
              "![accuracy vs steps](tradeoff_steps.png)", "",
              "| k | skim mAP | skim top-1 | skim GFLOPs | uniform mAP | uniform top-1 |",
              "|---:|---:|---:|---:|---:|---:|"]
    for k, s, g, u in zip(curve_k["k"], curve_k["skim"], curve_k["skim_gflops"], curve_k["uniform"]):
        lines.append(f"| {k} | {s['mAP']:.2f} | {s['top1']:.2f} | {g:.3f} | {u['mAP']:.2f} | "
                     f"{u['top1']:.2f} |")
    lines += ["", "![accuracy vs subsampling](tradeoff_stride.png)", "",
              "| s | skim mAP | skim top-1 | interpolated mAP | interpolated top-1 | GFLOPs |",
              "|---:|---:|---:|---:|---:|---:|"]
    for s, r, i, g in zip(curve_s["s"], curve_s["skim"], curve_s["interpolated"], curve_s["gflops"]):
        lines.append(f"| {s} | {r['mAP']:.2f} | {r['top1']:.2f} | {i['mAP']:.2f} | "
                     f"{i['top1']:.2f} | {g:.3f} |")
    lines += ["", "## Montage", "", notes["montage"], "", "## Notes", "",
              f"- checkpoint: `{notes['checkpoint']}`",
              f"- baselines classify with the {notes['head']}'s Psi and classifier",
              f"- per-moment costs: {'the store' if notes['costs'] == 'store' else 'counted on fresh models (the store has no flops_per_moment)'}",
              "- GFLOPs: computed moments x index-feature cost + skim network (flop counter) "
              "+ chosen moments x recognition cost; baselines: moments used x (image + audio "
              "+ Psi + classifier); saliency scores every moment, so it costs as dense",
              "- all listed videos: videos that failed or were never extracted have no "
              "prediction and count as misses, as in the official evaluator",
              f"- skim recognises with {('a classifier on `' + notes['recognition'] + '` at the picked moments') if notes['recognition'] else 'its own classifier on the aggregated inputs'}",
              ""]
    path.write_text("\n".join(lines))
