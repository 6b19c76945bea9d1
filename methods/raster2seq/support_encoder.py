"""The support pose graph encoder: template coordinates + skeleton adjacency -> one token per keypoint.

Each keypoint starts as an MLP of the sine encoding of its template (x, y); the skeleton enters as
an adjacency embedding, a projection of the mean of its neighbours' point embeddings (the masked,
row-normalised skeleton of `cape_bench.nn.skeleton`). A transformer encoder then contextualises
the keypoints. A learned summary token is encoded with them: it is never masked, so a support
without a single valid keypoint still gives the decoder's support cross-attention a key.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from cape_bench.nn.graph_decoder import PointEmbeddingMLP
from cape_bench.nn.positional import sine_point_encoding
from cape_bench.nn.skeleton import adjacency_from_skeleton
from cape_bench.nn.transformer import TransformerEncoder

__all__ = ["PoseGraphEncoder"]


class PoseGraphEncoder(nn.Module):
    """Encodes a support pose graph.

    Args:
        d_model: Token width.
        nhead: Heads of the encoder layers.
        num_layers: Encoder layers (3 in the report).
        dim_feedforward: FFN width of the encoder layers.
        dropout: Encoder dropout.
    """

    def __init__(self, d_model: int, nhead: int, num_layers: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.point_embed = PointEmbeddingMLP(d_model, d_model, d_model)
        self.adjacency_proj = nn.Linear(d_model, d_model)
        self.summary = nn.Parameter(torch.randn(1, 1, d_model) * 0.02)
        self.encoder = TransformerEncoder(d_model, nhead, num_layers, dim_feedforward, dropout)

    def forward(self, template: Tensor, mask: Tensor, skeletons: Sequence[Sequence[Sequence[int]]]) -> tuple[Tensor, Tensor]:
        """Encode the graph.

        Args:
            template: ``[B, K, 2]`` normalised keypoint template.
            mask: ``[B, K]`` bool, True = the keypoint has a template.
            skeletons: One 0-based edge list per item.

        Returns:
            ``summary [B, d]`` and ``keypoints [B, K, d]`` (zero at masked slots).
        """
        points = self.point_embed(sine_point_encoding(template, self.summary.shape[-1] // 2).to(self.summary.dtype))
        neighbours = adjacency_from_skeleton(skeletons, mask)[:, 1].to(points.dtype)
        tokens = points + self.adjacency_proj(neighbours @ points)
        tokens = torch.cat([self.summary.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        padding = torch.cat([mask.new_zeros(mask.shape[0], 1), ~mask], dim=1)
        encoded = self.encoder(tokens, key_padding_mask=padding)
        return encoded[:, 0], encoded[:, 1:] * mask[..., None].to(encoded.dtype)
