"""Input embeddings of the pose sequence: special tokens, and coordinates read off a learned table.

A coordinate u in [0, 1] is embedded as the convex combination of the table rows of the two bins
around u * (num_bins - 1), weighted by proximity (the report's section 5.3), so a continuous
prediction can be fed back exactly and the embedding is differentiable in u. x and y share the
table and are told apart by an axis embedding. Every token of keypoint i also carries keypoint
i's support-graph embedding: that is how the decoder knows which keypoint it is writing.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from cape_bench.methods.raster2seq.sequence import Slot, bilinear_bins, position_layout

__all__ = ["TokenEmbedding"]


class TokenEmbedding(nn.Module):
    """Embeds input positions of the shifted sequence (see `sequence`).

    Args:
        d_model: Token width.
        num_bins: Rows of the coordinate table.
    """

    def __init__(self, d_model: int, num_bins: int) -> None:
        super().__init__()
        self.num_bins = num_bins
        self.coordinate_table = nn.Embedding(num_bins, d_model)
        self.axis = nn.Embedding(2, d_model)
        self.special = nn.Embedding(3, d_model)  # <bos>, <coord>, <sep>: the specials that are ever inputs
        self.keypoint_proj = nn.Linear(d_model, d_model)
        # Token-embedding init of GPT/BERT (std 0.02), not nn.Embedding's N(0, 1): the slope of the
        # bilinear embedding in u is (num_bins - 1) x the difference of neighbouring rows, and with
        # unit rows a fed-back coordinate would swing the next step by far more than it moved.
        for table in (self.coordinate_table, self.axis, self.special):
            nn.init.normal_(table.weight, std=0.02)

    def coordinate(self, values: Tensor) -> Tensor:
        """``[...]`` normalised values -> ``[..., d]`` bilinear mixture of table rows."""
        lower, upper, weight = bilinear_bins(values, self.num_bins)
        weight = weight[..., None].to(self.coordinate_table.weight.dtype)
        return (1 - weight) * self.coordinate_table(lower) + weight * self.coordinate_table(upper)

    def forward(self, start: int, stop: int, coords: Tensor, keypoints: Tensor) -> Tensor:
        """Embeddings ``[B, stop - start, d]`` of input positions ``[start, stop)``.

        Args:
            start: First input position.
            stop: One past the last input position.
            coords: ``[B, L, 2]`` sequence-ordered keypoints (read at the x and y positions), L >= 1.
            keypoints: ``[B, L, d]`` sequence-ordered support-graph embeddings.
        """
        group, slot = position_layout(start, stop, coords.device)
        group = group.clamp(max=coords.shape[1] - 1)
        values = coords[:, group, (slot == Slot.Y).long()]  # x at X positions, y at Y positions
        is_value = ((slot == Slot.X) | (slot == Slot.Y))[None, :, None]
        value = self.coordinate(values) + self.axis((slot == Slot.Y).long())[None]
        special = self.special(torch.where(slot == Slot.BOS, 0, torch.where(slot == Slot.SEP, 2, 1)))[None]
        tokens = torch.where(is_value, value, special)
        identity = self.keypoint_proj(keypoints)[:, group] * (slot != Slot.BOS)[None, :, None]
        return tokens + identity
