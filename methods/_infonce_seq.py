"""Sequence InfoNCE (CPC / GIM audio; GIM_PROTOCOL.md 2.3) as one pure function.

For every prediction step k = 1..K the context c_t predicts the target z_{t+k} through W_k (slice k of one
``Linear(C_context -> C_target * K, bias=False)``). The positive score is z_{t+k}^T W_k c_t; the negatives
are target vectors drawn uniformly, with replacement, from every position of every sequence in the batch
(like the reference's ``sampling_method 1``: a negative may rarely hit the positive). Per k the loss is the
mean over positions of -log softmax([positive, negatives])[0]; the total is the mean over k.

Differences from the reference, on purpose:

- Only the negatives actually used are drawn: ``negatives`` target rows per context position (B * (W - 1) *
  negatives rows), instead of stacking ten permutations of the full-length sequence. Same distribution per
  k, far less compute and memory on the long early layers (the reference's main cost, section 8).
- A context position's negatives are shared by its K predictions (the reference, too, reuses every negative
  row for K (position, k) pairs, with shifted positions); the positives are of course per k.
- The window's positives and the negatives are read from the target with one gather, so the backward pass
  writes a single full-length gradient buffer (with the window a slice and the negatives a second gather,
  the long early layers spent a third of their loss time zero-filling and adding such buffers).

Long sequences (L > window) are cut to one random ``window``-step span per call for contexts and positives;
negatives still come from the full length. Randomness comes from the global torch RNG, which the trainer
reseeds every step.
"""

from __future__ import annotations

import torch
from torch import nn


def random_window(length: int, window: int) -> slice:
    """A random span of ``window`` steps (the whole sequence when it is not longer than ``window``)."""
    if window <= 0 or length <= window:
        return slice(0, length)
    start = int(torch.randint(0, length - window + 1, (1,)))
    return slice(start, start + window)


def sequence_infonce(
    context: torch.Tensor,
    target: torch.Tensor,
    predictor: nn.Linear,
    k_max: int,
    negatives: int,
    window: int = 128,
) -> torch.Tensor:
    """Mean over k = 1..k_max of the InfoNCE of predicting ``target`` k steps ahead from ``context``.

    context: (B, Cc, L); target: (B, Ct, L); predictor: Linear(Cc -> Ct * k_max, bias=False).
    Returns a scalar; about ln(1 + negatives) for small random features at initialisation.
    """
    b, c_t, length = target.shape
    if context.shape[0] != b or context.shape[2] != length:
        raise ValueError(f"context {tuple(context.shape)} and target {tuple(target.shape)} differ in B or L")
    if predictor.out_features != c_t * k_max:
        raise ValueError(f"predictor gives {predictor.out_features} features, expected {c_t} * {k_max}")
    span = random_window(length, window)
    w = span.stop - span.start
    if w < 2:
        raise ValueError(f"a sequence of {w} steps is too short to predict even 1 step ahead")
    t = w - 1  # contexts that have at least one future step
    pos, neg = gather_targets(target, span, t * negatives)  # (B, W, Ct), (B, T*N, Ct)
    ctx = pos if context is target else context[:, :, span].transpose(1, 2)  # (B, W, Cc)
    pred = predictor(ctx[:, :t]).view(b, t, k_max, c_t)  # (B, T, K*Ct) -> (B, T, K, Ct): W_k c_t
    dev = target.device
    future = torch.arange(t, device=dev)[:, None] + torch.arange(1, k_max + 1, device=dev)  # (T, K): t + k
    valid = future < w  # z_{t+k} inside the window
    pos_score = (pred * pos[:, future.clamp(max=w - 1)]).sum(-1)  # (B, T, K, Ct) -> (B, T, K)
    neg = neg.view(b * t, negatives, c_t)  # (B*T, N, Ct): each context's negatives, shared by its K steps
    neg_score = torch.bmm(neg, pred.reshape(b * t, k_max, c_t).transpose(1, 2))  # (B*T, N, K)
    logits = torch.cat(
        [pos_score.unsqueeze(-1), neg_score.transpose(1, 2).reshape(b, t, k_max, negatives)], -1
    )
    nll = logsumexp(logits) - pos_score  # (B, T, K) = -log softmax([pos, negs])[0]
    count = valid.sum(0)  # (K,) positions per k
    per_k = (nll * valid.to(nll.dtype)).sum((0, 1)) / (b * count.clamp(min=1))  # (K,)
    return per_k[count > 0].mean()


def gather_targets(target: torch.Tensor, span: slice, per_sequence: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The window's target vectors (B, W, Ct) and ``per_sequence`` negatives per sequence (B, n, Ct).

    Negatives are drawn uniformly, with replacement, from every position of every sequence. One gather
    serves both, so the backward pass writes a single full-length gradient (the long early layers' cost).
    """
    b, c_t, length = target.shape
    steps = torch.arange(span.start, span.stop, device=target.device)
    window = (torch.arange(b, device=target.device)[:, None] * length + steps).flatten()  # (B*W,)
    drawn = torch.randint(0, b * length, (b * per_sequence,), device=target.device)  # (B*n,)
    idx = torch.cat([window, drawn])
    rows = target[idx // length, :, idx % length]  # (B*W + B*n, Ct)
    pos, neg = rows.split([len(window), len(drawn)])
    return pos.view(b, -1, c_t), neg.view(b, per_sequence, c_t)


def logsumexp(x: torch.Tensor) -> torch.Tensor:
    """logsumexp over the last (short) axis; several times faster on CPU than torch's for 11 entries."""
    top = x.detach().amax(dim=-1, keepdim=True)  # any constant shift gives the same value and gradient
    return (x - top).exp().sum(dim=-1).log() + top[..., 0]
