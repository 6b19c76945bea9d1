"""The cross-modal sequence decoder: causal self-attention, image attention, support attention, FFN.

Post-norm layers (as the CAPE head's encoder). Every layer's output is returned so that the two
heads can supervise intermediate layers too (the report's auxiliary losses). The memories (image
keys/values or value maps, support keys/values) are prepared once per decode by `prepare`; the
self-attention keys/values of already decoded tokens are passed back in as the KV cache.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from cape_bench.methods.raster2seq.attention import (
    KeyValues,
    MultiHeadAttention,
    causal_mask,
)
from cape_bench.nn.positional import sine_grid_encoding

__all__ = ["DecoderLayer", "ImageAttention", "LayerMemory", "SequenceDecoder"]


class ImageAttention(MultiHeadAttention):
    """Cross-attention to every cell of the query map; keys carry the sine grid encoding."""

    def prepare(self, image: Tensor) -> KeyValues:
        """``[B, d, h, w]`` map -> its keys and values."""
        channels, height, width = image.shape[1:]
        pos = sine_grid_encoding(height, width, channels // 2, device=image.device).to(image.dtype)
        cells = image.flatten(2).transpose(1, 2)
        return self.key_values(cells + pos.flatten(1).transpose(0, 1), cells)


@dataclass
class LayerMemory:
    """What one layer attends to besides the sequence: the prepared image, the support keys/values
    and the support key mask ``[B, 1, 1, S]`` (True = attend)."""

    image: Any
    support: KeyValues
    support_mask: Tensor


class DecoderLayer(nn.Module):
    """One decoder layer.

    Args:
        d_model: Token width.
        nhead: Attention heads.
        dim_feedforward: FFN width.
        dropout: Dropout after each sub-block and on attention weights.
        image_attention: The module attending to the query map (`ImageAttention` or
            `MultiScaleDeformableAttention`): ``prepare(map)`` once, then ``(tokens, prepared)``.
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float, image_attention: nn.Module) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, nhead, dropout)
        self.image_attn = image_attention
        self.support_attn = MultiHeadAttention(d_model, nhead, dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(4))
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: Tensor, memory: LayerMemory, past: KeyValues | None) -> tuple[Tensor, KeyValues]:
        """Run ``tokens [B, N, d]`` (the N positions after the ``len(past)`` cached ones)."""
        new = self.self_attn.key_values(tokens)
        keys = new if past is None else past.extended(new)
        mask = causal_mask(tokens.shape[1], len(keys) - tokens.shape[1], tokens.device)
        x = self.norms[0](tokens + self.dropout(self.self_attn(tokens, keys, mask)))
        x = self.norms[1](x + self.dropout(self.image_attn(x, memory.image)))
        x = self.norms[2](x + self.dropout(self.support_attn(x, memory.support, memory.support_mask)))
        hidden = self.linear2(self.dropout(F.relu(self.linear1(x))))
        return self.norms[3](x + self.dropout(hidden)), keys


class SequenceDecoder(nn.Module):
    """A stack of `DecoderLayer`; `image_attention` builds one image-attention module per layer."""

    def __init__(self, d_model: int, nhead: int, num_layers: int, dim_feedforward: int, dropout: float,
                 image_attention) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DecoderLayer(d_model, nhead, dim_feedforward, dropout, image_attention()) for _ in range(num_layers)
        )

    def prepare(self, image: Tensor, support: Tensor, support_mask: Tensor) -> list[LayerMemory]:
        """Per-layer memories of the query map ``[B, d, h, w]`` and support tokens ``[B, S, d]``."""
        mask = support_mask[:, None, None, :]
        return [LayerMemory(layer.image_attn.prepare(image), layer.support_attn.key_values(support), mask)
                for layer in self.layers]

    def forward(self, tokens: Tensor, memories: list[LayerMemory], cache: list[KeyValues] | None = None
                ) -> tuple[list[Tensor], list[KeyValues]]:
        """Every layer's output for ``tokens [B, N, d]``, and the extended self-attention cache."""
        outputs, new_cache = [], []
        for index, (layer, memory) in enumerate(zip(self.layers, memories)):
            tokens, keys = layer(tokens, memory, None if cache is None else cache[index])
            outputs.append(tokens)
            new_cache.append(keys)
        return outputs, new_cache
