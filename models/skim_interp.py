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


def lerp_grid(bank: Tensor, frac: Tensor, mask: Tensor, stride: int) -> Tensor:
    """``lerp_rows(bank, lo, hi, frac, mask)`` for ``interp_index(mask, stride)``, bit for bit,
    from the grid's regularity instead of two gathers: moment q s + r lies between computed
    moments q and q + 1 (frac 0 past a video's last computed moment, which it copies), so the
    rows are two broadcast products over (B, N / s, s, D).  About a third of the passes over
    (B, N, D) that ``lerp_rows`` makes (``evaluate``'s interpolated variants)."""
    B, N, D = bank.shape
    s = stride
    grid = bank[:, ::s]                                            # computed rows (B, ceil(N/s), D)
    nxt = torch.cat([grid[:, 1:], grid[:, -1:]], 1)                # the next one (frac 0 at the end)
    out = torch.empty_like(bank)
    q = N // s
    for lo_n, hi_n, rows in ((0, q * s, q), (q * s, N, 1)):
        if hi_n <= lo_n:
            continue
        g0 = lo_n // s
        f = frac[:, lo_n:hi_n].reshape(B, rows, -1, 1)
        o = out[:, lo_n:hi_n].view(B, rows, -1, D)
        torch.mul(grid[:, g0:g0 + rows].unsqueeze(2), 1 - f, out=o)
        o.add_(nxt[:, g0:g0 + rows].unsqueeze(2) * f)
    return out.masked_fill_(~mask.unsqueeze(-1), 0)


def transpose_interp(w: Tensor, lo: Tensor, hi: Tensor, frac: Tensor, mask: Tensor) -> Tensor:
    """(B, N) weights w' on the computed moments with sum_m w'[m] x[m] = sum_n w[n]
    lerp_rows(x)[n] for any x (w counts on the real moments only)."""
    w = w.masked_fill(~mask, 0)
    return torch.zeros_like(w).scatter_add_(1, lo, w * (1 - frac)).scatter_add_(1, hi, w * frac)


def interpolate_bank(bank: Tensor, mask: Tensor, stride: int) -> Tensor:
    """(B, N, D): every real moment's features linearly interpolated from the computed moments
    on either side (``interp_index``); computed moments keep their own features."""
    return lerp_rows(bank, *interp_index(mask, stride, bank.dtype), mask)
