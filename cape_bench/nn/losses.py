"""Training losses of the CAPE head (UPSTREAM_ARCH §8, ``PoseHead.get_loss``).

All losses share one per-keypoint weight ``w`` (query visibility times the
support keypoint mask) and one per-sample normaliser ``n = sum_K w`` (0 -> 1),
so padded or invisible slots contribute nothing and a sample's loss does not
depend on how many keypoints its category has.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["keypoint_normalizer", "similarity_heatmap_loss", "keypoint_l1_loss", "cape_losses"]


def keypoint_normalizer(weight: Tensor) -> Tensor:
    """Per-sample ``sum_K weight``, with 0 replaced by 1. ``[B, K] -> [B]``."""
    total = weight.sum(dim=-1)
    return torch.where(total == 0, torch.ones_like(total), total)


def similarity_heatmap_loss(
    similarity_map: Tensor, target_heatmaps: Tensor, weight: Tensor, normalizer: Tensor
) -> Tensor:
    """MSE between ``sigmoid(similarity)`` and the resized, peak-normalised target heatmaps.

    The targets are resized bilinearly (align_corners=False) to the similarity
    map size and divided by their per-keypoint max (+1e-10). The squared error is
    weighted, averaged over cells, summed over keypoints, divided by the
    normaliser and averaged over the batch. The 2.0 loss weight is NOT applied here.

    Args:
        similarity_map: ``[B, K, h, w]`` raw similarity logits.
        target_heatmaps: ``[B, K, H, W]`` query target heatmaps.
        weight: ``[B, K]`` per-keypoint weight.
        normalizer: ``[B]`` from `keypoint_normalizer`.

    Returns:
        Scalar tensor.
    """
    h, w = similarity_map.shape[-2:]
    prediction = similarity_map.sigmoid()
    target = F.interpolate(target_heatmaps.to(prediction.dtype), size=(h, w), mode="bilinear", align_corners=False)
    target = target / (target.amax(dim=(-2, -1), keepdim=True) + 1e-10)
    error = F.mse_loss(prediction, target, reduction="none") * weight[:, :, None, None]
    per_sample = error.flatten(2).sum(-1) / (h * w)
    return (per_sample.sum(-1) / normalizer).mean()


def keypoint_l1_loss(prediction: Tensor, target: Tensor, weight: Tensor, normalizer: Tensor) -> Tensor:
    """L1 over (x, y) summed, weighted, summed over K, divided by n, summed over B, divided by B.

    Args:
        prediction: ``[B, K, 2]`` normalised coordinates.
        target: ``[B, K, 2]`` normalised coordinates.
        weight: ``[B, K]``.
        normalizer: ``[B]``.

    Returns:
        Scalar tensor.
    """
    per_kpt = F.l1_loss(prediction, target.to(prediction.dtype), reduction="none").sum(-1) * weight
    return (per_kpt.sum(-1) / normalizer).sum() / prediction.shape[0]


def cape_losses(
    similarity_map: Tensor,
    proposals_for_loss: Tensor,
    layer_outputs: Tensor,
    target_keypoints: Tensor,
    target_weight: Tensor,
    target_heatmaps: Tensor,
    heatmap_loss_weight: float = 2.0,
) -> dict[str, Tensor]:
    """All head losses: ``heatmap_loss`` (x heatmap_loss_weight), ``proposal_loss``, ``l1_loss_layer{l}``.

    Args:
        similarity_map: ``[B, K, h, w]``.
        proposals_for_loss: ``[B, K, 2]`` full soft-argmax proposals.
        layer_outputs: ``[L, B, K, 2]`` decoder outputs.
        target_keypoints: ``[B, K, 2]`` normalised (x, y) targets.
        target_weight: ``[B, K]`` combined weight (query visibility x support mask).
        target_heatmaps: ``[B, K, H, W]`` query target heatmaps.
        heatmap_loss_weight: Multiplier of the heatmap loss (2.0 upstream).

    Returns:
        Dict of scalar tensors.
    """
    weight = target_weight.to(layer_outputs.dtype)
    normalizer = keypoint_normalizer(weight)
    losses = {
        "heatmap_loss": similarity_heatmap_loss(similarity_map, target_heatmaps, weight, normalizer)
        * heatmap_loss_weight,
        "proposal_loss": keypoint_l1_loss(proposals_for_loss, target_keypoints, weight, normalizer),
    }
    for idx, output in enumerate(layer_outputs):
        losses[f"l1_loss_layer{idx}"] = keypoint_l1_loss(output, target_keypoints, weight, normalizer)
    return losses
