"""The baselines skimming is compared with, on the same cached features (docs/method.md section 4).

Every baseline chooses some moments of each video and classifies the video by averaging the
student classifier's per-moment class probabilities (softmax of classifier(Psi(image, audio)))
over them:

- UNIFORM: T evenly spaced moments (the centres of T equal parts of the video);
- RANDOM: T moments drawn without replacement (seeded);
- DENSE: every moment;
- SALIENCY (in the spirit of SCSampler): the T moments on which the student classifier is
  most confident (highest max-probability).

A video with fewer than T moments uses all of them.  Each baseline is a ``choose`` function
registered by name with ``@baseline`` (``BASELINES``): adding one is its function and that one
decorator line; the report runs every registered baseline.  What is here: per-moment
probabilities, the selections and the averaging.  What is not: skimming itself (``training/skim.predict``),
costs, metrics or files.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

@torch.no_grad()
def moment_probs(data, *, fusion: nn.Module | None, classifier: nn.Module,
                 banks: Sequence[str] = ("image", "audio"), chunk: int = 65536,
                 device="cpu") -> np.ndarray:
    """(M, C) float32 class probabilities of every moment of ``data`` (a FeatureSet): the
    classifier on Psi(image, audio), or directly on the one bank when ``fusion`` is None."""
    fusion = None if fusion is None else fusion.to(device).eval()
    classifier = classifier.to(device).eval()
    arrays = [data.column(b) for b in banks]
    out = []
    for s in range(0, len(arrays[0]), chunk):
        parts = [a[s:s + chunk].to(device=device, dtype=torch.float32) for a in arrays]
        x = fusion(*parts) if fusion is not None else parts[0]
        out.append(torch.softmax(classifier(x), -1).cpu())
    if not out:
        return np.zeros((0, getattr(classifier, "out_features", 0)), np.float32)
    return torch.cat(out).numpy()


# ---- the registry -----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Baseline:
    """One baseline: ``choose(probs (n, C), t, rng) -> chosen moment indices``; whether its cost
    counts every moment (``scores_all``: it needs every moment's prediction to choose) and
    whether its step count is the video's length (``all_steps``) rather than T."""
    name: str
    choose: Callable[[np.ndarray, int, np.random.Generator], np.ndarray]
    scores_all: bool = False
    all_steps: bool = False


BASELINES: dict[str, Baseline] = {}


def baseline(name: str, *, scores_all: bool = False, all_steps: bool = False):
    """Register the decorated ``choose`` function as baseline ``name`` (the one line a new
    baseline adds)."""
    def deco(fn):
        BASELINES[name] = Baseline(name, fn, scores_all, all_steps)
        return fn
    return deco


def uniform_indices(n: int, t: int) -> np.ndarray:
    """T evenly spaced moments of n: the centres of T equal parts (all n if n <= T)."""
    if n <= t:
        return np.arange(n)
    return np.floor((np.arange(t) + 0.5) * n / t).astype(np.int64)


def random_indices(n: int, t: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(n, size=min(n, t), replace=False))


def saliency_indices(probs: np.ndarray, t: int) -> np.ndarray:
    """The T moments (rows of ``probs`` (n, C)) with the highest max-probability, best first."""
    conf = probs.max(1)
    return np.argsort(-conf, kind="stable")[:t]


@baseline("uniform")
def _uniform(p, t, rng):
    return uniform_indices(len(p), t)


@baseline("random")
def _random(p, t, rng):
    return random_indices(len(p), t, rng)


@baseline("dense", scores_all=True, all_steps=True)
def _dense(p, t, rng):
    return np.arange(len(p))


@baseline("saliency", scores_all=True)
def _saliency(p, t, rng):
    return saliency_indices(p, t)


METHODS = tuple(BASELINES)      # the registered names, in registration order


def selector(method: str, t: int, *, seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """A function: one video's per-moment probabilities (n, C) -> chosen moment indices."""
    if method not in BASELINES:
        raise ValueError(f"unknown baseline {method!r} (known: {', '.join(BASELINES)})")
    rng = np.random.default_rng(seed)
    choose = BASELINES[method].choose
    return lambda p: choose(p, t, rng)


def run_baseline(probs: np.ndarray, offsets: np.ndarray, method: str, t: int, *,
                 seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    """Video scores (V, C), the mean of the chosen moments' probabilities, and each video's
    chosen indices.  probs: (M, C) from ``moment_probs``; offsets: (V+1,)."""
    choose = selector(method, t, seed=seed)
    scores = np.zeros((len(offsets) - 1, probs.shape[1]), np.float32)
    chosen = []
    for v in range(len(offsets) - 1):
        p = probs[offsets[v]:offsets[v + 1]]
        idx = choose(p)
        scores[v] = p[idx].mean(0)
        chosen.append(idx)
    return scores, chosen
