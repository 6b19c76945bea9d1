"""Parameter-free sine position encodings for the image grid and for points.

Both follow the DETR/mmdet `SinePositionalEncoding(normalize=True)` used by the
GraphCape/CapeX/CapeNext head (UPSTREAM_ARCH §4). They are deliberately NOT
aligned with each other: a grid cell (r, c) is encoded at ((c+1)/w, (r+1)/h)
while a point is encoded at its own (x, y), so a point at the centre of cell c,
(c+0.5)/w, is half a cell away in phase from that cell's grid encoding. The
checkpoints were trained with this offset, so it is kept.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["SinePositionalEncoding", "sine_grid_encoding", "sine_point_encoding"]


def _frequencies(num_feats: int, temperature: float, device: torch.device | None) -> Tensor:
    # dim_t_i = T^(2*floor(i/2)/num_feats): channels 2j and 2j+1 share one frequency.
    idx = torch.arange(num_feats, dtype=torch.float32, device=device)
    return temperature ** (2 * (idx // 2) / num_feats)


def _interleave_sin_cos(phase: Tensor) -> Tensor:
    # Even channels sin, odd channels cos, interleaved: [sin f0, cos f0, sin f1, cos f1, ...].
    return torch.stack((phase[..., 0::2].sin(), phase[..., 1::2].cos()), dim=-1).flatten(-2)


def sine_grid_encoding(
    height: int,
    width: int,
    num_feats: int = 128,
    temperature: float = 10000.0,
    scale: float = 2 * math.pi,
    eps: float = 1e-6,
    device: torch.device | str | None = None,
) -> Tensor:
    """Sine encoding of every cell of an unmasked ``height x width`` grid.

    Cell (r, c) is encoded at ``y = (r+1)/(height+eps)*scale`` and
    ``x = (c+1)/(width+eps)*scale``.

    Args:
        height: Number of grid rows.
        width: Number of grid columns.
        num_feats: Channels per axis; the output has ``2 * num_feats`` channels.
        temperature: Frequency base.
        scale: Multiplier applied after normalising to (0, 1].
        eps: Added to the normaliser, as upstream.
        device: Device of the result.

    Returns:
        Float32 tensor ``[2*num_feats, height, width]``: y channels first, then x.
    """
    dim_t = _frequencies(num_feats, temperature, device)
    rows = torch.arange(1, height + 1, dtype=torch.float32, device=device)
    cols = torch.arange(1, width + 1, dtype=torch.float32, device=device)
    y = rows / (height + eps) * scale
    x = cols / (width + eps) * scale
    pos_y = _interleave_sin_cos(y[:, None] / dim_t)  # [h, F]
    pos_x = _interleave_sin_cos(x[:, None] / dim_t)  # [w, F]
    pos = torch.cat(
        (pos_y[:, None, :].expand(height, width, num_feats), pos_x[None, :, :].expand(height, width, num_feats)),
        dim=-1,
    )
    return pos.permute(2, 0, 1).contiguous()


def sine_point_encoding(
    points: Tensor,
    num_feats: int = 128,
    temperature: float = 10000.0,
    scale: float = 2 * math.pi,
) -> Tensor:
    """Sine encoding of normalised points (upstream ``forward_coordinates``).

    Args:
        points: ``[..., 2]`` normalised (x, y) in [0, 1].
        num_feats: Channels per axis; the output has ``2 * num_feats`` channels.
        temperature: Frequency base.
        scale: Multiplier of the normalised coordinate (no +1, no cell count).

    Returns:
        Float32 tensor ``[..., 2*num_feats]``: y channels first, then x.
    """
    dim_t = _frequencies(num_feats, temperature, points.device)
    points = points.float()
    pos_x = _interleave_sin_cos((points[..., 0] * scale)[..., None] / dim_t)
    pos_y = _interleave_sin_cos((points[..., 1] * scale)[..., None] / dim_t)
    return torch.cat((pos_y, pos_x), dim=-1)


class SinePositionalEncoding(nn.Module):
    """Module form of the two encodings; it has no parameters or buffers.

    Args:
        num_feats: Channels per axis (``d_model // 2`` in the CAPE head).
        temperature: Frequency base.
        scale: Phase scale.
        eps: Grid normaliser epsilon.
    """

    def __init__(
        self,
        num_feats: int = 128,
        temperature: float = 10000.0,
        scale: float = 2 * math.pi,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.num_feats = num_feats
        self.temperature = temperature
        self.scale = scale
        self.eps = eps

    def forward(self, height: int, width: int, device: torch.device | str | None = None) -> Tensor:
        """Grid encoding ``[2*num_feats, height, width]`` (see `sine_grid_encoding`)."""
        return sine_grid_encoding(height, width, self.num_feats, self.temperature, self.scale, self.eps, device)

    def forward_points(self, points: Tensor) -> Tensor:
        """Point encoding ``[..., 2*num_feats]`` (see `sine_point_encoding`)."""
        return sine_point_encoding(points, self.num_feats, self.temperature, self.scale)

    def extra_repr(self) -> str:
        return f"num_feats={self.num_feats}, temperature={self.temperature}, scale={self.scale:.4f}, eps={self.eps}"
