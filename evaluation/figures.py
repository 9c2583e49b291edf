"""The plots and ``report.md`` of ``l2l evaluate`` (``report.py`` computes what they show).

Two accuracy metrics appear side by side, always named: "mAP" is ActivityNet's official
classification mAP (``metrics.activitynet_map``); "macro AP (sklearn)" is scikit-learn's macro
average precision on each video's first label, the number the authors' code reports and so the
metric of the paper's points (``cost.PAPER_ACTIVITYNET``).  What is not here: any computation of
metrics or costs.
"""
from __future__ import annotations

from pathlib import Path

from l2l.evaluation import cost as CO

SK = "sklearn_macro_ap"


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


def paper_point(s: int) -> tuple[float, float] | None:
    """(GFLOPs, macro AP %) of the paper's ActivityNet point at subsampling ``s``, if any."""
    ref = CO.PAPER_ACTIVITYNET
    for s_, g, m in zip(ref["stride"], ref["gflops"], ref["mAP"]):
        if s_ == s:
            return g, m
    return None


def plot_steps(curve: dict, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, style in (("skim", "o-"), ("uniform", "s--")):
        for m, color in (("mAP", "C0"), ("top1", "C1")):
            ax.plot(curve["k"], [r[m] for r in curve[name]], style, color=color,
                    label=f"{name} {m}")
    ax.set_xlabel("steps k (moments looked at)")
    ax.set_ylabel("% (mAP: ActivityNet's official)")
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
    ax.set_ylabel("% (mAP: ActivityNet's official)")
    ax.set_title("Sparse indexing features: accuracy vs s")
    _save(fig, ax, path)


def plot_gflops(methods: dict, curve_k: dict, curve_s: dict, path: Path) -> None:
    """Accuracy vs GFLOPs per video (multiply-adds): skim over s in the authors' metric
    (macro AP, sklearn) beside the paper's points (the same metric), and ActivityNet's
    official mAP next to it; skim over k, uniform over k and every method's point in mAP."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(curve_s["gflops"], [r[SK] for r in curve_s["skim"]], "o-", color="C3",
            label="skim over s: macro AP (sklearn)")
    ax.plot(curve_s["gflops"], [r["mAP"] for r in curve_s["skim"]], "o-", color="C0",
            label="skim over s: mAP (official)")
    ax.plot(curve_k["skim_gflops"], [r["mAP"] for r in curve_k["skim"]], "o:", color="C2",
            label="skim over k: mAP")
    ax.plot(curve_k["uniform_gflops"], [r["mAP"] for r in curve_k["uniform"]], "s--",
            color="C1", label="uniform over k: mAP")
    for name, r in methods.items():
        ax.scatter([r["gflops_per_video"]], [r["mAP"]], marker="x", color="k", zorder=3)
        ax.annotate(name, (r["gflops_per_video"], r["mAP"]), textcoords="offset points",
                    xytext=(3, 3), fontsize=7)
    ref = CO.PAPER_ACTIVITYNET
    ax.plot(ref["gflops"], ref["mAP"], "D-", color="0.6",
            label="paper, ActivityNet: macro AP (sklearn)")
    ax.set_xscale("log")
    ax.set_xlabel("GFLOPs per video (1e9 multiply-adds, the paper's unit)")
    ax.set_ylabel("% (metric named per line)")
    ax.set_title("Accuracy vs cost")
    _save(fig, ax, path)


def _row(name: str, which: str, r: dict, sk: str, g: str) -> str:
    return (f"| {name} | {which} | {r['steps']} | {r['mAP']:.2f} | {r['hit@1']:.2f} | "
            f"{r['hit@3']:.2f} | {r['top1']:.2f} | {sk} | {g} |")


def write_report(path: Path, metrics: dict, curve_k: dict, curve_s: dict, notes: dict) -> None:
    n, n_all = metrics["num_videos"], metrics["num_listed"]
    lines = [f"# Skimming vs baselines: {metrics['dataset']} / {metrics['subset']}", "",
             f"{n} extracted labelled videos of {n_all} listed (the list: "
             f"{metrics['listed_from']}).  mAP is ActivityNet's classification mAP; top-1 "
             "counts a video right when its best class is one of its labels; \"macro AP "
             "(sklearn)\" is scikit-learn's macro average precision on each video's first "
             "label, the number the authors' code reports and the metric of the paper's "
             f"points (not ActivityNet's mAP).  {CO.UNIT_NOTE}.", "",
             "| method | videos | steps | mAP | hit@1 | hit@3 | top-1 | macro AP (sklearn) | GFLOPs / video |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in metrics["methods"].items():
        lines.append(_row(name, f"extracted ({n})", r, f"{r[SK]:.2f}",
                          f"{r['gflops_per_video']:.3f}"))
        lines.append(_row(name, f"all listed ({n_all})", {**metrics["all_listed"][name],
                                                          "steps": r["steps"]}, "", ""))
        if name == "skim":
            for vname, v in metrics["variants"].items():
                lines.append(_row(f"{name} ({vname}: the features at argmax w each step)",
                                  f"extracted ({n})", v, f"{v[SK]:.2f}",
                                  f"{v['gflops_per_video']:.3f}"))
    lines += ["", f"Dense cost per moment: {metrics['dense_gflops_per_moment']:.3f} GFLOPs.",
              "", "## Trade-offs", "", "![accuracy vs cost](tradeoff_gflops.png)", "",
              "![accuracy vs steps](tradeoff_steps.png)", "",
              "| k | skim mAP | skim top-1 | skim macro AP (sklearn) | skim GFLOPs | uniform mAP | uniform top-1 |",
              "|---:|---:|---:|---:|---:|---:|---:|"]
    for k, s, g, u in zip(curve_k["k"], curve_k["skim"], curve_k["skim_gflops"], curve_k["uniform"]):
        lines.append(f"| {k} | {s['mAP']:.2f} | {s['top1']:.2f} | {s[SK]:.2f} | {g:.3f} | "
                     f"{u['mAP']:.2f} | {u['top1']:.2f} |")
    lines += ["", "![accuracy vs subsampling](tradeoff_stride.png)", "",
              "Subsampling s: the paper's ActivityNet points (image-audio indexing with "
              "recognition, read off its plot) are in the authors' metric, macro AP (sklearn); "
              "compare them with that column.  mAP beside it is the official metric.", "",
              "| s | skim macro AP (sklearn) | paper macro AP | skim mAP | skim top-1 | "
              "interpolated mAP | interpolated top-1 | GFLOPs | paper GFLOPs |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s, r, i, g in zip(curve_s["s"], curve_s["skim"], curve_s["interpolated"], curve_s["gflops"]):
        ref = paper_point(s)
        pm, pg = (f"{ref[1]:.1f}", f"{ref[0]:.1f}") if ref else ("", "")
        lines.append(f"| {s} | {r[SK]:.2f} | {pm} | {r['mAP']:.2f} | {r['top1']:.2f} | "
                     f"{i['mAP']:.2f} | {i['top1']:.2f} | {g:.3f} | {pg} |")
    lines += ["", "## Montage", "", notes["montage"], "", "## Notes", "",
              f"- checkpoint: `{notes['checkpoint']}`",
              f"- baselines classify with the {notes['head']}'s Psi and classifier",
              f"- per-moment costs: {'the store' if notes['costs'] == 'store' else 'counted on fresh models (the store has no flops_per_moment)'}",
              "- GFLOPs: computed moments x index-feature cost + skim network (flop counter) "
              "+ chosen moments x recognition cost; baselines: moments used x (image + audio "
              "+ Psi + classifier); saliency scores every moment, so it costs as dense",
              "- all listed videos: videos that failed or were never extracted have no "
              f"prediction and count as misses, as in the official evaluator; the list: "
              f"{metrics['listed_from']}",
              "- unaggregated: each step's next input is Psi of the features at the argmax "
              "moment of each modality's weights instead of their weighted mix (supplement G.3)",
              f"- skim recognises with {('a classifier on `' + notes['recognition'] + '` at the picked moments') if notes['recognition'] else 'its own classifier on the aggregated inputs'}",
              ""]
    path.write_text("\n".join(lines))
