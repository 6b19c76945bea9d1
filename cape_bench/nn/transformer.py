"""Post-norm transformer encoder over [image tokens; keypoint tokens] (UPSTREAM_ARCH §5).

Upstream quirk kept on purpose: every layer adds the position encoding to its
*input* and then uses that sum as query, key AND value, so the encoding piles
up in the residual stream layer after layer. Checkpoints depend on it.

Submodule names match the upstream state_dict (`layers.{i}.self_attn`,
`linear1`, `linear2`, `norm1`, `norm2`).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["TransformerEncoderLayer", "TransformerEncoder"]


class TransformerEncoderLayer(nn.Module):
    """Post-norm self-attention + ReLU FFN layer that re-adds ``pos`` to q, k and v.

    Args:
        d_model: Token width.
        nhead: Attention heads.
        dim_feedforward: FFN hidden width.
        dropout: Dropout in attention, after attention, inside and after the FFN.
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, tokens: Tensor, pos: Tensor | None = None, key_padding_mask: Tensor | None = None) -> Tensor:
        """Run one layer.

        Args:
            tokens: ``[B, N, d]``.
            pos: ``[B, N, d]`` (or broadcastable), added to the input first.
            key_padding_mask: ``[B, N]`` bool, True = ignored as a key.

        Returns:
            ``[B, N, d]``.
        """
        if pos is not None:
            tokens = tokens + pos
        attended = self.self_attn(tokens, tokens, tokens, key_padding_mask=key_padding_mask, need_weights=False)[0]
        tokens = self.norm1(tokens + self.dropout1(attended))
        hidden = self.linear2(self.dropout(F.relu(self.linear1(tokens))))
        return self.norm2(tokens + self.dropout2(hidden))


class TransformerEncoder(nn.Module):
    """A stack of `TransformerEncoderLayer` with no final norm.

    Args:
        d_model: Token width.
        nhead: Attention heads.
        num_layers: Number of layers.
        dim_feedforward: FFN hidden width.
        dropout: Dropout probability.
    """

    def __init__(self, d_model: int, nhead: int, num_layers: int, dim_feedforward: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout) for _ in range(num_layers)
        )

    def forward(self, tokens: Tensor, pos: Tensor | None = None, key_padding_mask: Tensor | None = None) -> Tensor:
        """Encode ``tokens [B, N, d]``; ``pos`` is re-added in every layer.

        Args:
            tokens: ``[B, N, d]``.
            pos: ``[B, N, d]`` position encoding (zeros where a token has none).
            key_padding_mask: ``[B, N]`` bool, True = ignored as a key.

        Returns:
            ``[B, N, d]``.
        """
        for layer in self.layers:
            tokens = layer(tokens, pos=pos, key_padding_mask=key_padding_mask)
        return tokens
