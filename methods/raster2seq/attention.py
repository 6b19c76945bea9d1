"""Multi-head attention on `scaled_dot_product_attention`, with keys and values computed apart.

Splitting the key/value projection from the attention lets the decoder project the image and
support memories once per decode and grow the self-attention keys and values one chunk at a time
(the KV cache), instead of re-projecting every past token at every step.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["KeyValues", "MultiHeadAttention", "causal_mask"]


@dataclass
class KeyValues:
    """Projected keys and values ``[B, heads, N, head_dim]``."""

    keys: Tensor
    values: Tensor

    def extended(self, new: KeyValues) -> KeyValues:
        return KeyValues(torch.cat([self.keys, new.keys], dim=2), torch.cat([self.values, new.values], dim=2))

    def __len__(self) -> int:
        return self.keys.shape[2]


def causal_mask(new: int, past: int, device=None) -> Tensor | None:
    """``[new, past + new]`` bool (True = may attend) for `new` tokens behind `past` cached ones.

    None when a single new token may see everything (no mask needed).
    """
    if new == 1:
        return None
    rows = torch.arange(new, device=device)[:, None] + past
    return torch.arange(past + new, device=device)[None] <= rows


class MultiHeadAttention(nn.Module):
    """Attention with separate q/k/v/out projections.

    Args:
        d_model: Token width.
        nhead: Heads (must divide d_model).
        dropout: Attention-weight dropout in training.
    """

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % nhead:
            raise ValueError(f"d_model {d_model} is not divisible by nhead {nhead}")
        self.nhead = nhead
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def _heads(self, x: Tensor) -> Tensor:
        return x.unflatten(-1, (self.nhead, -1)).transpose(1, 2)

    def key_values(self, keys: Tensor, values: Tensor | None = None) -> KeyValues:
        """Project ``[B, N, d]`` keys (and values, default: the keys) to `KeyValues`."""
        return KeyValues(self._heads(self.k_proj(keys)), self._heads(self.v_proj(keys if values is None else values)))

    def forward(self, query: Tensor, memory: KeyValues, mask: Tensor | None = None) -> Tensor:
        """Attend ``query [B, N, d]`` to `memory`; ``mask`` broadcasts to ``[B, heads, N, M]``, True = attend."""
        attended = F.scaled_dot_product_attention(
            self._heads(self.q_proj(query)), memory.keys, memory.values, attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.out_proj(attended.transpose(1, 2).flatten(2))
