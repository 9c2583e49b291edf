"""The keys of one feature bank and their scores against SkimNet's queries, computed so that a
training step holds little beyond what the backward pass needs (issue 20: a step at batch 256
x 400 moments held about 4 GB, mostly copies of (B, N, D) tensors).

Same method as ``Key`` (K = ReLU(BN(Conv1x1(B))) on real moments, zeros on padding, BN
statistics from real moments only; BN's running statistics updated once per forward), and the
same forward values; the backward is reorganised, not approximated:

- the 1x1 convolution is a matrix product over the packed real moments (``_MaskedLinear``);
  the packed copy of the bank is not kept for the backward: it is gathered again from the bank
  there (the bank is kept anyway, by the soft-indexing product);
- ReLU and the scatter back to (B, N, D) are one step that keeps only K (``_Keys``), which the
  score products need anyway; the BN output is freed at once;
- every step's score ``q_t . K`` sends its gradient for K to the keys' node (``_Score``), which
  forms sum_t g_t q_t^T in one batched product when backward reaches it, instead of autograd
  materialising and adding one (B, N, D) gradient per step and modality.

Only the summation order of the key gradient differs from plain autograd (one product over the
steps instead of a running sum), so weights after a step agree to rounding, not bit for bit,
with the plain autograd graph; every run of this code gives the same bits (streamed or not).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd import Function


def packed_linear(bank: Tensor, mask: Tensor, conv: nn.Conv1d) -> Tensor:
    """Conv1x1 of the real moments: (M, D_out) for the M True positions of ``mask``."""
    weight, bias = conv.weight, conv.bias
    if torch.is_grad_enabled() and not bank.requires_grad and (weight.requires_grad or bias.requires_grad):
        return _MaskedLinear.apply(bank, mask, weight, bias)
    return torch.addmm(bias, bank[mask], weight.view(weight.shape[0], -1).t())


def scatter_relu(y: Tensor, mask: Tensor, shape) -> Tensor:
    """(B, N, D) zeros with ReLU(y) at the True positions of ``mask`` (no graph)."""
    out = y.new_zeros(shape)
    out[mask] = torch.relu(y)
    return out


class _MaskedLinear(Function):
    """y = bank[mask] @ W^T + b; the bank needs no gradient and is re-gathered in backward."""

    @staticmethod
    def forward(ctx, bank, mask, weight, bias):
        ctx.save_for_backward(bank, mask)
        w2 = weight.view(weight.shape[0], -1)
        return torch.addmm(bias, bank[mask], w2.t())

    @staticmethod
    def backward(ctx, dy):
        bank, mask = ctx.saved_tensors
        dw = dy.t().mm(bank[mask]) if ctx.needs_input_grad[2] else None
        db = dy.sum(0) if ctx.needs_input_grad[3] else None
        return None, None, None if dw is None else dw.view(*dw.shape, 1), db


class _Grads:
    """Where the score nodes leave (step, gradient of the scores, query) for the keys' node."""

    def __init__(self):
        self.parts: list[tuple[int, Tensor, Tensor]] = []


class _Keys(Function):
    """Forward: K = scatter(ReLU(y)) into ``holder_out`` (returned to the caller through the
    holder, outside the graph) and a scalar token that every score node consumes, so that
    this node's backward runs after all of theirs."""

    @staticmethod
    def forward(ctx, y, mask, shape, grads: _Grads, holder: list):
        out = scatter_relu(y, mask, shape)
        ctx.save_for_backward(out, mask)
        ctx.grads = grads
        holder.append(out)
        return y.new_zeros(())

    @staticmethod
    def backward(ctx, _token_grad):
        out, mask = ctx.saved_tensors
        parts = sorted(ctx.grads.parts, key=lambda p: p[0])
        ctx.grads.parts = []
        if not parts:
            return out.new_zeros(int(mask.sum()), out.shape[-1]), None, None, None, None
        g = torch.stack([p[1] for p in parts], 2)                   # (B, N, T)
        q = torch.stack([p[2] for p in parts], 1)                   # (B, T, D)
        dk = torch.bmm(g, q)[mask]                                  # (M, D)
        dk = torch.ops.aten.threshold_backward(dk, out[mask], 0)    # ReLU's gradient
        return dk, None, None, None, None


class _Score(Function):
    """einsum('bd,bnd->bn', q, K); the gradient for K goes to the keys' node (see _Keys)."""

    @staticmethod
    def forward(ctx, q, token, k, grads: _Grads, step: int):
        ctx.save_for_backward(q, k)
        ctx.grads, ctx.step = grads, step
        return torch.einsum("bd,bnd->bn", q, k)

    @staticmethod
    def backward(ctx, g):
        q, k = ctx.saved_tensors
        ctx.grads.parts.append((ctx.step, g, q.detach()))
        dq = torch.einsum("bn,bnd->bd", g, k) if ctx.needs_input_grad[0] else None
        return dq, g.new_zeros(()), None, None, None


class KeyScores:
    """K of one bank (``self.k``, (B, N, D), plain tensor) and ``score(q, step)`` =
    einsum('bd,bnd->bn', q, K), differentiable for q and (through K) for ``key``'s weights.
    ``mask``: (B, N) bool, the moments that have keys; ``bank`` must not need a gradient for
    the lean path (it falls back to plain autograd if it does)."""

    def __init__(self, key: nn.Module, bank: Tensor, mask: Tensor):
        y = key.bn(packed_linear(bank, mask, key.conv))              # (M, D)
        self.lean = torch.is_grad_enabled() and y.requires_grad and not bank.requires_grad
        if self.lean:
            self.grads, holder = _Grads(), []
            self.token = _Keys.apply(y, mask, bank.shape, self.grads, holder)
            self.k = holder[0]
        else:
            self.k = bank.new_zeros(bank.shape)
            if torch.is_grad_enabled() and y.requires_grad:
                self.k = self.k.index_put((mask,), torch.relu(y))
            else:
                self.k[mask] = torch.relu_(y)

    @classmethod
    def given(cls, k: Tensor) -> "KeyScores":
        """Scores against keys computed elsewhere (no gradient to any key weights)."""
        self = cls.__new__(cls)
        self.lean, self.k = False, k
        return self

    def score(self, q: Tensor, step: int) -> Tensor:
        if self.lean:
            return _Score.apply(q, self.token, self.k, self.grads, step)
        return torch.einsum("bd,bnd->bn", q, self.k)
