"""MSRA Gaussian target heatmaps, vectorised (mmpose v0.29 ``TopDownGenerateTarget``, 'MSRA').

Semantics kept from mmpose, quirks included:

* ``feat_stride = input_size / heatmap_size``; the peak cell is
  ``mu = int(x / stride + 0.5)`` (``int`` truncates toward zero, so small
  negative coordinates still land on cell 0);
* the window is ``[int(mu - 3 sigma), int(mu + 3 sigma + 1))``; the weight is
  zeroed only if ``ul >= size`` or ``br < 0`` (so ``br == 0`` keeps weight 1
  with an empty map, as upstream);
* the Gaussian is unnormalised (peak 1) and drawn only where weight > 0.5.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["keypoint_heatmaps"]


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def keypoint_heatmaps(
    keypoints_px: Tensor,
    visible: Tensor,
    input_size: int | tuple[int, int] = 256,
    heatmap_size: int | tuple[int, int] = 64,
    sigma: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """Gaussian target heatmaps and target weights.

    Args:
        keypoints_px: ``[B, K, 2]`` (x, y) in input-crop pixels.
        visible: ``[B, K]`` visibility (bool or 0/1); becomes the initial weight.
        input_size: Crop size, int or (width, height).
        heatmap_size: Heatmap size, int or (width, height).
        sigma: Gaussian sigma in heatmap cells.

    Returns:
        ``(heatmaps [B, K, H, W] float32, target_weight [B, K] float32)``.
    """
    in_w, in_h = _pair(input_size)
    hm_w, hm_h = _pair(heatmap_size)
    device = keypoints_px.device
    # mmpose divides float32 joints by a float64 stride: do the same in float64.
    kp = keypoints_px.to(torch.float64)
    mu_x = torch.trunc(kp[..., 0] / (in_w / hm_w) + 0.5)
    mu_y = torch.trunc(kp[..., 1] / (in_h / hm_h) + 0.5)

    tmp_size = sigma * 3
    ul_x, ul_y = torch.trunc(mu_x - tmp_size), torch.trunc(mu_y - tmp_size)
    br_x, br_y = torch.trunc(mu_x + tmp_size + 1), torch.trunc(mu_y + tmp_size + 1)

    weight = visible.to(device=device, dtype=torch.float32)
    outside = (ul_x >= hm_w) | (ul_y >= hm_h) | (br_x < 0) | (br_y < 0)
    weight = torch.where(outside, torch.zeros_like(weight), weight)

    size = 2 * tmp_size + 1
    num_taps = math.ceil(size)  # len(np.arange(0, size, 1))
    centre = size // 2

    def taps(pixels: int, ul: Tensor, br: Tensor) -> tuple[Tensor, Tensor]:
        coord = torch.arange(pixels, dtype=torch.float64, device=device)
        index = coord - ul[..., None]  # Gaussian tap index of each pixel, [B, K, pixels]
        inside = (index >= 0) & (coord < br[..., None]) & (index < num_taps)
        return (index.to(torch.float32) - centre) ** 2, inside

    dx2, in_x = taps(hm_w, ul_x, br_x)
    dy2, in_y = taps(hm_h, ul_y, br_y)
    gaussian = torch.exp(-(dy2[..., :, None] + dx2[..., None, :]) / (2 * sigma**2))
    drawn = (weight > 0.5)[..., None, None] & in_y[..., :, None] & in_x[..., None, :]
    heatmaps = torch.where(drawn, gaussian, torch.zeros_like(gaussian))
    return heatmaps, weight
