"""GFLOPs per video for skimming and the baselines (docs/method.md section 4).

cost = (moments whose index features were computed) x (their per-moment cost)
     + skimming cost (the skim network, counted by torch's flop counter)
     + (chosen moments) x (recognition cost per moment).

What is here: the per-moment costs (from the store's ``flops_per_moment``, or counted on the
meta device when the store has none), which models each bank needs (``bank_models``, read from
the stage classes' ``cost_models``), the skim network's cost as a function of the number of
moments it sees, the per-method formulas and the unit conversion.  What is not: accuracy, plots.

Units.  Inside, counts are FLOPs as ``torch.utils.flop_counter`` counts them (a multiply-add is
2; matrix products and convolutions only), and ``skim_gflops``/``sampled_gflops`` return those
/ 1e9 ("torch GFLOPs").  What the report calls GFLOPs is the paper's unit: 1e9 multiply-adds,
as torchvision's 40.5 for R(2+1)D-18 and as AdaFrame and SCSampler count; ``paper_gflops``
converts (half the torch count).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

UNIT_NOTE = ("GFLOPs are 1e9 multiply-adds, the paper's unit (torchvision's 40.5 for "
             "R(2+1)D-18); torch's flop counter counts twice that")

# The paper's ActivityNet trade-off points for IMGAUD-SKIMMING with image-audio indexing and
# recognition (docs/method.md, read off the paper's plot): GFLOPs per video (multiply-adds) and mAP %,
# at index subsampling 20, 10, 5 and 2.  Their "mAP" is what the authors' code reports:
# scikit-learn's macro average precision, not ActivityNet's official mAP.
PAPER_ACTIVITYNET = {"stride": (20, 10, 5, 2), "gflops": (11.7, 22.7, 45.4, 112.7),
                     "mAP": (71.7, 74.8, 76.1, 76.6)}


def paper_gflops(torch_gflops):
    """The paper's GFLOPs (multiply-adds) from torch-counted GFLOPs (2 per multiply-add)."""
    return np.asarray(torch_gflops, float) / 2 if np.ndim(torch_gflops) else float(torch_gflops) / 2


def bank_models() -> dict[str, tuple[str, ...]]:
    """Per store array, the per-moment models needed to compute it, from every registered
    stage's ``cost_models`` (a new model stage declares its own)."""
    from l2l.stages import STAGES
    out: dict[str, tuple[str, ...]] = {}
    for stage in STAGES.values():
        out.update(getattr(stage, "cost_models", None) or {})
    return out


def per_moment_costs(store_info: Mapping, *, num_classes: int) -> tuple[dict[str, int], str]:
    """FLOPs per moment of each model, and where they came from.  Taken from the store's
    ``flops_per_moment`` when present, else counted (weights do not change FLOPs) with
    ``l2l.models.cost.flops_per_moment`` on a fresh student and teacher."""
    got = dict(store_info.get("flops_per_moment") or {})
    if all(k in got for k in ("image_trunk", "audio_trunk", "fusion", "classifier")):
        return {k: int(v) for k, v in got.items()}, "store"
    from l2l.models.cost import flops_per_moment
    counted = flops_per_moment(num_classes=num_classes, teacher=True)
    return {**counted, **{k: int(v) for k, v in got.items()}}, "counted"


def bank_cost(costs: Mapping[str, int], bank: str) -> int:
    """FLOPs (torch count) to compute one moment of ``bank``."""
    models = bank_models()
    if bank not in models:
        raise ValueError(f"no per-moment cost known for bank {bank!r} (known: {sorted(models)})")
    missing = [m for m in models[bank] if m not in costs]
    if missing:
        raise ValueError(f"the store's flops_per_moment lacks {missing} (needed for {bank!r})")
    return sum(int(costs[m]) for m in models[bank])


def count_flops(fn) -> int:
    """FLOPs of calling ``fn()`` (no gradients)."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()
    return int(counter.get_total_flops())


@dataclasses.dataclass(frozen=True)
class SkimCost:
    """The skim network's FLOPs on a video of n (computed) moments: ``base + per_moment * n``
    (every term is either independent of n or linear in it: keys and the soft indexing are
    linear, the LSTM, queries, Psi and classifier are not touched by n)."""
    base: float
    per_moment: float

    def __call__(self, n) -> np.ndarray:
        return self.base + self.per_moment * np.asarray(n, float)


def skim_flops(model, n: int, *, steps: int | None = None, aggregated: bool = True) -> int:
    """Measured FLOPs of one skim forward on one video of n moments."""
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    banks = [torch.rand(1, n, model.config.dim, device=dev) for _ in model.config.features]
    mask = torch.ones(1, n, dtype=torch.bool, device=dev)
    try:
        return count_flops(lambda: model(banks, mask, steps=steps, aggregated=aggregated))
    finally:
        model.train(was)


def skim_cost(model, *, steps: int | None = None, aggregated: bool = True) -> SkimCost:
    """Fit ``SkimCost`` from two measured lengths (exact, the cost being affine in n)."""
    k = model.config.steps if steps is None else steps
    n1, n2 = max(2 * k, 16), max(2 * k, 16) + 64
    f1 = skim_flops(model, n1, steps=k, aggregated=aggregated)
    f2 = skim_flops(model, n2, steps=k, aggregated=aggregated)
    slope = (f2 - f1) / (n2 - n1)
    return SkimCost(base=f1 - slope * n1, per_moment=slope)


def computed_moments(lengths: np.ndarray, stride: int) -> np.ndarray:
    """Moments whose index features exist at subsampling factor ``stride``: ceil(N / s)."""
    return -(-np.asarray(lengths) // stride)


def skim_gflops(lengths: np.ndarray, *, index_cost: float, skim: SkimCost, stride: int = 1,
                chosen: np.ndarray | None = None, recognition_cost: float = 0.0) -> np.ndarray:
    """Per video GFLOPs of skimming: index features of the computed moments, the skim network
    on them, and (``chosen`` moments) x ``recognition_cost`` when another classifier
    recognises the picked moments (0 when the skim model's own classifier does, its cost
    being part of the skim network's)."""
    n = computed_moments(lengths, stride)
    total = n * index_cost + skim(n)
    if chosen is not None:
        total = total + np.asarray(chosen) * recognition_cost
    return total / 1e9


def sampled_gflops(n_used: np.ndarray, *, moment_cost: float) -> np.ndarray:
    """Per video GFLOPs of a baseline that runs the student (features + Psi + classifier) on
    ``n_used`` moments."""
    return np.asarray(n_used, float) * moment_cost / 1e9


def gmacs(flops: float) -> float:
    return flops / 2e9 if math.isfinite(flops) else flops
