"""Linear interpolation of the features of subsampled moments (``SkimNet.forward`` with
``stride`` s > 1 and ``interpolate``: the authors' ``--feature_interpolate``): which computed
moments each moment is interpolated from, the interpolation itself, and its transpose (the
weights on the computed moments that a soft-indexing mixture of interpolated features puts
there, so that interpolated features need not be formed)."""
from __future__ import annotations

import torch
from torch import Tensor


def interp_index(mask: Tensor, stride: int, dtype=torch.float32) -> tuple[Tensor, Tensor, Tensor]:
    """(lo, hi, frac), each (B, N): moment n of a video is interpolated as (1 - frac) x[lo] +
    frac x[hi] from the computed moments (positions 0, s, 2s, ... of each video) on either
    side; moments after the last computed one copy it (frac 0).  mask: (B, N) bool, a prefix
    per row."""
    B, N = mask.shape
    pos = torch.arange(N, device=mask.device).unsqueeze(0).expand(B, N)
    last = ((mask.sum(1, keepdim=True) - 1).clamp_min(0) // stride) * stride    # (B, 1)
    lo = torch.minimum(pos // stride * stride, last)
    hi = torch.minimum(lo + stride, last)
    frac = ((pos - lo).to(dtype) / (hi - lo).clamp_min(1).to(dtype))
    return lo, hi, torch.where(hi > lo, frac, torch.zeros_like(frac))


def lerp_rows(bank: Tensor, lo: Tensor, hi: Tensor, frac: Tensor, mask: Tensor) -> Tensor:
    """(B, N, D): (1 - frac) bank[lo] + frac bank[hi] on the real moments, zeros elsewhere."""
    B, N, D = bank.shape
    at = lambda idx: bank.gather(1, idx.unsqueeze(-1).expand(B, N, D))  # noqa: E731
    f = frac.unsqueeze(-1)
    out = at(lo) * (1 - f) + at(hi) * f
    return torch.where(mask.unsqueeze(-1), out, torch.zeros((), dtype=bank.dtype, device=bank.device))


def transpose_interp(w: Tensor, lo: Tensor, hi: Tensor, frac: Tensor, mask: Tensor) -> Tensor:
    """(B, N) weights w' on the computed moments with sum_m w'[m] x[m] = sum_n w[n]
    lerp_rows(x)[n] for any x (w counts on the real moments only)."""
    w = w.masked_fill(~mask, 0)
    return torch.zeros_like(w).scatter_add_(1, lo, w * (1 - frac)).scatter_add_(1, hi, w * frac)


def interpolate_bank(bank: Tensor, mask: Tensor, stride: int) -> Tensor:
    """(B, N, D): every real moment's features linearly interpolated from the computed moments
    on either side (``interp_index``); computed moments keep their own features."""
    return lerp_rows(bank, *interp_index(mask, stride, bank.dtype), mask)
