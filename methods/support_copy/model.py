"""support-copy: predict the support's keypoints at the same place in the query crop.

Both crops are normalised by their own bounding box, so copying normalised
crop coordinates maps the support pose through the support -> query bbox
normalisation. It needs no training and gives every protocol a floor: a
learned method that does not beat it has learned nothing about the query.
"""
from __future__ import annotations

import torch

from cape_bench.method import CapeMethod, Encoded, PairBatch, QueryBatch, SupportBatch


class SupportCopy(CapeMethod):
    support_kinds = frozenset({"keypoints"})
    trainable = False
    uses_query_image = False

    def encode_query(self, query: QueryBatch) -> Encoded:
        return Encoded()

    def encode_support(self, support: SupportBatch) -> Encoded:
        # k shots: the mean position over the shots where the keypoint is visible.
        weights = support.visible.to(support.keypoints.dtype).unsqueeze(-1)
        mean = (support.keypoints * weights).sum(1) / weights.sum(1).clamp(min=1)
        return Encoded(per_keypoint={"keypoints": mean})

    def decode(self, query: Encoded, support: Encoded, pairs: PairBatch) -> torch.Tensor:
        return support.per_keypoint["keypoints"]
