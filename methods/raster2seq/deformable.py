"""Multi-scale deformable attention to the query map, in plain torch (`grid_sample`).

The option `model.image_attention="deformable"`: instead of attending to every cell, each token
predicts a reference point, and every head samples a few points around it on each level of a
pyramid of the stride-16 map (average-pooled x2 per level) and mixes them with predicted weights.
Cost per token is heads x levels x points samples, independent of the map size.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MultiScaleDeformableAttention"]


class MultiScaleDeformableAttention(nn.Module):
    """Deformable cross-attention to a ``[B, d, h, w]`` map.

    Args:
        d_model: Token width.
        nhead: Heads (must divide d_model).
        levels: Pyramid levels (stride 16, 32, 64, ...).
        points: Sampling points per head and level.
    """

    def __init__(self, d_model: int, nhead: int, levels: int = 3, points: int = 4) -> None:
        super().__init__()
        if d_model % nhead:
            raise ValueError(f"d_model {d_model} is not divisible by nhead {nhead}")
        self.nhead, self.levels, self.points = nhead, levels, points
        self.reference = nn.Linear(d_model, 2)
        self.offsets = nn.Linear(d_model, nhead * levels * points * 2)
        self.weights = nn.Linear(d_model, nhead * levels * points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self._init_offsets()

    def _init_offsets(self) -> None:
        # Start from a spread pattern (each head looks in its own direction, points at growing
        # distance, in cells of their level) rather than every point on the reference.
        nn.init.zeros_(self.offsets.weight)
        angles = torch.arange(self.nhead) * (2 * math.pi / self.nhead)
        direction = torch.stack([angles.cos(), angles.sin()], dim=-1)
        direction = direction / direction.abs().max(dim=-1, keepdim=True).values
        distance = torch.arange(1, self.points + 1, dtype=torch.float32)
        pattern = direction[:, None, None, :] * distance[None, None, :, None]
        with torch.no_grad():
            self.offsets.bias.copy_(pattern.expand(self.nhead, self.levels, self.points, 2).flatten())
        nn.init.zeros_(self.weights.weight)
        nn.init.zeros_(self.weights.bias)

    def prepare(self, image: Tensor) -> list[Tensor]:
        """Projected value maps per level, ``[B * heads, head_dim, h_l, w_l]``."""
        batch = image.shape[0]
        maps = [image] + [F.avg_pool2d(image, 2 ** level, ceil_mode=True) for level in range(1, self.levels)]
        values = []
        for level_map in maps:
            height, width = level_map.shape[-2:]
            projected = self.value_proj(level_map.flatten(2).transpose(1, 2))  # [B, hw, d]
            values.append(projected.transpose(1, 2).reshape(batch * self.nhead, -1, height, width))
        return values

    def forward(self, query: Tensor, values: list[Tensor]) -> Tensor:
        """``query [B, N, d]`` -> ``[B, N, d]`` sampled from the prepared `values`."""
        batch, num, _ = query.shape
        reference = self.reference(query).sigmoid()[:, :, None, None, :]  # [B, N, 1, 1, 2]
        offsets = self.offsets(query).view(batch, num, self.nhead, self.levels, self.points, 2)
        weights = self.weights(query).view(batch, num, self.nhead, -1).softmax(-1)
        weights = weights.view(batch, num, self.nhead, self.levels, self.points)
        out = 0
        for level, value in enumerate(values):
            size = torch.tensor(value.shape[-1:-3:-1], dtype=query.dtype, device=query.device)  # (w, h)
            location = reference + offsets[:, :, :, level] / size  # [B, N, heads, points, 2] in [0, 1]
            grid = (2 * location - 1).transpose(1, 2).flatten(0, 1)  # [B * heads, N, points, 2]
            sampled = F.grid_sample(value, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            level_weights = weights[:, :, :, level].transpose(1, 2).flatten(0, 1)[:, None]  # [B*heads, 1, N, P]
            out = out + (sampled * level_weights).sum(-1)  # [B * heads, head_dim, N]
        return self.out_proj(out.view(batch, self.nhead, -1, num).permute(0, 3, 1, 2).flatten(2))
