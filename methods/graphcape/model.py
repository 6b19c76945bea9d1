"""GraphCape (Pose Anything, CVPR 2024): support-image keypoint features and a graph decoder.

Query and support crops go through ONE shared SwinV2 backbone. Each support
keypoint's feature is the average of the support map weighted by that
keypoint's target heatmap (UPSTREAM_ARCH §2); the features are averaged over
the shots and multiplied by the product of the shots' heatmap target weights,
then `CapeHead` (``query_proj``, GCN decoder) predicts the query keypoints.
"""
from __future__ import annotations

import torch

from cape_bench.errors import ConfigError
from cape_bench.method import Encoded, SupportBatch
from cape_bench.methods._cape_base import CapeHeadMethod
from cape_bench.nn.support import pool_support_keypoints

__all__ = ["GraphCape"]

# Support crops pooled at a time: the 64x64 upsampled map is [n, C, 64, 64] (96 MB per 8 crops at
# C=768), so a 64-support batch is split rather than held at once. Each crop is pooled on its own.
_POOL_CHUNK = 8


class GraphCape(CapeHeadMethod):
    """GraphCape; config keys: see `methods/graphcape/configs/graphcape_s.py`."""

    method_name = "graphcape"
    support_kinds = frozenset({"image"})
    support_proj_name = "query_proj"

    def encode_support(self, support: SupportBatch) -> Encoded:
        """Pooled support-keypoint features ``[B, K, C]`` and the mask ``[B, K]``.

        The mask is the product over shots of the heatmap target weights (visible
        and inside the heatmap); masked and padded slots have zero features.
        """
        if support.images is None:
            raise ConfigError(f"{self.where}: needs the support images (SupportBatch.images is None)")
        batch, shots, num_kpt = support.keypoints.shape[:3]
        self.check_keypoint_count(num_kpt)
        features = self.backbone(support.images.flatten(0, 1))
        heatmaps, weight = self.keypoint_targets(support.keypoints.flatten(0, 1), support.visible.flatten(0, 1))
        pooled = torch.cat([
            pool_support_keypoints(features[start:start + _POOL_CHUNK], heatmaps[start:start + _POOL_CHUNK])
            for start in range(0, features.shape[0], _POOL_CHUNK)
        ])
        embeddings = pooled.view(batch, shots, num_kpt, -1).mean(dim=1)
        mask = weight.view(batch, shots, num_kpt).prod(dim=1) > 0
        return Encoded(per_keypoint={"embeddings": embeddings * mask[..., None].to(embeddings.dtype), "mask": mask})
