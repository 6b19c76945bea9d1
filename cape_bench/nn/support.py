"""Support keypoint features pooled from a support feature map (GraphCape, UPSTREAM_ARCH §2)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["pool_support_keypoints"]


def pool_support_keypoints(feature_map: Tensor, heatmaps: Tensor) -> Tensor:
    """Heatmap-weighted average of the feature map, one vector per keypoint.

    The features are resized bilinearly (align_corners=False) to the heatmap
    size, each heatmap is normalised to sum 1 (``/ (sum + 1e-8)``, so an all-zero
    heatmap gives a zero vector), and the weighted sum is taken.

    Args:
        feature_map: ``[B, C, h, w]`` support features.
        heatmaps: ``[B, K, H, W]`` target heatmaps of the support keypoints.

    Returns:
        ``[B, K, C]``.
    """
    resized = F.interpolate(feature_map, size=heatmaps.shape[-2:], mode="bilinear", align_corners=False)
    weights = heatmaps / (heatmaps.sum(dim=(-2, -1), keepdim=True) + 1e-8)
    return weights.flatten(2).to(resized.dtype) @ resized.flatten(2).transpose(1, 2)
